//! The in-flight counter of the concurrency limit, in the CAS store. (The breaker
//! state itself goes through each worker's [`super::local::Local`].)

use crate::store::{update, SharedStore, StoreError};

fn count(bytes: Option<&[u8]>) -> u32 {
    bytes
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Takes an in-flight slot if fewer than `max` are taken. `Ok(false)`: full.
pub fn acquire(store: &mut impl SharedStore, key: &str, max: u32) -> Result<bool, StoreError> {
    update(store, key, |bytes| {
        let n = count(bytes);
        if n >= max {
            (None, false)
        } else {
            (Some((n + 1).to_le_bytes().to_vec()), true)
        }
    })
}

/// Creates the in-flight count at 0 when it does not exist yet. Shared data has no
/// create-if-absent: two workers taking the first slots of an absent count both
/// write without compare-and-swap, and one slot is lost (a third request would be
/// admitted over `maxConcurrent`). Created once, at configure time, before traffic,
/// every later write is a compare-and-swap.
pub fn prepare(store: &mut impl SharedStore, key: &str) -> Result<(), StoreError> {
    if store.get(key)?.0.is_none() {
        store.set(key, &0u32.to_le_bytes(), None)?;
    }
    Ok(())
}

/// Gives an in-flight slot back (never below zero).
pub fn release(store: &mut impl SharedStore, key: &str) -> Result<(), StoreError> {
    update(store, key, |bytes| {
        (
            Some(count(bytes).saturating_sub(1).to_le_bytes().to_vec()),
            (),
        )
    })
}

/// The number of requests in flight.
pub fn in_flight(store: &mut impl SharedStore, key: &str) -> Result<u32, StoreError> {
    Ok(count(store.get(key)?.0.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fake::FakeStore;
    use wasm_bindgen_test::wasm_bindgen_test;

    /// Two workers: the next read of the second returns what the key held before
    /// the first one's write landed (both read, then both write).
    struct Racing {
        store: FakeStore,
        stale: Option<(Option<Vec<u8>>, Option<u32>)>,
    }

    impl SharedStore for Racing {
        fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            match self.stale.take() {
                Some(s) => Ok(s),
                None => self.store.get(key),
            }
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.store.set(key, value, cas)
        }
    }

    fn two_racing_first_slots(prepared: bool) -> u32 {
        let mut r = Racing {
            store: FakeStore::default(),
            stale: None,
        };
        if prepared {
            prepare(&mut r, "cc").unwrap();
        }
        let before = r.get("cc").unwrap();
        assert!(acquire(&mut r, "cc", 2).unwrap(), "first worker");
        r.stale = Some(before);
        assert!(acquire(&mut r, "cc", 2).unwrap(), "second worker");
        in_flight(&mut r, "cc").unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_count_created_before_traffic_counts_two_racing_first_requests() {
        // Absent, both first writes are unconditional: one slot is lost.
        assert_eq!(two_racing_first_slots(false), 1);
        // Prepared, the second write's compare-and-swap fails and it retries.
        assert_eq!(two_racing_first_slots(true), 2);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn preparing_keeps_an_existing_count() {
        let mut s = FakeStore::default();
        assert!(acquire(&mut s, "cc", 5).unwrap());
        prepare(&mut s, "cc").unwrap();
        assert_eq!(
            in_flight(&mut s, "cc").unwrap(),
            1,
            "a reload keeps requests in flight"
        );
    }
}
