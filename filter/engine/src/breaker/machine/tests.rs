use super::*;
use crate::breaker::local::Local;
use crate::breaker::shared;
use crate::breaker::testing::{policy, FAIL, MS, OK, SEC, SLOW_OK, T0};
use crate::store::fake::FakeStore;
use meshguard_config::breaker::CompiledBreaker;
use wasm_bindgen_test::wasm_bindgen_test;

/// Records outcomes at `now`; returns the transitions that happened.
fn feed(s: &mut State, p: &CompiledBreaker, outcomes: &[Outcome], now: u64) -> Vec<Transition> {
    outcomes
        .iter()
        .filter_map(|o| record(s, p, *o, false, now).1)
        .collect()
}

#[wasm_bindgen_test(unsupported = test)]
fn opens_exactly_at_the_failure_rate_threshold() {
    let p = policy(r#"{"failureRateThreshold":50,"minimumCalls":10,"window":{"calls":10}}"#);
    let mut s = State::new(p.window);
    // 5 ok + 4 failures: 9 calls, below the minimum.
    assert!(feed(
        &mut s,
        &p,
        &[OK, OK, OK, OK, OK, FAIL, FAIL, FAIL, FAIL],
        T0
    )
    .is_empty());
    // The 10th call, a failure: 5/10 = 50% >= 50% -> open.
    let t = feed(&mut s, &p, &[FAIL], T0);
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].from, t[0].to), (Phase::Closed, Phase::Open));
    assert_eq!(t[0].reason, "failure rate 50% over 10 calls");
}

