use super::*;
use wasm_bindgen_test::wasm_bindgen_test;

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * SEC;

use crate::store::fake::{FakeStore, Racing};

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
    // One slot: every key's candidates are that slot. Each newcomer arrives when
    // the previous key's bucket is full again, and takes the slot.
    let mut store = FakeStore::default();
    let t = table("p", B, 1);
    assert!(matches!(
        charge(&mut store, &t, b"old", T0),
        Charge::Decided {
            overflow: false,
            ..
        }
    ));
    for n in 1..5u64 {
        let at = T0 + n * 3 * SEC;
        match charge(&mut store, &t, format!("new-{n}").as_bytes(), at) {
            Charge::Decided {
                overflow, verdict, ..
            } => assert!(!overflow && verdict.allowed, "newcomer {n}"),
            other => panic!("{other:?}"),
        }
        // Within the same second another newcomer finds the slot in use.
        let c = charge(&mut store, &t, b"late", at);
        assert!(matches!(c, Charge::Decided { overflow: true, .. }), "{c:?}");
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

/// Two workers charge a new key of a one-token bucket at once; how many pass.
fn racing_first_charges(prepared: bool) -> usize {
    racing_first_charges_on(prepared, false)
}

/// [`racing_first_charges`] on a store that creates entries atomically or not.
fn racing_first_charges_on(prepared: bool, atomic: bool) -> usize {
    let one = Bucket {
        burst: 1,
        interval_ns: SEC,
    };
    let t = table("p", one, 1);
    let mut r = Racing::default();
    r.store.atomic = atomic;
    if prepared {
        assert_eq!(prepare(&mut r, &t), Ok(!atomic));
    }
    let slot = slot_key("p", t.fingerprint(b"k"), 0, 1);
    let before = r.get(&slot).unwrap();
    let first = charge(&mut r, &t, b"k", T0);
    r.stale = Some((slot, before));
    let second = charge(&mut r, &t, b"k", T0);
    [first, second].iter().filter(|c| allowed(c)).count()
}

#[wasm_bindgen_test(unsupported = test)]
fn a_table_created_before_traffic_admits_one_token_to_two_racing_workers() {
    // Absent, the slot's first writes are plain: both workers admit one.
    assert_eq!(racing_first_charges(false), 2);
    // Created ahead, the second write's compare-and-swap fails, it re-reads the
    // first one's bucket and is limited.
    assert_eq!(racing_first_charges(true), 1);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_store_that_creates_atomically_needs_no_table_ahead_and_admits_one() {
    // Nothing is created ahead (prepare declines), and still the second
    // worker's create fails and it is limited.
    assert_eq!(racing_first_charges_on(true, true), 1);
    assert_eq!(racing_first_charges_on(false, true), 1);
    let mut store = FakeStore {
        atomic: true,
        ..FakeStore::default()
    };
    assert_eq!(prepare(&mut store, &table("p", B, 10)), Ok(false));
    assert!(store.data.is_empty(), "a slot takes memory only once used");
}

#[wasm_bindgen_test(unsupported = test)]
fn preparing_creates_every_slot_once_and_only_small_tables() {
    let mut store = FakeStore::default();
    let t = table("p", B, 10);
    assert_eq!(prepare(&mut store, &t), Ok(true));
    assert_eq!(
        store.data.len(),
        12,
        "10 slots, the overflow bucket, the mark"
    );
    assert_eq!(store.data["p.3"].0, encode(0, 0).to_vec());
    // A charge keeps the slot count, and its first use counts as claimed.
    let c = charge(&mut store, &t, b"k", T0);
    assert!(matches!(c, Charge::Decided { claimed: true, .. }), "{c:?}");
    assert_eq!(store.data.len(), 12);
    // The next configure reads the mark only.
    let (gets, sets) = (store.gets, store.sets);
    assert_eq!(prepare(&mut store, &t), Ok(false));
    assert_eq!((store.gets - gets, store.sets - sets), (1, 0));
    // A large table is left to be created as keys arrive.
    let big = table("big", B, PREPARE_MAX_KEYS + 1);
    assert_eq!(prepare(&mut store, &big), Ok(false));
    assert_eq!(store.data.len(), 12);
    let edge = table("edge", B, PREPARE_MAX_KEYS);
    let mut other = FakeStore::default();
    assert_eq!(prepare(&mut other, &edge), Ok(true));
    assert_eq!(other.data.len(), PREPARE_MAX_KEYS as usize + 2);
}

/// For each of `victim`'s candidate slots under `secret`, a key whose first
/// candidate is that slot: charged first, they take every slot the victim could use.
fn aimed_keys(secret: [u64; 2], victim: &[u8], max_keys: u32) -> Vec<Vec<u8>> {
    let slot = |k: &[u8], p| slot_key("p", fingerprint(secret, k), p, max_keys);
    let mut targets: Vec<String> = (0..PROBES).map(|p| slot(victim, p)).collect();
    targets.dedup();
    let mut keys = (0u32..100_000).map(|i| format!("attacker-{i}").into_bytes());
    targets
        .iter()
        .filter_map(|t| keys.find(|k| slot(k, 0) == *t))
        .collect()
}

#[wasm_bindgen_test(unsupported = test)]
fn keys_aimed_at_a_clients_slots_miss_them_under_another_secret() {
    // An attacker who knew the secret could find key values whose candidate
    // slots are exactly a victim's, take them all, and push the victim into the
    // shared overflow bucket. (Unkeyed, anyone can compute that offline.)
    let max_keys = 1024;
    let known = [1, 2];
    let aimed = aimed_keys(known, b"victim", max_keys);
    let run = |secret: [u64; 2]| {
        let mut store = FakeStore::default();
        let t = table("p", B, max_keys);
        t.secret.set(secret);
        for k in &aimed {
            charge(&mut store, &t, k, T0);
        }
        charge(&mut store, &t, b"victim", T0)
    };
    assert!(
        matches!(run(known), Charge::Decided { overflow: true, .. }),
        "the attack works when the secret is known"
    );
    // Under secrets the attacker does not know, the same keys land elsewhere.
    let missed = (0..100u64)
        .filter(|i| {
            matches!(
                run([i * 7 + 3, 99]),
                Charge::Decided {
                    overflow: false,
                    ..
                }
            )
        })
        .count();
    assert_eq!(missed, 100, "secrets that kept the victim's bucket");
}

#[wasm_bindgen_test(unsupported = test)]
fn fingerprints_depend_on_the_secret_and_the_key() {
    assert_ne!(fingerprint([1, 2], b"k"), fingerprint([1, 3], b"k"));
    assert_ne!(fingerprint([1, 2], b"k"), fingerprint([2, 2], b"k"));
    assert_ne!(fingerprint([1, 2], b"k"), fingerprint([1, 2], b"l"));
    assert_eq!(fingerprint([1, 2], b"k"), fingerprint([1, 2], b"k"));
}
