//! Where the fleet's rollout records live: a Redis hash per rollout (shared by
//! every replica of the service) or a map in memory (one process, for tests
//! and demos). Both offer the two steps of an optimistic fold: read some
//! fields with the store's clock, then write fields only if the record's
//! version is still the one read.
//!
//! A record is the hash `mgf:<key>` with fields `ver` (the version, bumped by
//! every write), `rec` (the engine's record), `e:<envoy>` (the last batch
//! folded per Envoy) and `by:<variant>` (who decided its last transition).
//! Writing refreshes the hash's time to live.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Reads `ARGV` fields of `KEYS[1]` with the store's clock, in one step.
const READ: &str = r"
local t = redis.call('TIME')
return {t[1], t[2], redis.call('HMGET', KEYS[1], unpack(ARGV))}
";

/// Writes `ARGV[3..]` (field, value pairs) to `KEYS[1]` and bumps its version,
/// only if the version is still `ARGV[1]`; `ARGV[2]` is the time to live, ms
/// (0: none, the record is kept). Returns 1 when written, 0 when another writer
/// came first.
const WRITE: &str = r"
local cur = redis.call('HGET', KEYS[1], 'ver') or '0'
if cur ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'ver', tostring(tonumber(ARGV[1]) + 1), unpack(ARGV, 3))
if ARGV[2] == '0' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
";

/// The fields read, in the order asked, and the store's clock (Unix ns).
pub struct Read {
    pub now_ns: u64,
    pub fields: Vec<Option<Vec<u8>>>,
}

/// A record in memory: its version, fields and when it expires (`None`: never).
pub type Entry = (u64, HashMap<String, Vec<u8>>, Option<Instant>);

fn live(e: &Entry, now: Instant) -> bool {
    e.2.is_none_or(|t| t > now)
}

/// Where records live.
pub enum Store {
    /// Redis: shared by every replica.
    Redis(Box<RedisStore>),
    /// This process only.
    Memory(Mutex<HashMap<String, Entry>>),
}

/// A Redis connection that fails fast while Redis is away and is made again
/// on the next call after any failure (an Envoy's sync waits 200 ms by
/// default and sends its batches again; a call must not hang behind a
/// reconnection).
pub struct RedisStore {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl RedisStore {
    /// A store over `client`, connected on first use.
    pub fn new(client: redis::Client) -> Self {
        RedisStore {
            client,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let mut held = self.conn.lock().await;
        if let Some(c) = held.as_ref() {
            return Ok(c.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(300)))
            .set_response_timeout(Some(Duration::from_millis(500)));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("redis: {e}"))?;
        *held = Some(c.clone());
        Ok(c)
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let mut conn = self.connection().await?;
        match inv.invoke_async(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                // Any failure: the next call connects afresh.
                *self.conn.lock().await = None;
                Err(format!("redis: {e}"))
            }
        }
    }
}

impl Store {
    /// The hash of rollout `key`.
    pub fn hash(key: &str) -> String {
        format!("mgf:{key}")
    }

    /// Reads `fields` of `key` (`ver` first, by convention of the caller).
    pub async fn read(&self, key: &str, fields: &[String]) -> Result<Read, String> {
        match self {
            Store::Redis(redis) => {
                let script = redis::Script::new(READ);
                let mut inv = script.prepare_invoke();
                inv.key(Self::hash(key));
                for f in fields {
                    inv.arg(f);
                }
                let (secs, micros, fields): (u64, u64, Vec<Option<Vec<u8>>>) =
                    redis.invoke(inv).await?;
                Ok(Read {
                    now_ns: secs
                        .saturating_mul(1_000_000_000)
                        .saturating_add(micros.saturating_mul(1_000)),
                    fields,
                })
            }
            Store::Memory(map) => {
                let map = map.lock().map_err(|_| "store poisoned".to_string())?;
                let now = Instant::now();
                let entry = map.get(&Self::hash(key)).filter(|e| live(e, now));
                let fields = fields
                    .iter()
                    .map(|f| match (f.as_str(), entry) {
                        (_, None) => None,
                        ("ver", Some(e)) => Some(e.0.to_string().into_bytes()),
                        (f, Some(e)) => e.1.get(f).cloned(),
                    })
                    .collect();
                Ok(Read {
                    now_ns: wall_ns(),
                    fields,
                })
            }
        }
    }

    /// Writes `pairs` to `key` if its version is still `version`, to expire
    /// `ttl` after (`None`: never); true when written.
    pub async fn write(
        &self,
        key: &str,
        version: u64,
        ttl: Option<Duration>,
        pairs: &[(String, Vec<u8>)],
    ) -> Result<bool, String> {
        let ttl_ms = ttl.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        match self {
            Store::Redis(redis) => {
                let script = redis::Script::new(WRITE);
                let mut inv = script.prepare_invoke();
                inv.key(Self::hash(key)).arg(version).arg(ttl_ms);
                for (f, v) in pairs {
                    inv.arg(f).arg(v.as_slice());
                }
                let written: i64 = redis.invoke(inv).await?;
                Ok(written == 1)
            }
            Store::Memory(map) => {
                let mut map = map.lock().map_err(|_| "store poisoned".to_string())?;
                let now = Instant::now();
                let hash = Self::hash(key);
                let current = map.get(&hash).filter(|e| live(e, now)).map_or(0, |e| e.0);
                if current != version {
                    return Ok(false);
                }
                let entry = map.entry(hash).or_insert_with(|| (0, HashMap::new(), None));
                if !live(entry, now) {
                    entry.1.clear();
                }
                entry.0 = version.saturating_add(1);
                entry.2 = ttl.and_then(|t| now.checked_add(t));
                for (f, v) in pairs {
                    entry.1.insert(f.clone(), v.clone());
                }
                Ok(true)
            }
        }
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
