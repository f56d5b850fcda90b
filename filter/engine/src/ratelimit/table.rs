//! The bounded table of buckets, shared by every worker through a CAS store.
//!
//! A policy owns `maxKeys` slots. A key hashes to a 64-bit fingerprint and to four
//! candidate slots; its bucket lives in the first candidate that holds its
//! fingerprint, else it takes the first candidate that is empty or holds a *full*
//! bucket of another key (forgetting a full bucket hands nobody extra tokens, so a
//! flood of new keys can never reset a client that is being limited). When all
//! four candidates hold partly used buckets of other keys, the key is charged to
//! the policy's single overflow bucket: new clients beyond capacity are limited
//! together, never waved through.
//!
//! Every write is a compare-and-swap; a mismatch re-reads and retries, at most
//! [`MAX_CAS_ATTEMPTS`] times, after which the caller applies the policy's failure
//! mode. A rejection writes nothing (unless it repairs a bucket left far in the
//! future by a backwards clock step).

use std::cell::Cell;
use std::hash::Hasher;

use siphasher::sip::SipHasher13;

use super::gcra::{Bucket, Verdict};
use crate::hash::mix64;
use crate::le::u64_at;

use crate::store::{SharedStore, StoreError, MAX_CAS_ATTEMPTS};

/// Candidate slots per key.
pub const PROBES: u32 = 4;
const VERSION: u8 = 1;

/// One policy's table: where its slots live, its bucket, and how many keys it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Shared-data key prefix of the slots.
    pub prefix: String,
    /// The bucket every key gets.
    pub bucket: Bucket,
    /// Slots (keys tracked at once).
    pub max_keys: u32,
    /// The fingerprint key, one per plugin, shared by every worker (see
    /// [`fingerprint`]).
    pub secret: Cell<[u64; 2]>,
}

impl Table {
    /// The fingerprint of `key` under this table's secret.
    pub fn fingerprint(&self, key: &[u8]) -> u64 {
        fingerprint(self.secret.get(), key)
    }
}

/// How many tokens a charge gives back and may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRequest {
    /// Unused tokens leased earlier, given back first.
    pub refund: u64,
    /// Most tokens to take (`cost`: only the request's own).
    pub max: u64,
    /// Tokens the request itself costs (at least 1).
    pub cost: u64,
}

/// The result of charging one request to a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    /// The bucket decided.
    Decided {
        /// The bucket's verdict.
        verdict: Verdict,
        /// The overflow bucket was used (all candidate slots busy).
        overflow: bool,
        /// Compare-and-swap mismatches on the way.
        cas_retries: u32,
        /// The key took a slot that no key had held before.
        claimed: bool,
    },
    /// The store could not be read or updated in [`MAX_CAS_ATTEMPTS`] tries.
    StoreFailed(StoreError),
}

/// Encodes a slot: version, fingerprint, tat.
pub fn encode(fingerprint: u64, tat: u64) -> [u8; 17] {
    let mut out = [0u8; 17];
    out[0] = VERSION;
    out[1..9].copy_from_slice(&fingerprint.to_le_bytes());
    out[9..17].copy_from_slice(&tat.to_le_bytes());
    out
}

/// Decodes a slot; anything malformed (another version, a truncated value) reads
/// as empty, so a corrupt entry is simply reused.
pub fn decode(value: &[u8]) -> Option<(u64, u64)> {
    let (version, rest) = value.split_first()?;
    if *version != VERSION || rest.len() != 16 {
        return None;
    }
    Some((u64_at(rest, 0)?, u64_at(rest, 8)?))
}

/// The fingerprint of a key (never 0: 0 marks the overflow bucket): SipHash-1-3
/// keyed with a random secret that the plugin's first VM creates in shared data
/// and every worker reads (`Runtime::prepare`). A fingerprint and the four slots
/// it picks are thus unknown to clients: nobody can pick a key value that lands
/// on another client's bucket (an unkeyed hash lets a client that controls a key
/// header aim a collision). Two keys share a bucket only by a 2^-64 accident.
pub fn fingerprint(secret: [u64; 2], key: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(secret[0], secret[1]);
    h.write(key);
    h.finish().max(1)
}

