//! The gate on its own: which breaker instance a request belongs to, what each
//! rejection answers and counts, the fallback, slow calls, and the tick's flush.

use super::*;
use crate::breaker::testing::{MS, T0};
use crate::runtime::testing::{runtime, NoIds};
use crate::runtime::Runtime;
use crate::store::fake::FakeStore;
use wasm_bindgen_test::wasm_bindgen_test;

/// A route `web` with a stable/canary split and `breaker`.
fn rt(breaker: &str) -> Runtime<NoIds> {
    runtime(&format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web","canary":{{"variants":[{{"name":"stable","weight":5000}},{{"name":"canary","weight":5000}}]}},"breaker":{breaker}}}]}}"#
    ))
}

fn end(code: u64, now: u64) -> Completion {
    Completion {
        code,
        flags: 0,
        complete: true,
        now: Some(now),
    }
}

/// A request on `variant` at `now`, answered `code` at `done`: the gate, and the
/// events of both steps.
fn call<'a>(
    r: &'a Runtime<NoIds>,
    store: &mut FakeStore,
    variant: usize,
    now: u64,
    code: u64,
    done: u64,
) -> (Gate<'a>, Vec<Event>) {
    let route = &r.routes[0];
    let mut events = Vec::new();
    let g = gate(route, 0, Some(variant), store, now, &mut events);
    let ticket = match &g {
        Gate::Pass(t) => *t,
        Gate::Fallback(_, t) => Some(*t),
        Gate::Rejected(_) => None,
    };
    if let Some(t) = ticket {
        settle(route, &t, &end(code, done), None, store, &mut events);
    }
    (g, events)
}

