//! The tick runs while something is pending and stops after a second of nothing;
//! the next request starts it again, ticking once first.

use super::{plugin, rng};
use crate::glue::configure::configure;
use crate::glue::request::{on_log, on_request_headers, on_tick};
use crate::glue::worker::TICK_MS;
use crate::glue::worker::{Worker, IDLE_TICKS};
use crate::host::fake::FakeHost;
use crate::host::Level;

const MS: u64 = 1_000_000;
const METRICS: &str = r#"{"schemaVersion":1,"routes":[{"name":"web"}]}"#;
const ANALYSIS: &str = r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
    "variants":[{"name":"stable","weight":5000},{"name":"canary","weight":5000}],
    "revision":"v2","analysis":{"minRequests":10}}}]}"#;

fn ticks(host: &FakeHost, p: &crate::glue::plugin::Plugin, n: u32) {
    for _ in 0..n {
        host.now.set(host.now.get() + TICK_MS * MS);
        on_tick(host, p);
    }
}

#[test]
fn an_idle_worker_stops_its_tick_and_a_request_starts_it_with_one_tick_first() {
    let host = FakeHost::new().at(1_000 * MS).with_config(ANALYSIS);
    let p = configure(&host, Default::default()).unwrap();
    assert!(p.worker.set_tick(&host, TICK_MS));
    // Requests leave counts (and rollout counts): the tick keeps running.
    for i in 0..5 {
        let s = on_request_headers(&host, &p, &rng(i)).state;
        on_log(&host, &p, &s);
    }
    // The first tick folds and flushes everything; then IDLE_TICKS idle ones.
    ticks(&host, &p, IDLE_TICKS);
    assert_eq!(host.tick_period_ms.get(), Some(TICK_MS));
    ticks(&host, &p, 1);
    assert_eq!(host.tick_period_ms.get(), Some(0));
    assert!(!p.worker.ticking());
    // Nothing ticks now; a request sets the tick again and ticks first, reading
    // the rollout's shared record before it is decided.
    host.calls.borrow_mut().clear();
    let s = on_request_headers(&host, &p, &rng(9)).state;
    on_log(&host, &p, &s);
    let calls = host.calls.take();
    let set = calls.iter().position(|c| c == "set_tick_period(50)");
    let read = calls.iter().position(|c| c.starts_with("shared_get"));
    let now = calls.iter().position(|c| c == "now()");
    assert!(
        set.is_some() && set < read && read < now.map(|n| n + 2),
        "{calls:?}"
    );
    assert_eq!(host.tick_period_ms.get(), Some(TICK_MS));
    assert!(p.worker.ticking());
}

#[test]
fn held_counts_keep_the_tick_alive_until_handed_over() {
    let host = FakeHost::new().at(1_000 * MS);
    let p = plugin(METRICS, &host);
    assert!(p.worker.set_tick(&host, TICK_MS));
    for _ in 0..3 {
        let worker_busy = |p: &crate::glue::plugin::Plugin| p.worker.holds_counts();
        let s = on_request_headers(&host, &p, &rng(1)).state;
        on_log(&host, &p, &s);
        assert!(worker_busy(&p));
        ticks(&host, &p, 1);
        assert!(!worker_busy(&p));
    }
    assert_eq!(
        host.metric_now("meshguard.requests_total.route.web.variant.none.code_class.none"),
        3
    );
    ticks(&host, &p, IDLE_TICKS - 1);
    assert!(p.worker.ticking());
    ticks(&host, &p, 1);
    assert!(!p.worker.ticking());
}

#[test]
fn a_worker_whose_tick_is_refused_counts_at_once_and_says_so_once() {
    let host = FakeHost::new().at(1_000 * MS);
    host.tick_fails.set(true);
    let p = plugin(METRICS, &host);
    for _ in 0..3 {
        let s = on_request_headers(&host, &p, &rng(1)).state;
        on_log(&host, &p, &s);
    }
    assert!(p.worker.refused_tick() && !p.worker.holds_counts());
    assert_eq!(
        host.metric_now("meshguard.requests_total.route.web.variant.none.code_class.none"),
        3
    );
    let warnings = host
        .logs
        .borrow()
        .iter()
        .filter(|(l, m)| *l == Level::Warn && m.contains("cannot set the tick"))
        .count();
    assert_eq!(warnings, 1);
    let attempts = host
        .calls
        .borrow()
        .iter()
        .filter(|c| c.starts_with("set_tick_period"))
        .count();
    assert_eq!(attempts, 1);
}

#[test]
fn immediate_counters_need_no_tick() {
    let json =
        r#"{"schemaVersion":1,"metrics":{"counters":"immediate"},"routes":[{"name":"web"}]}"#;
    let host = FakeHost::new();
    let p = plugin(json, &host);
    assert!(!p.needs_tick());
    let s = on_request_headers(&host, &p, &rng(1)).state;
    on_log(&host, &p, &s);
    assert_eq!(host.tick_period_ms.get(), None);
    assert_eq!(
        host.metric_now("meshguard.requests_total.route.web.variant.none.code_class.none"),
        1
    );
    assert!(!Worker::default().holds_counts());
}