#[wasm_bindgen_test(unsupported = test)]
fn does_not_open_below_the_threshold_or_before_minimum_calls() {
    let p = policy(r#"{"failureRateThreshold":50,"minimumCalls":10,"window":{"calls":10}}"#);
    let mut s = State::new(p.window);
    // 4 failures in 9 calls then an ok: 4/10 = 40%.
    assert!(feed(
        &mut s,
        &p,
        &[FAIL, FAIL, FAIL, FAIL, OK, OK, OK, OK, OK, OK],
        T0
    )
    .is_empty());
    // Five failures alone do not open: minimum calls not reached.
    let mut fresh = State::new(p.window);
    assert!(feed(&mut fresh, &p, &[FAIL; 5], T0).is_empty());
    assert_eq!(fresh.phase, Phase::Closed);
}

#[wasm_bindgen_test(unsupported = test)]
fn opens_on_consecutive_failures_before_the_minimum_calls() {
    let p = policy(r#"{"consecutiveFailures":5,"minimumCalls":10}"#);
    let mut s = State::new(p.window);
    assert!(feed(
        &mut s,
        &p,
        &[FAIL, FAIL, FAIL, FAIL, OK, FAIL, FAIL, FAIL, FAIL],
        T0
    )
    .is_empty());
    let t = feed(&mut s, &p, &[FAIL], T0);
    assert_eq!(t[0].reason, "5 consecutive failures");
}

#[wasm_bindgen_test(unsupported = test)]
fn opens_on_the_slow_call_rate() {
    let p = policy(
        r#"{"slowCall":{"durationMs":100,"rateThreshold":60},"minimumCalls":5,"window":{"calls":5}}"#,
    );
    let mut s = State::new(p.window);
    assert!(feed(&mut s, &p, &[SLOW_OK, SLOW_OK, OK, OK], T0).is_empty());
    let t = feed(&mut s, &p, &[SLOW_OK], T0);
    assert_eq!(t[0].reason, "slow-call rate 60% over 5 calls");
}

#[wasm_bindgen_test(unsupported = test)]
fn rejects_while_open_and_reports_the_time_left() {
    let p = policy(r#"{"consecutiveFailures":1,"openDurationMs":5000}"#);
    let mut s = State::new(p.window);
    feed(&mut s, &p, &[FAIL], T0);
    assert_eq!(
        admit(&mut s, &p, T0 + SEC).0,
        Admission::Reject {
            phase: Phase::Open,
            retry_in_ns: 4 * SEC
        }
    );
    assert_eq!(
        admit(&mut s, &p, T0 + 5 * SEC - 1).0,
        Admission::Reject {
            phase: Phase::Open,
            retry_in_ns: 1
        }
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn half_open_admits_exactly_the_probes_and_closes_after_they_succeed() {
    let p = policy(r#"{"consecutiveFailures":1,"openDurationMs":5000,"halfOpenProbes":3}"#);
    let mut s = State::new(p.window);
    feed(&mut s, &p, &[FAIL], T0);
    let later = T0 + 5 * SEC;
    let (first, _, t) = admit(&mut s, &p, later);
    assert_eq!(first, Admission::Allow { probe: true });
    assert_eq!(t.map(|t| t.to), Some(Phase::HalfOpen));
    assert_eq!(admit(&mut s, &p, later).0, Admission::Allow { probe: true });
    assert_eq!(admit(&mut s, &p, later).0, Admission::Allow { probe: true });
    for _ in 0..5 {
        assert_eq!(
            admit(&mut s, &p, later).0,
            Admission::Reject {
                phase: Phase::HalfOpen,
                retry_in_ns: 0
            }
        );
    }
    // A non-probe finishing now (it started before the trip) changes nothing.
    assert_eq!(record(&mut s, &p, FAIL, false, later), (false, None));
    assert_eq!(record(&mut s, &p, OK, true, later).1, None);
    assert_eq!(record(&mut s, &p, OK, true, later).1, None);
    let t = record(&mut s, &p, OK, true, later).1.unwrap();
    assert_eq!((t.from, t.to), (Phase::HalfOpen, Phase::Closed));
    assert_eq!(
        admit(&mut s, &p, later).0,
        Admission::Allow { probe: false }
    );
    assert_eq!(
        s.window.totals(later).calls,
        0,
        "closing starts a fresh window"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_failed_probe_reopens_for_a_growing_capped_duration() {
    let p = policy(
        r#"{"consecutiveFailures":1,"openDurationMs":1000,"maxOpenDurationMs":3000,"halfOpenProbes":1}"#,
    );
    let mut s = State::new(p.window);
    feed(&mut s, &p, &[FAIL], T0);
    assert_eq!(s.open_until, T0 + SEC);
    let mut now = s.open_until;
    let mut durations = Vec::new();
    for _ in 0..4 {
        assert_eq!(admit(&mut s, &p, now).0, Admission::Allow { probe: true });
        let t = record(&mut s, &p, FAIL, true, now).1.unwrap();
        assert_eq!((t.from, t.to), (Phase::HalfOpen, Phase::Open));
        durations.push((s.open_until - now) / MS);
        now = s.open_until;
    }
    assert_eq!(durations, vec![2000, 3000, 3000, 3000]);
    // A successful probe closes and resets the growth.
    admit(&mut s, &p, now);
    record(&mut s, &p, OK, true, now);
    feed(&mut s, &p, &[FAIL], now);
    assert_eq!(s.open_until - now, SEC);
}

#[wasm_bindgen_test(unsupported = test)]
fn old_failures_expire_from_a_time_window() {
    let p = policy(r#"{"failureRateThreshold":50,"minimumCalls":4,"window":{"seconds":10}}"#);
    let mut s = State::new(p.window);
    feed(&mut s, &p, &[FAIL, FAIL, FAIL], T0);
    // 11 s later those failures are gone: 1 failure in 4 calls is 25%.
    assert!(feed(&mut s, &p, &[OK, OK, OK, FAIL], T0 + 11 * SEC).is_empty());
    assert_eq!(s.phase, Phase::Closed);
    // Within the window the same pattern opens.
    let mut s2 = State::new(p.window);
    feed(&mut s2, &p, &[FAIL, FAIL, FAIL], T0);
    assert_eq!(feed(&mut s2, &p, &[OK], T0 + 5 * SEC).len(), 1);
}

#[wasm_bindgen_test(unsupported = test)]
fn workers_sharing_the_store_see_the_same_transitions() {
    let p = policy(r#"{"consecutiveFailures":4,"openDurationMs":1000,"halfOpenProbes":2}"#);
    let mut store = FakeStore::default();
    // Two workers alternate; failures from both count towards one breaker.
    let mut workers = [Local::default(), Local::default()];
    for i in 0..3 {
        assert_eq!(
            workers[i % 2]
                .record(&mut store, "b", &p, FAIL, false, T0)
                .unwrap(),
            vec![]
        );
    }
    let t = workers[1]
        .record(&mut store, "b", &p, FAIL, false, T0)
        .unwrap();
    assert_eq!(t[0].to, Phase::Open);
    // The worker that tripped it rejects at once; the other once the closed phase
    // it read is older than `STALE_NS` (1 ms).
    assert!(matches!(
        workers[1].admit(&mut store, "b", &p, T0).unwrap().0,
        Admission::Reject { .. }
    ));
    assert!(matches!(
        workers[0].admit(&mut store, "b", &p, T0 + MS).unwrap().0,
        Admission::Reject { .. }
    ));
    // After the open period, exactly two probes across all workers.
    let later = T0 + SEC;
    let admitted = (0..10)
        .filter(|i| {
            matches!(
                workers[i % 2].admit(&mut store, "b", &p, later).unwrap().0,
                Admission::Allow { probe: true }
            )
        })
        .count();
    assert_eq!(admitted, 2);
}

#[wasm_bindgen_test(unsupported = test)]
fn cas_conflicts_are_retried_and_exhaustion_is_reported() {
    let p = policy(r#"{"consecutiveFailures":1}"#);
    let mut store = FakeStore {
        conflicts: 3,
        ..FakeStore::default()
    };
    assert!(!Local::default()
        .record(&mut store, "b", &p, FAIL, false, T0)
        .unwrap()
        .is_empty());
    let mut store = FakeStore {
        conflicts: 100,
        ..FakeStore::default()
    };
    assert_eq!(
        Local::default().record(&mut store, "b", &p, FAIL, false, T0),
        Err(crate::store::StoreError::CasMismatch)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn the_concurrency_limit_admits_n_and_releases_never_go_negative() {
    let mut store = FakeStore::default();
    let slots = shared::Slots::new("c".into());
    let got: Vec<Option<u64>> = (0..4)
        .map(|_| shared::acquire(&mut store, &slots, 3, T0).unwrap())
        .collect();
    assert_eq!(got, vec![Some(T0), Some(T0), Some(T0), None]);
    shared::release(&mut store, &slots, T0, T0).unwrap();
    assert!(shared::acquire(&mut store, &slots, 3, T0)
        .unwrap()
        .is_some());
    for _ in 0..10 {
        shared::release(&mut store, &slots, T0, T0).unwrap();
    }
    assert_eq!(shared::in_flight(&mut store, "c", T0).unwrap(), 0);
    assert_eq!(slots.held.get(), 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn open_duration_never_overflows() {
    let p = policy(r#"{"openDurationMs":86400000,"maxOpenDurationMs":86400000}"#);
    assert_eq!(open_duration(&p, u32::MAX), 86_400_000 * MS);
}
