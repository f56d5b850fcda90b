use super::*;
use crate::ratelimit::gcra::Bucket;
use crate::ratelimit::table::{charge, table};
use crate::store::fake::FakeStore;
use wasm_bindgen_test::wasm_bindgen_test;

const US: u64 = 1_000;
const MS: u64 = 1_000 * US;
const SEC: u64 = 1_000 * MS;
const T0: u64 = 1_700_000_000 * SEC;

fn allowed(c: &Charge) -> bool {
    matches!(c, Charge::Decided { verdict, .. } if verdict.allowed)
}

fn remaining(c: &Charge) -> u64 {
    match c {
        Charge::Decided { verdict, .. } => verdict.remaining,
        Charge::StoreFailed(_) => u64::MAX,
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_bucket_near_empty_is_charged_exactly_without_leases() {
    let b = Bucket {
        burst: 100,
        interval_ns: SEC,
    };
    let (mut store, mut leases) = (FakeStore::default(), Leases::default());
    let ok = (0..150)
        .filter(|_| {
            allowed(&charge_leased(
                &mut leases,
                &mut store,
                &table("p", b, 16),
                b"k",
                T0,
            ))
        })
        .count();
    assert_eq!(ok, 100);
    assert_eq!(store.sets, 100, "every admission wrote the shared bucket");
}

#[wasm_bindgen_test(unsupported = test)]
fn a_full_bucket_leases_tokens_the_worker_then_spends_without_shared_data() {
    let b = Bucket {
        burst: 1_000_000,
        interval_ns: US,
    };
    let (mut store, mut leases) = (FakeStore::default(), Leases::default());
    // The key's first charge creates its slot with the request's token alone.
    let created = charge_leased(&mut leases, &mut store, &table("p", b, 16), b"k", T0);
    assert_eq!(remaining(&created), 999_999);
    assert_eq!(
        leases.held(table("p", b, 16).fingerprint(b"k")),
        0,
        "no lease on a fresh slot"
    );
    let first = charge_leased(&mut leases, &mut store, &table("p", b, 16), b"k", T0);
    assert_eq!(
        remaining(&first),
        999_998,
        "the leased tokens still count as the client's"
    );
    assert_eq!(
        leases.held(table("p", b, 16).fingerprint(b"k")),
        MAX_LEASE - 1
    );
    let (gets, sets) = (store.gets, store.sets);
    for i in 0..MAX_LEASE - 1 {
        let c = charge_leased(&mut leases, &mut store, &table("p", b, 16), b"k", T0 + i);
        assert!(allowed(&c));
        assert_eq!(remaining(&c), 999_998 - i - 1);
    }
    assert_eq!(
        (store.gets, store.sets),
        (gets, sets),
        "no shared data touched"
    );
    charge_leased(&mut leases, &mut store, &table("p", b, 16), b"k", T0 + 20);
    assert_eq!(store.sets, sets + 1);
}

#[wasm_bindgen_test(unsupported = test)]
fn tokens_left_in_an_ended_lease_are_given_back() {
    let b = Bucket {
        burst: 10_000,
        interval_ns: SEC, // no refill during the test
    };
    let (mut store, mut leases) = (FakeStore::default(), Leases::default());
    for i in 0..5 {
        charge_leased(&mut leases, &mut store, &table("p", b, 16), b"k", T0 + i);
    }
    // 5 requests used 5 of the 16 taken; 11 go back with the next charge.
    charge_leased(
        &mut leases,
        &mut store,
        &table("p", b, 16),
        b"k",
        T0 + 2 * MS,
    );
    let mut exact = FakeStore::default();
    for _ in 0..6 {
        charge(&mut exact, &table("p", b, 16), b"k", T0);
    }
    // One more exact charge shows what each shared bucket holds.
    let shared = |s: &mut FakeStore| {
        remaining(&charge_lease(
            s,
            &table("p", b, 16),
            table("p", b, 16).fingerprint(b"k"),
            T0 + 2 * MS,
            LeaseRequest {
                refund: 0,
                max: 1,
                cost: 1,
            },
        ))
    };
    let held = leases.held(table("p", b, 16).fingerprint(b"k"));
    assert_eq!(held, MAX_LEASE - 1, "a new lease");
    assert_eq!(shared(&mut store) + held, shared(&mut exact));
}

/// Admitted requests over `duration` from `workers` workers taking turns, one
/// request every `gap` ns: (with leases, exact).
fn admitted(b: &Bucket, workers: usize, gap: u64, duration: u64) -> (usize, usize, u32) {
    let mut store = FakeStore::default();
    let mut exact = FakeStore::default();
    let mut leases = vec![Leases::default(); workers];
    let (mut with, mut without) = (0, 0);
    let mut t = 0;
    let mut i = 0;
    while t < duration {
        let w = &mut leases[i % workers];
        with += usize::from(allowed(&charge_leased(
            w,
            &mut store,
            &table("p", b, 16),
            b"k",
            T0 + t,
        )));
        without += usize::from(allowed(&charge(
            &mut exact,
            &table("p", b, 16),
            b"k",
            T0 + t,
        )));
        t += gap;
        i += 1;
    }
    (with, without, store.sets)
}

#[wasm_bindgen_test(unsupported = test)]
fn leases_stay_within_their_documented_bounds_under_load_from_two_workers() {
    // 1000/s, burst 1000, offered at 10,000/s for 2 s by two workers.
    let b = Bucket {
        burst: 1_000,
        interval_ns: MS,
    };
    let (with, without, _) = admitted(&b, 2, 100 * US, 2 * SEC);
    assert_eq!(
        without,
        1_000 + 1_999,
        "the burst, then one token per ms before 2 s"
    );
    let slack = 2 * (MAX_LEASE as usize - 1);
    assert!(
        with.abs_diff(without) <= slack,
        "leased {with}, exact {without}"
    );
    // Far below the limit, a busy key touches shared data about once per lease.
    let b = Bucket {
        burst: 1_000_000_000,
        interval_ns: 1,
    };
    let (with, without, sets) = admitted(&b, 2, 10 * US, SEC);
    assert_eq!(with, without);
    assert!(
        u64::from(sets) <= 2 * with as u64 / (MAX_LEASE - 1),
        "{sets} writes for {with} requests"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn two_workers_creating_a_key_at_once_admit_at_most_one_token_each_beyond_the_bucket() {
    // Shared data has no create-if-absent: both workers read "absent" and both
    // write. The slot's first charge leases nothing, so the race costs one token
    // per worker, not a lease each.
    let b = Bucket {
        burst: 1_000_000,
        interval_ns: SEC,
    };
    let t = table("p", b, 16);
    let mut store = FakeStore::default();
    let (mut a, mut w) = (Leases::default(), Leases::default());
    let mut racing = FakeStore::default();
    let first = charge_leased(&mut a, &mut store, &t, b"k", T0);
    let second = charge_leased(&mut w, &mut racing, &t, b"k", T0);
    assert!(allowed(&first) && allowed(&second));
    assert_eq!(
        a.held(table("p", b, 16).fingerprint(b"k")) + w.held(table("p", b, 16).fingerprint(b"k")),
        0
    );
}

/// Key `a` and a key whose lease would go in the same one of the worker's slots.
fn sharing_a_lease_slot(t: &Table) -> (Vec<u8>, Vec<u8>) {
    let slot = |k: &[u8]| t.fingerprint(k) % LEASE_SLOTS as u64;
    let a = b"a".to_vec();
    let b = (0u32..100_000)
        .map(|i| format!("b-{i}").into_bytes())
        .find(|k| slot(k) == slot(&a))
        .unwrap_or_default();
    (a, b)
}

fn granted(c: &Charge) -> u64 {
    match c {
        Charge::Decided { verdict, .. } => verdict.granted,
        Charge::StoreFailed(_) => u64::MAX,
    }
}

/// A rig: a big bucket, keys `a` and `b` sharing a lease slot, both keys' shared
/// slots created, and `a` holding a lease taken at `T0`.
fn two_keys_one_lease_slot() -> (FakeStore, Leases, Table, Vec<u8>, Vec<u8>, u64) {
    let bucket = Bucket {
        burst: 1_000_000,
        interval_ns: US,
    };
    let t = table("p", bucket, 16);
    let (a, b) = sharing_a_lease_slot(&t);
    let (mut store, mut leases) = (FakeStore::default(), Leases::default());
    charge_leased(&mut leases, &mut store, &t, &b, T0); // creates b's slot
    charge_leased(&mut leases, &mut store, &t, &a, T0); // creates a's slot
    let leased = charge_leased(&mut leases, &mut store, &t, &a, T0);
    assert_eq!(granted(&leased), MAX_LEASE, "a leases");
    let held = leases.held(t.fingerprint(&a));
    assert_eq!(held, MAX_LEASE - 1);
    (store, leases, t, a, b, held)
}

#[wasm_bindgen_test(unsupported = test)]
fn a_key_sharing_a_lease_slot_neither_spends_nor_evicts_another_keys_live_lease() {
    let (mut store, mut leases, t, a, b, held) = two_keys_one_lease_slot();
    // b is charged to its own bucket, one token, and a's lease stays whole.
    let c = charge_leased(&mut leases, &mut store, &t, &b, T0 + 1);
    assert_eq!(granted(&c), 1, "no lease while the slot holds a's live one");
    assert_eq!(leases.held(t.fingerprint(&a)), held);
    assert_eq!(leases.held(t.fingerprint(&b)), 0);
    // a's next request is served from its lease, without shared data.
    let (gets, sets) = (store.gets, store.sets);
    assert!(allowed(&charge_leased(
        &mut leases,
        &mut store,
        &t,
        &a,
        T0 + 2
    )));
    assert_eq!((store.gets, store.sets), (gets, sets));
    assert_eq!(leases.held(t.fingerprint(&a)), held - 1);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_spent_or_expired_lease_of_another_key_gives_way() {
    // Spent: a used every leased token; b may lease in its place.
    let (mut store, mut leases, t, a, b, held) = two_keys_one_lease_slot();
    for i in 0..held {
        charge_leased(&mut leases, &mut store, &t, &a, T0 + 1 + i);
    }
    assert_eq!(leases.held(t.fingerprint(&a)), 0);
    let c = charge_leased(&mut leases, &mut store, &t, &b, T0 + 100);
    assert_eq!(granted(&c), MAX_LEASE);
    assert_eq!(leases.held(t.fingerprint(&b)), MAX_LEASE - 1);
    // Expired (at exactly its end), tokens left: b may lease too.
    let (mut store, mut leases, t, a, b, held) = two_keys_one_lease_slot();
    assert!(held > 0);
    let c = charge_leased(&mut leases, &mut store, &t, &b, T0 + LEASE_TTL_NS);
    assert_eq!(granted(&c), MAX_LEASE);
    assert_eq!(leases.held(t.fingerprint(&a)), 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_lease_is_not_spent_at_the_instant_it_expires() {
    let (mut store, mut leases, t, a, _, held) = two_keys_one_lease_slot();
    assert!(held > 0);
    let sets = store.sets;
    let c = charge_leased(&mut leases, &mut store, &t, &a, T0 + LEASE_TTL_NS - 1);
    assert!(allowed(&c));
    assert_eq!(
        store.sets, sets,
        "from the lease, a nanosecond before its end"
    );
    let c = charge_leased(&mut leases, &mut store, &t, &a, T0 + LEASE_TTL_NS);
    assert!(allowed(&c));
    assert_eq!(store.sets, sets + 1, "from the shared bucket at its end");
}

#[wasm_bindgen_test(unsupported = test)]
fn a_costly_request_takes_its_cost_exactly_and_spends_a_lease_only_when_it_holds_enough() {
    let b = Bucket {
        burst: 1_000_000,
        interval_ns: US,
    };
    let t = table("p", b, 16);
    let fp = t.fingerprint(b"k");
    let (mut store, mut leases) = (FakeStore::default(), Leases::default());
    // Cost-1 requests build up a lease (the first creates the slot).
    charge_leased(&mut leases, &mut store, &t, b"k", T0);
    charge_leased(&mut leases, &mut store, &t, b"k", T0);
    let held = leases.held(fp);
    assert_eq!(held, 15, "a lease of 16 less the request's own token");
    // A request costing more than the lease holds gives the lease back and is
    // charged its cost alone, taking no new lease.
    let sets = store.sets;
    let big = charge_leased_cost(&mut leases, &mut store, &t, b"k", T0, 40);
    assert!(allowed(&big));
    assert_eq!(store.sets, sets + 1, "charged to the shared bucket");
    assert_eq!(leases.held(fp), 0, "the lease went back, none was taken");
    assert_eq!(remaining(&big), 1_000_000 - 1 - 16 + 15 - 40);
    // Leased again, a cost that fits the lease is spent from it.
    charge_leased(&mut leases, &mut store, &t, b"k", T0);
    assert_eq!(leases.held(fp), 15);
    let sets = store.sets;
    let small = charge_leased_cost(&mut leases, &mut store, &t, b"k", T0, 5);
    assert!(allowed(&small));
    assert_eq!(store.sets, sets, "spent from the lease");
    assert_eq!(leases.held(fp), 10);
}

#[wasm_bindgen_test(unsupported = test)]
fn near_empty_a_costly_request_is_refused_until_its_whole_cost_is_there() {
    let b = Bucket {
        burst: 10,
        interval_ns: SEC,
    };
    let t = table("p", b, 16);
    let (mut store, mut leases) = (FakeStore::default(), Leases::default());
    let c = |leases: &mut Leases, store: &mut FakeStore, cost, now| {
        allowed(&charge_leased_cost(leases, store, &t, b"k", now, cost))
    };
    assert!(c(&mut leases, &mut store, 6, T0));
    assert!(!c(&mut leases, &mut store, 5, T0), "four left");
    assert!(c(&mut leases, &mut store, 4, T0));
    assert!(!c(&mut leases, &mut store, 1, T0));
    assert!(c(&mut leases, &mut store, 1, T0 + SEC));
}