#[test]
fn a_long_stream_ending_after_the_tick_stopped_starts_it_again() {
    let host = FakeHost::new().at(1_000 * MS);
    let p = plugin(METRICS, &host);
    assert!(p.worker.set_tick(&host, TICK_MS));
    // A WebSocket-like stream starts; its +1 is handed over, then nothing happens
    // for more than a second and the tick stops.
    let s = on_request_headers(&host, &p, &rng(1)).state;
    ticks(&host, &p, IDLE_TICKS + 1);
    assert!(!p.worker.ticking());
    assert_eq!(host.metric_now("meshguard.requests_in_flight.route.web"), 1);
    // It ends: its counts wait, so the tick starts again and hands them over.
    host.calls.borrow_mut().clear();
    on_log(&host, &p, &s);
    assert!(p.worker.ticking());
    assert!(host
        .calls
        .borrow()
        .contains(&"set_tick_period(50)".to_string()));
    ticks(&host, &p, 1);
    assert_eq!(host.metric_now("meshguard.requests_in_flight.route.web"), 0);
    assert_eq!(
        host.metric_now("meshguard.requests_total.route.web.variant.none.code_class.none"),
        1
    );
}

#[test]
fn a_retired_configuration_hands_over_what_it_holds_and_counts_its_last_streams_at_once() {
    use crate::glue::request::retire;
    const BREAKER: &str = r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{}}]}"#;
    let host = FakeHost::new().at(1_000 * MS).with_config(BREAKER);
    let p = configure(&host, Default::default()).unwrap();
    assert!(p.worker.set_tick(&host, TICK_MS));
    let total = "meshguard.requests_total.route.web.variant.none.code_class.none";
    let send = || {
        let s = on_request_headers(&host, &p, &rng(1)).state;
        on_log(&host, &p, &s);
    };
    for _ in 0..3 {
        send();
    }
    // Held by the worker and the breaker until the next tick...
    assert_eq!(host.metric_now(total), 0);
    assert_eq!(p.routes[0].breakers[0].local.borrow().pending(), 3);
    // ...which never comes: Envoy is done with this root context.
    retire(&host, &p);
    assert_eq!(host.metric_now(total), 3);
    assert_eq!(p.routes[0].breakers[0].local.borrow().pending(), 0);
    assert!(!p.worker.ticking());
    // A stream of this configuration that ends later is counted at once, and its
    // breaker outcome written at once.
    send();
    assert_eq!(host.metric_now(total), 4);
    assert_eq!(p.routes[0].breakers[0].local.borrow().pending(), 0);
}

#[test]
fn a_host_that_keeps_batched_counts_gets_them_and_the_worker_holds_none() {
    let host = FakeHost::new().at(1_000 * MS);
    host.keeps_counts.set(true);
    let p = plugin(METRICS, &host);
    let s = on_request_headers(&host, &p, &rng(1)).state;
    on_log(&host, &p, &s);
    assert!(!p.worker.holds_counts(), "the host took every count");
    let requests = p
        .runtime
        .red(meshguard_engine::RedSlot::Route(0))
        .map(|r| r.in_flight);
    let kept = host.kept.borrow().clone();
    // The in-flight gauge's +1 and -1, and the request's count, all to the host.
    assert_eq!(
        kept.iter().filter(|(id, _)| Some(*id) == requests).count(),
        2
    );
    assert_eq!(kept.iter().map(|(_, d)| d).sum::<i64>(), 1);
    assert_eq!(
        host.metric_now("meshguard.requests_total.route.web.variant.none.code_class.none"),
        0,
        "nothing went to Envoy from the worker"
    );
    // Unbatched counts still go to Envoy at once.
    let immediate = FakeHost::new();
    immediate.keeps_counts.set(true);
    let json =
        r#"{"schemaVersion":1,"metrics":{"counters":"immediate"},"routes":[{"name":"web"}]}"#;
    let p = plugin(json, &immediate);
    let s = on_request_headers(&immediate, &p, &rng(1)).state;
    on_log(&immediate, &p, &s);
    assert!(immediate.kept.borrow().is_empty());
    assert_eq!(
        immediate.metric_now("meshguard.requests_total.route.web.variant.none.code_class.none"),
        1
    );
}

#[test]
fn a_host_that_keeps_the_batched_counts_needs_the_tick_only_for_breakers_and_rollouts() {
    const BREAKER: &str = r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{}}]}"#;
    let host = FakeHost::new();
    // Batched counts alone: the worker's tick hands them over, unless the host keeps them.
    let counts = plugin(METRICS, &host);
    assert!(counts.needs_tick());
    assert!(counts.needs_tick_keeping(false));
    assert!(!counts.needs_tick_keeping(true));
    // A breaker or a rollout needs the tick whoever keeps the counts.
    for json in [BREAKER, ANALYSIS] {
        let p = plugin(json, &host);
        assert!(p.needs_tick_keeping(true), "{json}");
        assert!(p.needs_tick_keeping(false), "{json}");
    }
}