fn breaker_header(g: &Gate<'_>) -> Option<String> {
    match g {
        Gate::Rejected(r) => r
            .headers
            .iter()
            .find(|(n, _)| n == "x-meshguard-breaker")
            .map(|(_, v)| v.clone()),
        _ => None,
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn each_variant_has_its_own_breaker_unless_one_is_asked_for() {
    let per = rt(r#"{"consecutiveFailures":1}"#);
    let b = per.routes[0].route.breaker.as_ref().unwrap();
    assert_eq!(instance(&per.routes[0], b, Some(1)), 1);
    assert_eq!(instance(&per.routes[0], b, None), 0);
    let one = rt(r#"{"consecutiveFailures":1,"perVariant":false}"#);
    let b = one.routes[0].route.breaker.as_ref().unwrap();
    assert_eq!(instance(&one.routes[0], b, Some(1)), 0);
    let plain = runtime(r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{}}]}"#);
    let b = plain.routes[0].route.breaker.as_ref().unwrap();
    assert_eq!(
        instance(&plain.routes[0], b, Some(1)),
        0,
        "no canary: one breaker"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_trip_is_reported_then_open_and_half_open_rejections_answer_and_count_apart() {
    let r = rt(r#"{"consecutiveFailures":1,"openDurationMs":1000,"halfOpenProbes":1}"#);
    let mut store = FakeStore::default();
    // The canary fails once: its breaker opens, and the transition is reported.
    let (g, ev) = call(&r, &mut store, 1, T0, 503, T0 + MS);
    assert!(matches!(g, Gate::Pass(Some(_))));
    assert!(
        ev.iter().any(|e| matches!(e, Event::BreakerTransition { route: 0, instance: 1, transition } if transition.to == Phase::Open)),
        "{ev:?}"
    );
    // Open: answered 503 `open`, counted as an open rejection of instance 1.
    let (g, ev) = call(&r, &mut store, 1, T0 + 2 * MS, 200, T0 + 3 * MS);
    assert_eq!(breaker_header(&g).as_deref(), Some("open"));
    assert!(matches!(&g, Gate::Rejected(reply) if reply.reason == ReplyReason::BreakerOpen));
    assert!(ev.contains(&Event::BreakerRejected {
        route: 0,
        instance: 1,
        kind: RejectKind::Open
    }));
    // Stable's breaker is its own: still closed.
    let (g, _) = call(&r, &mut store, 0, T0 + 2 * MS, 200, T0 + 3 * MS);
    assert!(matches!(g, Gate::Pass(Some(_))));
    // After the open period one probe goes; the next request is a half-open
    // rejection while it is out.
    let route = &r.routes[0];
    let mut ev = Vec::new();
    let probe = gate(route, 0, Some(1), &mut store, T0 + 1_100 * MS, &mut ev);
    assert!(matches!(probe, Gate::Pass(Some(t)) if t.probe), "{probe:?}");
    let mut ev = Vec::new();
    let g = gate(route, 0, Some(1), &mut store, T0 + 1_101 * MS, &mut ev);
    assert_eq!(breaker_header(&g).as_deref(), Some("half-open"));
    assert!(matches!(&g, Gate::Rejected(reply) if reply.reason == ReplyReason::BreakerHalfOpen));
    assert!(ev.contains(&Event::BreakerRejected {
        route: 0,
        instance: 1,
        kind: RejectKind::HalfOpen
    }));
}

#[wasm_bindgen_test(unsupported = test)]
fn an_open_canary_falls_back_to_stable_but_an_open_stable_does_not_fall_back_to_itself() {
    let r = rt(r#"{"consecutiveFailures":1,"whenOpen":{"fallbackVariant":"stable"}}"#);
    let mut store = FakeStore::default();
    call(&r, &mut store, 1, T0, 503, T0 + MS);
    let (g, _) = call(&r, &mut store, 1, T0 + 2 * MS, 200, T0 + 3 * MS);
    assert!(
        matches!(g, Gate::Fallback(0, t) if t.instance == 0),
        "{g:?}"
    );
    // Stable opens too: its requests are answered, not sent to itself.
    call(&r, &mut store, 0, T0 + 4 * MS, 503, T0 + 5 * MS);
    let (g, _) = call(&r, &mut store, 0, T0 + 6 * MS, 200, T0 + 7 * MS);
    assert_eq!(breaker_header(&g).as_deref(), Some("open"));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_call_is_slow_only_past_the_threshold_and_only_with_a_clock() {
    let slow_after = |start: u64, end_at: Option<u64>| {
        let r = rt(
            r#"{"slowCall":{"durationMs":100,"rateThreshold":100},"minimumCalls":1,"window":{"calls":1}}"#,
        );
        let route = &r.routes[0];
        let mut store = FakeStore::default();
        let mut ev = Vec::new();
        let Gate::Pass(Some(t)) = gate(route, 0, Some(0), &mut store, start, &mut ev) else {
            panic!("admitted")
        };
        let done = Completion {
            now: end_at,
            ..end(200, 0)
        };
        settle(route, &t, &done, None, &mut store, &mut ev);
        ev.iter()
            .any(|e| matches!(e, Event::BreakerTransition { transition, .. } if transition.to == Phase::Open))
    };
    assert!(
        !slow_after(T0, Some(T0 + 100 * MS)),
        "exactly the threshold is not slow"
    );
    assert!(slow_after(T0, Some(T0 + 100 * MS + 1)));
    assert!(!slow_after(T0, None), "without a clock nothing is slow");
}

#[wasm_bindgen_test(unsupported = test)]
fn the_tick_writes_held_outcomes_only_when_some_are_due_and_reports_store_trouble() {
    let r = rt(r#"{}"#);
    let route = &r.routes[0];
    let mut store = FakeStore::default();
    // A success is held (batches of 5).
    let (g, _) = call(&r, &mut store, 0, T0, 200, T0 + MS);
    assert!(matches!(g, Gate::Pass(Some(_))));
    assert_eq!(route.breakers[0].local.borrow().pending(), 1);
    let sets = store.sets;
    let mut ev = Vec::new();
    flush(route, 0, &mut store, T0 + 2 * MS, &mut ev, false);
    assert_eq!(store.sets, sets, "not due yet");
    flush(route, 0, &mut store, T0 + 2 * MS, &mut ev, true);
    assert_eq!(store.sets, sets + 1, "written when all are asked for");
    assert_eq!(route.breakers[0].local.borrow().pending(), 0);
    // With nothing held, a flush reads nothing.
    let gets = store.gets;
    flush(route, 0, &mut store, T0 + 3 * MS, &mut ev, true);
    assert_eq!(store.gets, gets);
    // A store that fails: the outcome is kept and the trouble reported.
    call(&r, &mut store, 0, T0 + 4 * MS, 200, T0 + 5 * MS);
    store.fail_gets = true;
    let mut ev = Vec::new();
    flush(route, 0, &mut store, T0 + 6 * MS, &mut ev, true);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Warning(w) if w.contains("not recorded"))),
        "{ev:?}"
    );
}
