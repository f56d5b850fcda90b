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
