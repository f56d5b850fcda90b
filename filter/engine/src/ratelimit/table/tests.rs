use super::*;
use wasm_bindgen_test::wasm_bindgen_test;

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * SEC;

use crate::store::fake::FakeStore;

fn allowed(c: &Charge) -> bool {
    matches!(c, Charge::Decided { verdict, .. } if verdict.allowed)
}

const B: Bucket = Bucket {
    burst: 3,
    interval_ns: SEC,
};

#[wasm_bindgen_test(unsupported = test)]
fn slot_values_round_trip_and_garbage_reads_as_empty() {
    assert_eq!(decode(&encode(42, T0)), Some((42, T0)));
    assert_eq!(decode(&[]), None);
    assert_eq!(decode(&[2; 17]), None);
    assert_eq!(decode(&encode(1, 2)[..16]), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn workers_sharing_a_store_share_one_bucket() {
    let mut store = FakeStore::default();
    let ok = (0..10)
        .filter(|_| allowed(&charge(&mut store, &table("p", B, 100), b"client", T0)))
        .count();
    assert_eq!(ok, 3);
    // A rejection writes nothing.
    let sets = store.sets;
    assert!(!allowed(&charge(
        &mut store,
        &table("p", B, 100),
        b"client",
        T0
    )));
    assert_eq!(store.sets, sets);
}

#[wasm_bindgen_test(unsupported = test)]
fn two_keys_have_independent_budgets() {
    let mut store = FakeStore::default();
    for _ in 0..3 {
        assert!(allowed(&charge(&mut store, &table("p", B, 100), b"a", T0)));
    }
    assert!(!allowed(&charge(&mut store, &table("p", B, 100), b"a", T0)));
    assert!(allowed(&charge(&mut store, &table("p", B, 100), b"b", T0)));
}

#[wasm_bindgen_test(unsupported = test)]
fn cas_mismatch_is_retried_and_counted() {
    let mut store = FakeStore {
        conflicts: 3,
        ..FakeStore::default()
    };
    match charge(&mut store, &table("p", B, 100), b"k", T0) {
        Charge::Decided {
            verdict,
            cas_retries,
            ..
        } => {
            assert!(verdict.allowed);
            assert_eq!(cas_retries, 3);
        }
        other => panic!("{other:?}"),
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn exhausted_cas_retries_report_a_store_failure() {
    let mut store = FakeStore {
        conflicts: MAX_CAS_ATTEMPTS,
        ..FakeStore::default()
    };
    assert_eq!(
        charge(&mut store, &table("p", B, 100), b"k", T0),
        Charge::StoreFailed(StoreError::CasMismatch)
    );
    assert_eq!(store.sets, MAX_CAS_ATTEMPTS);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_host_error_reports_a_store_failure() {
    let mut store = FakeStore {
        fail_gets: true,
        ..FakeStore::default()
    };
    assert!(matches!(
        charge(&mut store, &table("p", B, 100), b"k", T0),
        Charge::StoreFailed(StoreError::Host(_))
    ));
}

#[wasm_bindgen_test(unsupported = test)]
fn the_table_never_holds_more_than_max_keys_entries_plus_overflow() {
    let mut store = FakeStore::default();
    for i in 0..5_000u32 {
        charge(
            &mut store,
            &table("p", B, 64),
            format!("client-{i}").as_bytes(),
            T0,
        );
    }
    assert!(store.data.len() <= 65, "{}", store.data.len());
}

#[wasm_bindgen_test(unsupported = test)]
fn churning_new_keys_cannot_reset_a_limited_client() {
    let mut store = FakeStore::default();
    let max_keys = 16;
    for _ in 0..3 {
        assert!(allowed(&charge(
            &mut store,
            &table("p", B, max_keys),
            b"victim-is-limited",
            T0
        )));
    }
    // 10,000 fresh keys arrive at the same instant (table far over capacity)...
    for i in 0..10_000u32 {
        charge(
            &mut store,
            &table("p", B, max_keys),
            format!("flood-{i}").as_bytes(),
            T0,
        );
    }
    // ...and the limited client is still limited: its partly used bucket was kept.
    assert!(!allowed(&charge(
        &mut store,
        &table("p", B, max_keys),
        b"victim-is-limited",
        T0
    )));
}

#[wasm_bindgen_test(unsupported = test)]
fn new_keys_past_capacity_share_the_overflow_bucket() {
    let mut store = FakeStore::default();
    let max_keys = 4;
    let mut overflow_passed = 0;
    let mut charge_one = |store: &mut FakeStore, key: String| {
        let c = charge(store, &table("p", B, max_keys), key.as_bytes(), T0);
        if matches!(c, Charge::Decided { overflow: true, .. }) && allowed(&c) {
            overflow_passed += 1;
        }
        c
    };
    // Fill every slot with partly used buckets (some fillers may already spill).
    let slots = |s: &FakeStore| s.data.keys().filter(|k| !k.ends_with("overflow")).count();
    let mut i = 0u32;
    while slots(&store) < 4 {
        charge_one(&mut store, format!("fill-{i}"));
        i += 1;
    }
    // Newcomers all go to the overflow bucket, which admits `burst` in total.
    for n in 0..20u32 {
        let c = charge_one(&mut store, format!("new-{n}"));
        assert!(matches!(c, Charge::Decided { overflow: true, .. }), "{c:?}");
    }
    assert_eq!(overflow_passed, 3);
}

#[wasm_bindgen_test(unsupported = test)]
fn full_buckets_of_idle_keys_are_reused() {
    let mut store = FakeStore::default();
    let max_keys = 4;
    for i in 0..4u32 {
        charge(
            &mut store,
            &table("p", B, max_keys),
            format!("old-{i}").as_bytes(),
            T0,
        );
    }
    // Three seconds later all old buckets are full again: newcomers take slots.
    let later = T0 + 3 * SEC;
    for n in 0..4u32 {
        match charge(
            &mut store,
            &table("p", B, max_keys),
            format!("new-{n}").as_bytes(),
            later,
        ) {
            Charge::Decided {
                overflow, verdict, ..
            } => assert!(!overflow && verdict.allowed),
            other => panic!("{other:?}"),
        }
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_returning_key_is_found_with_one_read() {
    let mut store = FakeStore::default();
    charge(&mut store, &table("p", B, 1000), b"k", T0);
    let gets = store.gets;
    charge(&mut store, &table("p", B, 1000), b"k", T0);
    assert_eq!(store.gets - gets, 1);
}
