//! Fixed-window counters, in Redis or in memory. A request's hits are added to
//! every counter that applies only if none of them would go over (all or nothing),
//! in one step: a Lua script in Redis (atomic there, so any number of servers and
//! clients count exactly), a mutex in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One counter to charge: its key, its limit and its window.
#[derive(Debug, Clone)]
pub struct Charge {
    /// Counter key.
    pub key: String,
    /// Requests per window.
    pub max: u64,
    /// Window length, ms.
    pub window_ms: u64,
}

/// The result for one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// Hits left in the window (after this request, when allowed).
    pub remaining: u64,
    /// Time until the window resets, ms.
    pub reset_ms: u64,
}

/// The charge of all of a request's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Some counter would go over: nothing was added.
    pub over: bool,
    /// Per counter, in the order given.
    pub counted: Vec<Counted>,
}

/// Where the counters live.
pub enum Counters {
    /// Redis (shared by every server).
    Redis(redis::aio::ConnectionManager),
    /// This process only.
    Memory(Mutex<HashMap<String, (u64, Instant)>>),
}

/// KEYS: the counters. ARGV: hits, then per counter its max and its window (ms).
/// Returns `[over, remaining1, reset1, remaining2, reset2, ...]`.
const SCRIPT: &str = r"
local hits = tonumber(ARGV[1])
local over = 0
local values = {}
for i, key in ipairs(KEYS) do
  local v = tonumber(redis.call('GET', key) or '0')
  values[i] = v
  if v + hits > tonumber(ARGV[2 * i]) then over = 1 end
end
local out = {over}
for i, key in ipairs(KEYS) do
  local max = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local v = values[i]
  if over == 0 then
    v = redis.call('INCRBY', key, hits)
    if v == hits then redis.call('PEXPIRE', key, window) end
  end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then ttl = window end
  local left = max - v
  if left < 0 then left = 0 end
  table.insert(out, left)
  table.insert(out, ttl)
end
return out
";

impl Counters {
    /// Charges `hits` to `charges` (none: allowed, nothing counted).
    pub async fn charge(&self, charges: &[Charge], hits: u64) -> Result<Outcome, String> {
        if charges.is_empty() {
            return Ok(Outcome {
                over: false,
                counted: Vec::new(),
            });
        }
        match self {
            Counters::Redis(conn) => {
                let script = redis::Script::new(SCRIPT);
                let mut inv = script.prepare_invoke();
                inv.arg(hits);
                for c in charges {
                    inv.key(&c.key).arg(c.max).arg(c.window_ms);
                }
                let mut conn = conn.clone();
                let out: Vec<i64> = inv
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| format!("redis: {e}"))?;
                let mut it = out.into_iter().map(|n| u64::try_from(n).unwrap_or(0));
                let over = it.next().unwrap_or(0) == 1;
                let mut counted = Vec::new();
                while let (Some(remaining), Some(reset_ms)) = (it.next(), it.next()) {
                    counted.push(Counted {
                        remaining,
                        reset_ms,
                    });
                }
                Ok(Outcome { over, counted })
            }
            Counters::Memory(map) => {
                let mut map = map.lock().map_err(|_| "counters poisoned".to_string())?;
                let now = Instant::now();
                let live = |m: &HashMap<String, (u64, Instant)>, c: &Charge| {
                    m.get(&c.key)
                        .filter(|(_, ends)| *ends > now)
                        .copied()
                        .unwrap_or((0, now + Duration::from_millis(c.window_ms)))
                };
                let over = charges.iter().any(|c| live(&map, c).0 + hits > c.max);
                let mut counted = Vec::new();
                for c in charges {
                    let (mut v, ends) = live(&map, c);
                    if !over {
                        v += hits;
                        map.insert(c.key.clone(), (v, ends));
                    }
                    counted.push(Counted {
                        remaining: c.max.saturating_sub(v),
                        reset_ms: u64::try_from(ends.saturating_duration_since(now).as_millis())
                            .unwrap_or(u64::MAX),
                    });
                }
                Ok(Outcome { over, counted })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(key: &str, max: u64) -> Charge {
        Charge {
            key: key.into(),
            max,
            window_ms: 60_000,
        }
    }

    #[tokio::test]
    async fn in_memory_counters_are_all_or_nothing_and_stop_at_the_limit() {
        let c = Counters::Memory(Mutex::new(HashMap::new()));
        let both = [charge("a", 3), charge("b", 10)];
        for _ in 0..3 {
            assert!(!c.charge(&both, 1).await.unwrap().over);
        }
        let o = c.charge(&both, 1).await.unwrap();
        assert!(o.over);
        assert_eq!(o.counted[1].remaining, 7, "b not charged when a is over");
        let big = c.charge(&[charge("c", 5)], 6).await.unwrap();
        assert!(big.over, "more hits than the limit");
        let o = c.charge(&[charge("c", 5)], 5).await.unwrap();
        assert_eq!((o.over, o.counted[0].remaining), (false, 0));
        assert!(o.counted[0].reset_ms <= 60_000);
    }
}
