use super::*;
use crate::breaker::state::State;
use crate::breaker::testing::{policy, FAIL, MS, OK, T0};
use crate::store::fake::FakeStore;
use wasm_bindgen_test::wasm_bindgen_test;

const US: u64 = 1_000;
const KEY: &str = "cb";

fn stored(store: &FakeStore, p: &CompiledBreaker) -> State {
    State::decode(p.window, store.data.get(KEY).map(|(v, _)| v.as_slice()))
}

#[wasm_bindgen_test(unsupported = test)]
fn a_closed_phase_read_less_than_a_millisecond_ago_admits_without_a_read() {
    let p = policy("{}");
    let (mut store, mut w) = (FakeStore::default(), Local::default());
    let allow = Admission::Allow { probe: false };
    assert_eq!(w.admit(&mut store, KEY, &p, T0).unwrap().0, allow);
    assert_eq!(
        w.admit(&mut store, KEY, &p, T0 + 999 * US).unwrap().0,
        allow
    );
    assert_eq!(store.gets, 1);
    assert_eq!(w.admit(&mut store, KEY, &p, T0 + MS).unwrap().0, allow);
    assert_eq!((store.gets, store.sets), (2, 0));
}

#[wasm_bindgen_test(unsupported = test)]
fn successes_are_written_in_batches_and_a_failure_at_once_after_them() {
    let p = policy("{}"); // a window of 100 calls: batches of 5
    assert_eq!(Batching::of(&p).max_pending, 5);
    let (mut store, mut w) = (FakeStore::default(), Local::default());
    for i in 0..4 {
        w.record(&mut store, KEY, &p, OK, false, T0 + i).unwrap();
    }
    assert_eq!((store.sets, w.pending()), (0, 4));
    w.record(&mut store, KEY, &p, OK, false, T0 + 4).unwrap();
    assert_eq!((store.sets, w.pending()), (1, 0));
    assert_eq!(stored(&store, &p).window.totals(T0).calls, 5);
    w.record(&mut store, KEY, &p, OK, false, T0 + 5).unwrap();
    w.record(&mut store, KEY, &p, FAIL, false, T0 + 6).unwrap();
    assert_eq!((store.sets, w.pending()), (2, 0));
    let s = stored(&store, &p);
    assert_eq!(
        (s.window.totals(T0).calls, s.window.totals(T0).failures),
        (7, 1)
    );
    assert_eq!(
        s.consecutive_failures, 1,
        "the success was applied before the failure"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn an_idle_workers_successes_are_written_once_due() {
    let p = policy("{}");
    let (mut store, mut w) = (FakeStore::default(), Local::default());
    w.record(&mut store, KEY, &p, OK, false, T0).unwrap();
    w.flush_due(&mut store, KEY, &p, T0 + MAX_DELAY_NS - 1)
        .unwrap();
    assert_eq!((store.sets, w.pending()), (0, 1));
    w.flush_due(&mut store, KEY, &p, T0 + MAX_DELAY_NS).unwrap();
    assert_eq!((store.sets, w.pending()), (1, 0));
    // With a consecutive-failure trip, successes wait at most a millisecond.
    let c = policy(r#"{"consecutiveFailures":3}"#);
    assert_eq!(Batching::of(&c).max_delay_ns, STALE_NS);
    w.record(&mut store, KEY, &c, OK, false, T0).unwrap();
    w.flush_due(&mut store, KEY, &c, T0 + STALE_NS).unwrap();
    assert_eq!(w.pending(), 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_trip_reaches_another_worker_within_a_millisecond_then_it_rejects_locally() {
    let p = policy(r#"{"consecutiveFailures":3,"openDurationMs":10000,"halfOpenProbes":1}"#);
    let mut store = FakeStore::default();
    let (mut a, mut b) = (Local::default(), Local::default());
    let allow = Admission::Allow { probe: false };
    assert_eq!(b.admit(&mut store, KEY, &p, T0).unwrap().0, allow);
    let mut trips = Vec::new();
    for i in 0..3 {
        trips.extend(a.record(&mut store, KEY, &p, FAIL, false, T0 + i).unwrap());
    }
    assert_eq!(trips.len(), 1);
    assert_eq!(trips[0].to, Phase::Open);
    // B still trusts the closed phase it read (less than 1 ms ago)...
    assert_eq!(
        b.admit(&mut store, KEY, &p, T0 + 500 * US).unwrap().0,
        allow
    );
    // ...then reads the open one, and rejects without reading until it ends.
    let (rejected, _) = b.admit(&mut store, KEY, &p, T0 + MS).unwrap();
    assert!(matches!(
        rejected,
        Admission::Reject {
            phase: Phase::Open,
            ..
        }
    ));
    let gets = store.gets;
    for t in [T0 + 2 * MS, T0 + 5_000 * MS, T0 + 9_999 * MS] {
        let (r, _) = b.admit(&mut store, KEY, &p, t).unwrap();
        assert!(matches!(
            r,
            Admission::Reject {
                phase: Phase::Open,
                ..
            }
        ));
    }
    assert_eq!(store.gets, gets);
    // The open period is over: the shared state hands out the probe.
    let (probe, t) = b.admit(&mut store, KEY, &p, T0 + 10_001 * MS).unwrap();
    assert_eq!(probe, Admission::Allow { probe: true });
    assert_eq!(t[0].to, Phase::HalfOpen);
    // Half-open admissions always go to the shared state: exactly one probe.
    let (second, _) = a.admit(&mut store, KEY, &p, T0 + 10_001 * MS).unwrap();
    assert!(matches!(
        second,
        Admission::Reject {
            phase: Phase::HalfOpen,
            ..
        }
    ));
}

/// Outcomes of `n` calls: `pattern` repeated; calls go round `workers` workers.
/// Returns the call index of the first trip: (exact, batched).
fn first_trip(
    p: &CompiledBreaker,
    pattern: &[Outcome],
    n: usize,
    workers: usize,
) -> (Option<usize>, Option<usize>) {
    let mut exact = State::new(p.window);
    let mut store = FakeStore::default();
    let mut workers = vec![Local::default(); workers];
    let (mut e, mut b) = (None, None);
    for i in 0..n {
        let o = pattern[i % pattern.len()];
        let now = T0 + i as u64 * 10 * US;
        if machine::record(&mut exact, p, o, false, now).1.is_some() && e.is_none() {
            e = Some(i);
        }
        let count = workers.len();
        let w = &mut workers[i % count];
        let t = w.record(&mut store, KEY, p, o, false, now).unwrap();
        if t.iter().any(|t| t.to == Phase::Open) && b.is_none() {
            b = Some(i);
        }
    }
    (e, b)
}

#[wasm_bindgen_test(unsupported = test)]
fn batched_failure_rates_stay_within_the_documented_bound_of_the_exact_ones() {
    let p = policy(r#"{"failureRateThreshold":50,"minimumCalls":20}"#);
    let max_pending = Batching::of(&p).max_pending;
    // 40% failures: below the threshold by more than the bound (5% per other worker).
    let forty = [FAIL, OK, OK, FAIL, OK];
    assert_eq!(first_trip(&p, &forty, 10_000, 2), (None, None));
    // 60% failures: both trip, at most one batch per worker apart (earlier: other
    // workers' successes not written yet; later: too few calls written for
    // minimumCalls).
    let sixty = [FAIL, OK, FAIL, OK, FAIL];
    let (Some(e), Some(b)) = first_trip(&p, &sixty, 10_000, 2) else {
        panic!("both must trip");
    };
    assert!(e.abs_diff(b) <= 2 * max_pending, "exact {e}, batched {b}");
    // Consecutive failures on one worker are counted exactly; across workers a
    // success held (at most 1 ms) by one may land after another's failure.
    let c = policy(r#"{"consecutiveFailures":4}"#);
    let run = [OK, OK, FAIL, FAIL, FAIL, FAIL, FAIL, FAIL, FAIL, FAIL];
    assert_eq!(first_trip(&c, &run, 10, 1), (Some(5), Some(5)));
    assert_eq!(first_trip(&c, &run, 10, 2), (Some(5), Some(6)));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_failing_store_keeps_one_batch_and_reads_again() {
    let p = policy("{}");
    let (mut store, mut w) = (FakeStore::default(), Local::default());
    w.admit(&mut store, KEY, &p, T0).unwrap();
    store.fail_gets = true;
    for i in 0..20 {
        let _ = w.record(&mut store, KEY, &p, FAIL, false, T0 + i);
    }
    assert_eq!(w.pending(), Batching::of(&p).max_pending);
    assert!(
        w.admit(&mut store, KEY, &p, T0 + 30).is_err(),
        "no stale admission"
    );
    store.fail_gets = false;
    w.admit(&mut store, KEY, &p, T0 + 40).unwrap();
    assert_eq!(w.pending(), 0);
    assert_eq!(stored(&store, &p).window.totals(T0).failures, 5);
}

#[wasm_bindgen_test(unsupported = test)]
fn batches_are_sized_from_the_window_at_their_boundaries() {
    let of = |json: &str| {
        let b = Batching::of(&policy(json));
        (b.max_pending, b.max_delay_ns)
    };
    // N calls: N/20 held, at least 1, at most 16; never older than 50 ms.
    assert_eq!(of(r#"{"window":{"calls":19}}"#), (1, MAX_DELAY_NS));
    assert_eq!(
        of(r#"{"window":{"calls":40},"minimumCalls":10}"#),
        (2, MAX_DELAY_NS)
    );
    assert_eq!(of(r#"{"window":{"calls":339}}"#), (16, MAX_DELAY_NS));
    assert_eq!(of(r#"{"window":{"calls":1000}}"#), (16, MAX_DELAY_NS));
    // N seconds: a 64th of the window, capped at 50 ms (from 4 s on).
    assert_eq!(of(r#"{"window":{"seconds":1}}"#), (MAX_BATCH, 15_625_000));
    assert_eq!(of(r#"{"window":{"seconds":3}}"#), (MAX_BATCH, 46_875_000));
    assert_eq!(of(r#"{"window":{"seconds":4}}"#), (MAX_BATCH, MAX_DELAY_NS));
    // A consecutive-failure trip holds successes at most 1 ms.
    assert_eq!(
        of(r#"{"window":{"seconds":1},"consecutiveFailures":3}"#),
        (MAX_BATCH, STALE_NS)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn an_open_phase_remembered_tells_the_time_left_without_a_read() {
    let p = policy(r#"{"consecutiveFailures":1,"openDurationMs":1000}"#);
    let (mut store, mut w) = (FakeStore::default(), Local::default());
    w.record(&mut store, KEY, &p, FAIL, false, T0).unwrap();
    let gets = store.gets;
    let (admission, _) = w.admit(&mut store, KEY, &p, T0 + 10 * MS).unwrap();
    assert_eq!(
        admission,
        Admission::Reject {
            phase: Phase::Open,
            retry_in_ns: 990 * MS
        }
    );
    assert_eq!(store.gets, gets, "answered from what it remembered");
}

#[wasm_bindgen_test(unsupported = test)]
fn a_probes_outcome_is_written_even_with_nothing_held() {
    let p = policy(r#"{"consecutiveFailures":1,"openDurationMs":1000,"halfOpenProbes":1}"#);
    let (mut store, mut w) = (FakeStore::default(), Local::default());
    w.record(&mut store, KEY, &p, FAIL, false, T0).unwrap();
    let at = T0 + 1_001 * MS;
    let (probe, _) = w.admit(&mut store, KEY, &p, at).unwrap();
    assert_eq!(probe, Admission::Allow { probe: true });
    assert_eq!(w.pending(), 0);
    assert_eq!(stored(&store, &p).phase, Phase::HalfOpen);
    w.record(&mut store, KEY, &p, OK, true, at + MS).unwrap();
    assert_eq!(
        stored(&store, &p).phase,
        Phase::Closed,
        "the probe closed it"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_fast_probe_closes_a_breaker_that_also_trips_on_slow_calls() {
    let p = policy(
        r#"{"consecutiveFailures":1,"openDurationMs":1000,"halfOpenProbes":1,"slowCall":{"durationMs":100,"rateThreshold":100}}"#,
    );
    let (mut store, mut w) = (FakeStore::default(), Local::default());
    w.record(&mut store, KEY, &p, FAIL, false, T0).unwrap();
    let at = T0 + 1_001 * MS;
    let (probe, _) = w.admit(&mut store, KEY, &p, at).unwrap();
    assert_eq!(probe, Admission::Allow { probe: true });
    w.record(&mut store, KEY, &p, OK, true, at + MS).unwrap();
    assert_eq!(stored(&store, &p).phase, Phase::Closed);
}

#[wasm_bindgen_test(unsupported = test)]
fn the_slow_call_rate_trips_at_its_threshold_and_not_below() {
    use crate::breaker::testing::SLOW_OK;
    let p = policy(
        r#"{"window":{"calls":10},"minimumCalls":10,"slowCall":{"durationMs":100,"rateThreshold":50}}"#,
    );
    let phase_after = |slow: usize| {
        let (mut store, mut w) = (FakeStore::default(), Local::default());
        for i in 0..10u64 {
            let o = if (i as usize) < slow { SLOW_OK } else { OK };
            w.record(&mut store, KEY, &p, o, false, T0 + i).unwrap();
        }
        stored(&store, &p).phase
    };
    assert_eq!(phase_after(4), Phase::Closed, "40% < 50%");
    assert_eq!(phase_after(5), Phase::Open, "50% reaches it");
}