/// Tables up to this many slots are created whole at configure time (see
/// [`prepare`]); larger ones are created slot by slot as keys arrive.
pub const PREPARE_MAX_KEYS: u32 = 65_536;

/// Creates every slot of `table` (and its overflow bucket) empty, once per
/// table: a later configure finds the `.ready` mark and reads nothing else.
///
/// Shared data has no create-if-absent: a slot that does not exist yet is written
/// without compare-and-swap, so two workers creating the same key's slot at once
/// would each admit a request from one token. With every slot created before
/// traffic, every charge is a compare-and-swap and that race is gone. (Only
/// while a new policy's table is being created can a worker that already serves
/// it race the one creating it, once per slot.) Tables above
/// [`PREPARE_MAX_KEYS`] are not created ahead, to keep a configure cheap; there a
/// slot's first use is the one time two workers can each admit one request. A
/// store that creates entries atomically ([`SharedStore::creates_atomically`],
/// the native build's) has no such race: nothing is created ahead, and a slot
/// takes memory only once a key uses it.
pub fn prepare(store: &mut impl SharedStore, table: &Table) -> Result<bool, StoreError> {
    let ready = format!("{}.ready", table.prefix);
    if table.max_keys > PREPARE_MAX_KEYS
        || store.creates_atomically()
        || store.get(&ready)?.0.is_some()
    {
        return Ok(false);
    }
    let empty = encode(0, 0);
    let slots = (0..table.max_keys).map(|s| format!("{}.{s}", table.prefix));
    for key in slots.chain([format!("{}.overflow", table.prefix)]) {
        if store.get(&key)?.0.is_none() {
            store.set(&key, &empty, None)?;
        }
    }
    store.set(&ready, &[VERSION], None)?;
    Ok(true)
}

/// The store key of candidate `probe` of `fingerprint` under `prefix`.
#[cfg(test)]
pub fn slot_key(prefix: &str, fingerprint: u64, probe: u32, max_keys: u32) -> String {
    key_of(prefix, slot(fingerprint, probe, max_keys))
}

