//! The breaker over the CAS store, and the in-flight counter of the concurrency
//! limit. Every worker reads and writes the same entries, so all see the same
//! transitions.

use meshguard_config::breaker::CompiledBreaker;

use super::machine::{self, Admission, Outcome, Transition};
use super::state::State;
use crate::store::{update, SharedStore, StoreError};

/// Admission at `now` for the breaker stored at `key`.
pub fn admit(
    store: &mut impl SharedStore,
    key: &str,
    policy: &CompiledBreaker,
    now: u64,
) -> Result<(Admission, Option<Transition>), StoreError> {
    update(store, key, |bytes| {
        let mut s = State::decode(policy.window, bytes);
        let (admission, changed, t) = machine::admit(&mut s, policy, now);
        (changed.then(|| s.encode()), (admission, t))
    })
}

/// Records a finished call for the breaker stored at `key`.
pub fn record(
    store: &mut impl SharedStore,
    key: &str,
    policy: &CompiledBreaker,
    outcome: Outcome,
    probe: bool,
    now: u64,
) -> Result<Option<Transition>, StoreError> {
    update(store, key, |bytes| {
        let mut s = State::decode(policy.window, bytes);
        let (changed, t) = machine::record(&mut s, policy, outcome, probe, now);
        (changed.then(|| s.encode()), t)
    })
}

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
