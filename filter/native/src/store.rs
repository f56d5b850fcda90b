//! The store every worker thread of this Envoy process shares: the native build's
//! stand-in for proxy-wasm shared data, with the same compare-and-swap semantics
//! (a value and a token; a write with a token that is no longer current fails).
//!
//! The engine's buckets, breakers, analysis counts and concurrency slots go
//! through it exactly as they go through shared data in the Wasm build, so both
//! builds decide the same way. A worker holds a shard's lock for one copy in or
//! out, never across a decision, so a charge costs a lock and a copy where the Wasm
//! build pays a host call into Envoy's own locked map. The state lives as long as
//! the process (Envoy keeps the module loaded: `do_not_close`), so a
//! configuration reload keeps it, as shared data survives a Wasm reload.

use std::hash::BuildHasher;
use std::sync::{LazyLock, Mutex, MutexGuard};

use hashbrown::{DefaultHashBuilder, HashTable};

/// Shards: a worker's lock on one key does not hold up other keys.
const SHARDS: usize = 16;

/// An entry: the value and the token of its last write (never 0).
type Entry = (Vec<u8>, u32);

/// One shard's entries, by key.
type Map = HashTable<(String, Entry)>;

/// The store: each key is hashed once per call (foldhash, seeded per process),
/// and that hash picks the shard and finds the entry in it.
struct Shards {
    hasher: DefaultHashBuilder,
    maps: [Mutex<Map>; SHARDS],
}

static STORE: LazyLock<Shards> = LazyLock::new(|| Shards {
    hasher: DefaultHashBuilder::default(),
    maps: std::array::from_fn(|_| Mutex::new(HashTable::new())),
});

/// `key`'s hash and its shard, locked. The shard comes from bits 32–35 of the
/// hash: the table inside uses the low bits for the bucket and the top seven
/// for its tags, so every entry of a shard sharing bits 32–35 costs it nothing.
fn shard(key: &str) -> (u64, MutexGuard<'static, Map>) {
    let store = &*STORE;
    let hash = store.hasher.hash_one(key);
    let i = ((hash >> 32) as usize) % SHARDS;
    // A panic while a shard was held (caught at the hook) leaves the map itself
    // whole: every write below is one insert or one assignment.
    #[allow(clippy::indexing_slicing)] // `i` is reduced modulo the array's length
    let map = &store.maps[i];
    (
        hash,
        map.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

/// The token of an absent entry: a write with it creates the entry only if it
/// is still absent (written entries' tokens are never 0).
pub const ABSENT: u32 = 0;

/// The value of `key` and its token; `(None, Some(ABSENT))` when absent.
pub fn get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    let (hash, map) = shard(key);
    match map.find(hash, |(k, _)| k == key) {
        Some((_, (v, cas))) => (Some(v.clone()), Some(*cas)),
        None => (None, Some(ABSENT)),
    }
}

/// Writes `value` when `cas` is `None` or still the entry's token; an absent
/// entry is written by any `cas` (as proxy-wasm's shared data does), and
/// [`ABSENT`] writes only an absent one, so two workers creating the same
/// entry at once cannot both succeed. False on a mismatch.
pub fn set(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    let (hash, mut map) = shard(key);
    match (map.find_mut(hash, |(k, _)| k == key), cas) {
        (Some((_, e)), Some(c)) if e.1 != c => false,
        (Some((_, e)), _) => {
            e.0.clear();
            e.0.extend_from_slice(value);
            e.1 = e.1.wrapping_add(1).max(1);
            true
        }
        (None, _) => {
            let hasher = &STORE.hasher;
            map.insert_unique(hash, (key.to_owned(), (value.to_vec(), 1)), |(k, _)| {
                hasher.hash_one(k.as_str())
            });
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_with_a_stale_token_fails_and_a_fresh_one_succeeds() {
        let key = "test.store.cas";
        assert_eq!(get(key), (None, Some(ABSENT)));
        assert!(set(key, b"a", None));
        let (v, cas) = get(key);
        assert_eq!(v.as_deref(), Some(&b"a"[..]));
        assert!(set(key, b"b", cas));
        assert!(
            !set(key, b"c", cas),
            "the token moved on with the last write"
        );
        assert_eq!(get(key).0.as_deref(), Some(&b"b"[..]));
    }

    #[test]
    fn threads_incrementing_with_compare_and_swap_lose_no_update() {
        let key = "test.store.threads";
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        // Bounded: a store that never lets a write through
                        // fails the test instead of hanging it.
                        let written = (0..100_000).any(|_| {
                            let (v, cas) = get(key);
                            let n =
                                v.map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])));
                            set(key, &(n + 1).to_le_bytes(), cas)
                        });
                        assert!(written, "no write got through");
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        let (v, _) = get(key);
        assert_eq!(
            v.map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4]))),
            Some(4000),
            "not created ahead: the first writes race to create it, and one wins"
        );
    }

    #[test]
    fn only_one_of_two_writers_creates_an_absent_entry() {
        let key = "test.store.create";
        let (none, token) = get(key);
        assert_eq!((none, token), (None, Some(ABSENT)));
        assert!(set(key, b"first", token));
        assert!(!set(key, b"second", token), "the entry exists now");
        assert_eq!(get(key).0.as_deref(), Some(&b"first"[..]));
        // An unconditional write still overwrites.
        assert!(set(key, b"third", None));
        assert_eq!(get(key).0.as_deref(), Some(&b"third"[..]));
    }
}