/// The slot of candidate `probe` of `fingerprint` in a table of `max_keys`.
fn slot(fingerprint: u64, probe: u32, max_keys: u32) -> u64 {
    mix64(fingerprint ^ u64::from(probe).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        % u64::from(max_keys.max(1))
}

/// `prefix.slot`, written without `format!`: its formatting machinery was a
/// fifth of a native rate-limit charge (callgrind, bench `all`).
fn key_of(prefix: &str, slot: u64) -> String {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(slot);
    let mut key = String::with_capacity(prefix.len() + 1 + digits.len());
    key.push_str(prefix);
    key.push('.');
    key.push_str(digits);
    key
}

struct Target {
    key: String,
    tat: Option<u64>,
    cas: Option<u32>,
    fingerprint: u64,
    overflow: bool,
    fresh: bool,
}

fn find(
    store: &mut impl SharedStore,
    table: &Table,
    fp: u64,
    now: u64,
) -> Result<Target, StoreError> {
    let (prefix, max_keys) = (table.prefix.as_str(), table.max_keys);
    let mut free: Option<Target> = None;
    // Slots are below `max_keys`, so `u64::MAX` marks "none yet".
    let mut seen = [u64::MAX; PROBES as usize];
    for probe in 0..PROBES {
        let slot = slot(fp, probe, max_keys);
        if seen.contains(&slot) {
            continue; // tiny tables: candidates may coincide
        }
        if let Some(s) = seen.get_mut(probe as usize) {
            *s = slot;
        }
        let key = key_of(prefix, slot);
        let (value, cas) = store.get(&key)?;
        let decoded = value.as_deref().and_then(decode);
        match decoded {
            Some((f, tat)) if f == fp => {
                return Ok(Target {
                    key,
                    tat: Some(tat),
                    cas,
                    fingerprint: fp,
                    overflow: false,
                    fresh: false,
                })
            }
            Some((_, tat)) if !Bucket::is_full(tat, now) => {}
            _ => {
                if free.is_none() {
                    free = Some(Target {
                        key,
                        tat: None,
                        cas,
                        fingerprint: fp,
                        overflow: false,
                        fresh: value.is_none() || decoded.is_some_and(|(f, _)| f == 0),
                    });
                }
            }
        }
    }
    if let Some(t) = free {
        return Ok(t);
    }
    let key = format!("{prefix}.overflow");
    let (value, cas) = store.get(&key)?;
    let tat = value.as_deref().and_then(decode).map(|(_, tat)| tat);
    Ok(Target {
        key,
        tat,
        cas,
        fingerprint: 0,
        overflow: true,
        fresh: false,
    })
}

/// Charges one request with key `key` to `table` at `now` (what a lease-less
/// charge is; the request path goes through [`super::lease::charge_leased`]).
#[cfg(test)]
pub fn charge(store: &mut impl SharedStore, table: &Table, key: &[u8], now: u64) -> Charge {
    const ONE: LeaseRequest = LeaseRequest {
        refund: 0,
        max: 1,
        cost: 1,
    };
    charge_lease(store, table, table.fingerprint(key), now, ONE)
}

/// Like [`charge`] for the key with fingerprint `fp`, first giving back
/// `lease.refund` tokens the worker leased earlier and did not use, and taking up to
/// `lease.max` tokens (see [`super::gcra::lease_size`]); the overflow bucket is
/// never leased from.
pub fn charge_lease(
    store: &mut impl SharedStore,
    table: &Table,
    fp: u64,
    now: u64,
    lease: LeaseRequest,
) -> Charge {
    let LeaseRequest {
        refund,
        max: max_lease,
        ..
    } = lease;
    let bucket = &table.bucket;
    let mut retries = 0;
    let mut last = StoreError::CasMismatch;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let target = match find(store, table, fp, now) {
            Ok(t) => t,
            Err(e) => return Charge::StoreFailed(e),
        };
        // A fresh slot is created with a plain write (shared data has no
        // create-if-absent), so two workers creating it at once both succeed: its
        // first charge takes the request's own cost only, which bounds that race
        // to one request's cost per worker; leasing starts with the key's next
        // charge.
        let (refund, max_lease) = match (target.overflow, target.tat) {
            (true, _) | (false, None) => (0, lease.cost),
            (false, Some(_)) => (refund, max_lease),
        };
        let verdict = bucket.take_up_to(target.tat, now, refund, lease.cost, max_lease);
        let Some(new_tat) = verdict.new_tat else {
            return Charge::Decided {
                verdict,
                overflow: target.overflow,
                cas_retries: retries,
                claimed: false,
            };
        };
        match store.set(
            &target.key,
            &encode(target.fingerprint, new_tat),
            target.cas,
        ) {
            Ok(()) => {
                return Charge::Decided {
                    verdict,
                    overflow: target.overflow,
                    cas_retries: retries,
                    claimed: target.fresh,
                }
            }
            Err(StoreError::CasMismatch) => {
                retries += 1;
                last = StoreError::CasMismatch;
            }
            Err(e) => return Charge::StoreFailed(e),
        }
    }
    Charge::StoreFailed(last)
}

/// A table for tests: `prefix`, `bucket`, `max_keys`.
#[cfg(test)]
pub fn table(prefix: &str, bucket: impl std::borrow::Borrow<Bucket>, max_keys: u32) -> Table {
    Table {
        prefix: prefix.to_string(),
        bucket: *bucket.borrow(),
        max_keys,
        secret: Cell::new([0x5eed, 0x7e57]),
    }
}

#[cfg(test)]
mod tests;
