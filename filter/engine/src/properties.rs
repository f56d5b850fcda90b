//! Property tests (the engine's fuzz targets for stored state): bytes in shared
//! data may come from another meshguard version, a corrupted store or anyone with
//! access to it. Each decoder returns a valid state or reports the bytes as
//! unusable (the caller then starts fresh), never panics, and what it accepts
//! survives its own encoding unchanged.

use meshguard_config::breaker::WindowKind;
use proptest::prelude::*;

use crate::analysis::rollout::Record;
use crate::breaker::shared::{acquire, in_flight, release, Slots};
use crate::breaker::state::State;
use crate::ratelimit::table::{decode, encode};
use crate::store::fake::FakeStore;
use crate::store::SharedStore;

fn window() -> impl Strategy<Value = WindowKind> {
    prop_oneof![
        (1u32..1000).prop_map(WindowKind::Calls),
        (1u32..3600).prop_map(WindowKind::Seconds),
    ]
}

/// Bytes that often start like a real record (version byte, plausible length).
fn stored(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..max),
        prop::collection::vec(any::<u8>(), 0..max).prop_map(|mut v| {
            if let Some(b) = v.first_mut() {
                *b = 1;
            }
            v
        }),
    ]
}

/// `base` with up to four bytes overwritten and maybe cut short: a record from a
/// corrupted store, or one another version wrote.
fn damaged(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(move |(flips, cut, truncate)| {
            let mut v = base.clone();
            for (i, b) in flips {
                if !v.is_empty() {
                    let at = i.index(v.len());
                    if let Some(x) = v.get_mut(at) {
                        *x = b;
                    }
                }
            }
            if truncate && !v.is_empty() {
                v.truncate(cut.index(v.len()));
            }
            v
        })
}

fn breaker_record() -> impl Strategy<Value = (WindowKind, Vec<u8>)> {
    (window(), 0u64..50, any::<u64>()).prop_flat_map(|(kind, calls, start)| {
        let mut s = State::new(kind);
        for i in 0..calls {
            s.window
                .record(u8::from(i % 3 == 0), start.saturating_add(i * 1_000_000));
        }
        s.consecutive_failures = u32::try_from(calls).unwrap_or(0);
        damaged(s.encode()).prop_map(move |b| (kind, b))
    })
}

fn rollout_record() -> impl Strategy<Value = (usize, Vec<u8>)> {
    (2usize..6).prop_flat_map(|variants| {
        damaged(Record::new(variants).encode()).prop_map(move |b| (variants, b))
    })
}

/// A real concurrency count: `owners` VMs holding 1, 2, … slots since `at`.
fn real_count(owners: u64, at: u64) -> Vec<u8> {
    let mut store = FakeStore::default();
    for o in 0..owners {
        let s = Slots::new("cc".into());
        s.owner.set(o);
        for _ in 0..=o {
            let _ = acquire(&mut store, &s, u32::MAX, at);
        }
    }
    store
        .data
        .get("cc")
        .map(|(v, _)| v.clone())
        .unwrap_or_default()
}

fn count_record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        stored(300),
        (1u64..5, any::<u64>()).prop_flat_map(|(n, at)| damaged(real_count(n, at))),
    ]
}

proptest! {
    #[test]
    fn a_damaged_breaker_record_is_valid_or_a_fresh_closed_breaker((kind, bytes) in breaker_record(), now in any::<u64>()) {
        let s = State::decode(kind, Some(&bytes));
        prop_assert!(s == State::new(kind) || State::decode(kind, Some(&s.encode())) == s);
        let t = s.window.totals(now);
        prop_assert!(t.failures <= t.calls && t.slow <= t.calls, "{t:?}");
    }

    #[test]
    fn a_damaged_rollout_record_is_valid_or_reported((variants, bytes) in rollout_record()) {
        if let Some(r) = Record::decode(&bytes, variants) {
            prop_assert_eq!(r.variants.len(), variants - 1);
            prop_assert_eq!(Record::decode(&r.encode(), variants), Some(r));
        }
    }

    #[test]
    fn a_breaker_record_is_valid_or_a_fresh_closed_breaker(kind in window(), bytes in stored(2200), now in any::<u64>()) {
        let s = State::decode(kind, Some(&bytes));
        prop_assert!(s == State::new(kind) || State::decode(kind, Some(&s.encode())) == s);
        let t = s.window.totals(now);
        prop_assert!(t.failures <= t.calls && t.slow <= t.calls, "{t:?}");
    }

    #[test]
    fn a_bucket_slot_is_valid_or_empty(bytes in stored(40)) {
        if let Some((fp, tat)) = decode(&bytes) {
            prop_assert_eq!(decode(&encode(fp, tat)), Some((fp, tat)));
            prop_assert_eq!(bytes.len(), 17);
        }
    }

    #[test]
    fn a_rollout_record_is_valid_or_reported(bytes in stored(400), variants in 2usize..6) {
        if let Some(r) = Record::decode(&bytes, variants) {
            prop_assert_eq!(r.variants.len(), variants - 1);
            prop_assert_eq!(Record::decode(&r.encode(), variants), Some(r));
        }
    }

    #[test]
    fn a_concurrency_count_is_valid_or_empty(bytes in count_record(), now in any::<u64>(), owner in any::<u64>()) {
        let mut store = FakeStore::default();
        store.set("cc", &bytes, None).unwrap();
        let before = in_flight(&mut store, "cc", now).unwrap();
        let s = Slots::new("cc".into());
        s.owner.set(owner);
        if let Some(epoch) = acquire(&mut store, &s, u32::MAX, now).unwrap() {
            prop_assert_eq!(in_flight(&mut store, "cc", now).unwrap(), before + 1);
            release(&mut store, &s, epoch, now).unwrap();
        }
        prop_assert_eq!(in_flight(&mut store, "cc", now).unwrap(), before);
    }
}
