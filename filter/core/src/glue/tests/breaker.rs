use meshguard_engine::{breaker_snapshot, StreamState};

use super::{plugin, rng};
use crate::glue::plugin::Plugin;
use crate::glue::request::{on_log, on_request_headers};
use crate::glue::tick::on_tick;
use crate::host::fake::FakeHost;

const SEC: u64 = 1_000_000_000;

/// One request through a fresh stream of `world`; `status` is what the upstream
/// answered (ignored when rejected).
fn request(
    p: &Plugin,
    world: &FakeHost,
    now: u64,
    headers: &[(&str, &[u8])],
    status: u64,
) -> (StreamState, FakeHost) {
    let mut h = world.stream().at(now).with_header(":path", b"/");
    for (k, v) in headers {
        h = h.with_header(k, v);
    }
    let s = on_request_headers(&h, p, &rng(3)).state;
    if !s.rejected {
        h.properties
            .borrow_mut()
            .push(("response.code".into(), status));
    }
    on_log(&h, p, &s);
    (s, h)
}

const FLAKY: &str = r#"{"schemaVersion":1,"routes":[{"name":"flaky","breaker":{"consecutiveFailures":3,"openDurationMs":5000,"halfOpenProbes":2}}]}"#;

#[test]
fn opens_after_consecutive_failures_rejects_with_retry_after_then_probes_and_closes() {
    let world = FakeHost::new();
    let p = plugin(FLAKY, &world);
    for _ in 0..3 {
        assert!(!request(&p, &world, SEC, &[], 503).0.rejected);
    }
    assert_eq!(
        world.metric("meshguard.breaker_state.route.flaky.variant.all"),
        2
    );
    assert_eq!(
        world.metric("meshguard.breaker_transitions_total.route.flaky.variant.all.state.open"),
        1
    );
    let (s, h) = request(&p, &world, 2 * SEC, &[], 200);
    assert!(s.rejected);
    let (status, headers, body) = h.replies.borrow()[0].clone();
    assert_eq!((status, body.as_slice()), (503, &b"circuit open\n"[..]));
    assert!(headers.contains(&("retry-after".into(), "4".into())));
    assert!(headers.contains(&("x-meshguard-breaker".into(), "open".into())));
    assert!(h.logs.borrow().is_empty() || !h.logs.borrow().iter().any(|(_, m)| m.contains("->")));
    // After 5 s: two probes go out; while they are in flight a third is rejected.
    let later = 6 * SEC;
    let mut in_flight = Vec::new();
    for _ in 0..3 {
        let h = world.stream().at(later);
        let s = on_request_headers(&h, &p, &rng(1)).state;
        in_flight.push((s, h));
    }
    let rejected: Vec<bool> = in_flight.iter().map(|(s, _)| s.rejected).collect();
    assert_eq!(rejected, vec![false, false, true]);
    assert_eq!(
        world.metric("meshguard.breaker_state.route.flaky.variant.all"),
        1
    );
    assert_eq!(
        world.metric("meshguard.breaker_rejected_total.route.flaky.variant.all.outcome.half_open"),
        1
    );
    // Both probes succeed: closed.
    for (s, h) in in_flight.iter().take(2) {
        h.properties
            .borrow_mut()
            .push(("response.code".into(), 200));
        on_log(h, &p, s);
    }
    assert_eq!(
        world.metric("meshguard.breaker_state.route.flaky.variant.all"),
        0
    );
    assert_eq!(
        world.metric("meshguard.breaker_transitions_total.route.flaky.variant.all.state.closed"),
        1
    );
}

#[test]
fn transitions_are_logged_once_each() {
    let world = FakeHost::new();
    let p = plugin(FLAKY, &world);
    let mut logs = Vec::new();
    for _ in 0..3 {
        let (_, h) = request(&p, &world, SEC, &[], 500);
        logs.extend(h.logs.borrow().iter().map(|(_, m)| m.clone()));
    }
    assert_eq!(
        logs,
        vec!["meshguard: breaker flaky/all: closed -> open (3 consecutive failures)".to_string()]
    );
}

#[test]
fn an_open_canary_breaker_falls_back_to_stable() {
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"routes":[{"name":"web",
            "canary":{"variants":[{"name":"stable","weight":0},{"name":"canary","weight":10000}]},
            "breaker":{"consecutiveFailures":2,"whenOpen":{"fallbackVariant":"stable"}}}]}"#,
        &world,
    );
    for _ in 0..2 {
        assert_eq!(request(&p, &world, SEC, &[], 503).0.variant, Some(1));
    }
    assert_eq!(
        world.metric("meshguard.breaker_state.route.web.variant.canary"),
        2
    );
    assert_eq!(
        world.metric("meshguard.breaker_state.route.web.variant.stable"),
        0
    );
    let (s, h) = request(&p, &world, SEC, &[], 200);
    assert!(!s.rejected);
    assert_eq!(s.variant, Some(0));
    assert_eq!(
        h.header_values("x-meshguard-cluster"),
        vec![b"stable".to_vec()]
    );
}

#[test]
fn the_concurrency_limit_rejects_the_next_request_until_one_completes() {
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"routes":[{"name":"slow","breaker":{"maxConcurrent":2}}]}"#,
        &world,
    );
    // Two requests in flight (their on_log has not run).
    for _ in 0..2 {
        let h = world.stream();
        let s = on_request_headers(&h, &p, &rng(1)).state;
        assert!(!s.rejected);
    }
    let (s, h) = request(&p, &world, SEC, &[], 200);
    assert!(s.rejected);
    assert!(h.replies.borrow()[0]
        .1
        .contains(&("x-meshguard-breaker".into(), "concurrency".into())));
}

#[test]
fn resets_and_timeouts_count_as_failures_whatever_the_status_set() {
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"routes":[{"name":"r","breaker":{"failureStatuses":["500"],"consecutiveFailures":2}}]}"#,
        &world,
    );
    for _ in 0..2 {
        let h = world.stream();
        let s = on_request_headers(&h, &p, &rng(1)).state;
        h.properties
            .borrow_mut()
            .push(("response.code".into(), 504));
        h.properties
            .borrow_mut()
            .push(("response.flags".into(), 0x4)); // UT
        on_log(&h, &p, &s);
    }
    assert_eq!(
        world.metric("meshguard.breaker_state.route.r.variant.all"),
        2
    );
}

#[test]
fn the_tick_writes_what_an_idle_worker_still_holds() {
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"routes":[{"name":"r","breaker":{}}]}"#,
        &world,
    );
    // Two successes: held (a batch of 5 for the default window of 100 calls).
    for i in 0..2 {
        request(&p, &world, 10 * SEC + i, &[], 200);
    }
    let calls_in_window = |h: &FakeHost| {
        let route = &p.runtime.routes[0];
        let key = &route.breakers[0].key;
        let bytes = h.world().data.borrow().get(key).map(|(v, _)| v.clone());
        let b = route.route.breaker.as_ref().unwrap();
        breaker_snapshot(b, bytes.as_deref(), 10 * SEC).totals.calls
    };
    assert_eq!(calls_in_window(&world), 0, "held, not written");
    // A tick before they are due writes nothing; one after writes both.
    on_tick(&world.stream().at(10 * SEC + 1_000_000), &p);
    assert_eq!(calls_in_window(&world), 0);
    on_tick(&world.stream().at(10 * SEC + 50_000_000), &p);
    assert_eq!(calls_in_window(&world), 2);
}
