//! The shared store every worker sees (proxy-wasm shared data), as the engine
//! needs it: get with a CAS token, set guarded by that token, and a bounded
//! read-modify-write loop on top.

/// Attempts at a compare-and-swap before giving up.
pub const MAX_CAS_ATTEMPTS: u32 = 8;

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Someone else wrote the entry since it was read (or retries ran out on that).
    CasMismatch,
    /// Any other host failure.
    Host(String),
}

/// A key-value store with compare-and-swap (proxy-wasm shared data).
pub trait SharedStore {
    /// The value and its CAS token; `(None, None)` when absent.
    fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError>;
    /// Writes `value` if the entry's CAS token still equals `cas` (`None`: unconditional).
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
    /// True when a write with the token read from an absent entry fails once
    /// another worker has created it (create-if-absent). Proxy-wasm shared data
    /// has no such token (an absent entry reads `None`, and a write with `None`
    /// is unconditional), which is why rate-limit tables are created ahead
    /// ([`crate::ratelimit::table::prepare`]); a store that creates atomically
    /// needs no table created ahead.
    fn creates_atomically(&self) -> bool {
        false
    }
}

/// Reads `key`, lets `f` compute `(new value or None to leave it, result)`, and
/// writes with compare-and-swap, retrying on a mismatch up to
/// [`MAX_CAS_ATTEMPTS`] times. `f` may run several times; it must be pure.
pub fn update<T>(
    store: &mut impl SharedStore,
    key: &str,
    mut f: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> Result<T, StoreError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = store.get(key)?;
        let (new, result) = f(value.as_deref());
        let Some(new) = new else { return Ok(result) };
        match store.set(key, &new, cas) {
            Ok(()) => return Ok(result),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::CasMismatch)
}

#[cfg(test)]
pub mod fake {
    //! An in-memory store with proxy-wasm's CAS semantics and injectable conflicts.
    use std::collections::HashMap;

    use super::*;

    /// The fake.
    #[derive(Default)]
    pub struct FakeStore {
        /// Entries: value and CAS token.
        pub data: HashMap<String, (Vec<u8>, u32)>,
        /// Number of upcoming `set` calls that another worker beats.
        pub conflicts: u32,
        /// Every `get` fails.
        pub fail_gets: bool,
        /// Calls made.
        pub gets: u32,
        /// Calls made.
        pub sets: u32,
        /// Creates entries atomically, as the native build's store does: an
        /// absent entry reads token 0, and a write with 0 fails once it exists.
        pub atomic: bool,
    }

    impl SharedStore for FakeStore {
        fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            self.gets += 1;
            if self.fail_gets {
                return Err(StoreError::Host("InternalFailure".into()));
            }
            Ok(match self.data.get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, self.atomic.then_some(0)),
            })
        }

        fn creates_atomically(&self) -> bool {
            self.atomic
        }

        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.sets += 1;
            if self.conflicts > 0 {
                self.conflicts -= 1;
                let e = self.data.entry(key.to_string()).or_insert((Vec::new(), 0));
                e.1 += 1;
                return Err(StoreError::CasMismatch);
            }
            match (self.data.get_mut(key), cas) {
                (Some(e), Some(c)) if e.1 != c => Err(StoreError::CasMismatch),
                (Some(e), _) => {
                    e.0 = value.to_vec();
                    e.1 += 1;
                    Ok(())
                }
                (None, _) => {
                    self.data.insert(key.to_string(), (value.to_vec(), 1));
                    Ok(())
                }
            }
        }
    }

    /// What a `get` returns.
    pub type Read = (Option<Vec<u8>>, Option<u32>);

    /// Two workers racing on one key: the next read of `stale`'s key returns what
    /// it held before (set it to a read taken before the first worker's write), so
    /// the second worker acts on the value the first one already replaced.
    #[derive(Default)]
    pub struct Racing {
        /// The store both workers share.
        pub store: FakeStore,
        /// A key and the read the next `get` of it returns instead of the store's.
        pub stale: Option<(String, Read)>,
    }

    impl SharedStore for Racing {
        fn get(&mut self, key: &str) -> Result<Read, StoreError> {
            match self.stale.take() {
                Some((k, v)) if k == key => Ok(v),
                other => {
                    self.stale = other;
                    self.store.get(key)
                }
            }
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.store.set(key, value, cas)
        }
        fn creates_atomically(&self) -> bool {
            self.store.creates_atomically()
        }
    }
}
