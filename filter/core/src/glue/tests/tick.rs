//! The tick runs while something is pending and stops after a second of nothing;
//! the next request starts it again, ticking once first.

use super::{plugin, rng};
use crate::glue::configure::configure;
use crate::glue::request::{on_log, on_request_headers};
use crate::glue::tick::{on_tick, wake};
use crate::glue::worker::IDLE_TICKS;
use crate::glue::worker::TICK_MS;
use crate::host::fake::FakeHost;
use crate::host::{Level, Metrics};

const MS: u64 = 1_000_000;
const METRICS: &str = r#"{"schemaVersion":1,"routes":[{"name":"web"}]}"#;
const ANALYSIS: &str = r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
    "variants":[{"name":"stable","weight":5000},{"name":"canary","weight":5000}],
    "revision":"v2","analysis":{"minRequests":10}}}]}"#;

fn ticks(host: &FakeHost, p: &crate::glue::plugin::Plugin, n: u32) {
    for _ in 0..n {
        host.now.set(host.now.get() + TICK_MS * MS);
        on_tick(host, p);
        host.flush_counts(); // as the Wasm root context's tick does
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
    wake(&host, &p); // as each host does before the request is decided
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
        let s = on_request_headers(&host, &p, &rng(1)).state;
        on_log(&host, &p, &s);
        assert!(host.holds_counts());
        ticks(&host, &p, 1);
        assert!(!host.holds_counts());
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
    const BREAKER: &str = r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{}}]}"#;
    let host = FakeHost::new().at(1_000 * MS);
    host.tick_fails.set(true);
    let p = plugin(BREAKER, &host);
    for _ in 0..3 {
        wake(&host, &p);
        let s = on_request_headers(&host, &p, &rng(1)).state;
        on_log(&host, &p, &s);
    }
    assert!(p.worker.refused_tick() && !host.holds_counts());
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
    assert_eq!(attempts, 1, "{:?}", host.calls.borrow());
    // A host whose own timer is refused (the core asked for none) counts at
    // once too.
    let quiet = FakeHost::new().at(1_000 * MS);
    quiet.tick_fails.set(true);
    let p = plugin(METRICS, &quiet);
    for _ in 0..2 {
        let s = on_request_headers(&quiet, &p, &rng(1)).state;
        on_log(&quiet, &p, &s);
    }
    assert!(!quiet.holds_counts() && !p.worker.refused_tick());
    assert_eq!(
        quiet.metric_now("meshguard.requests_total.route.web.variant.none.code_class.none"),
        2
    );
}

#[test]
fn immediate_counters_need_no_tick() {
    let json =
        r#"{"schemaVersion":1,"metrics":{"counters":"immediate"},"routes":[{"name":"web"}]}"#;
    let host = FakeHost::new();
    let p = plugin(json, &host);
    assert!(!p.runtime.needs_tick());
    let s = on_request_headers(&host, &p, &rng(1)).state;
    on_log(&host, &p, &s);
    assert_eq!(host.tick_period_ms.get(), None);
    assert_eq!(
        host.metric_now("meshguard.requests_total.route.web.variant.none.code_class.none"),
        1
    );
    assert!(!host.holds_counts());
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
    use crate::glue::tick::retire;
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
    assert_eq!(p.runtime.routes[0].breakers[0].local.borrow().pending(), 3);
    // ...which never comes: Envoy is done with this root context.
    retire(&host, &p);
    host.write_counts_at_once(); // as the Wasm root context's `on_done` does
    assert_eq!(host.metric_now(total), 3);
    assert_eq!(p.runtime.routes[0].breakers[0].local.borrow().pending(), 0);
    assert!(!p.worker.ticking());
    // A stream of this configuration that ends later is counted at once, and its
    // breaker outcome written at once.
    send();
    assert_eq!(host.metric_now(total), 4);
    assert_eq!(p.runtime.routes[0].breakers[0].local.borrow().pending(), 0);
}

#[test]
fn a_host_that_writes_counts_at_once_leaves_the_tick_to_breakers_and_rollouts() {
    // As the native build: its counts go to Envoy without a worker's tick.
    let host = FakeHost::new().at(1_000 * MS);
    host.write_counts_at_once();
    let p = plugin(METRICS, &host);
    assert!(!p.runtime.needs_tick());
    let s = on_request_headers(&host, &p, &rng(1)).state;
    on_log(&host, &p, &s);
    assert!(!host.holds_counts());
    assert_eq!(host.tick_period_ms.get(), None, "nothing asked for a tick");
    assert_eq!(
        host.metric_now("meshguard.requests_total.route.web.variant.none.code_class.none"),
        1
    );
    // A breaker or a rollout needs the tick whoever keeps the counts.
    const BREAKER: &str = r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{}}]}"#;
    for json in [BREAKER, ANALYSIS] {
        assert!(plugin(json, &host).runtime.needs_tick(), "{json}");
    }
}

#[test]
fn counts_a_host_holds_start_its_timer_as_the_request_is_decided() {
    let host = FakeHost::new().at(1_000 * MS);
    let p = plugin(METRICS, &host);
    let stream = on_request_headers(&host, &p, &rng(1));
    assert!(host.holds_counts(), "the in-flight gauge's +1");
    assert_eq!(host.tick_period_ms.get(), Some(TICK_MS));
    assert!(host.world().counts.timer());
    assert!(!p.worker.ticking(), "the core itself needs no tick");
    on_log(&host, &p, &stream.state);
}
