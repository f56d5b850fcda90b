use meshguard_engine::StreamState;

use super::{plugin, rng};
use crate::glue::plugin::Plugin;
use crate::glue::request::{on_log, on_request_headers, on_response_headers};
use crate::host::fake::FakeHost;

fn config(json: &str) -> Plugin {
    plugin(json, &FakeHost::new())
}

fn run(host: &FakeHost, c: &Plugin) -> StreamState {
    on_request_headers(host, c, &rng(7)).state
}

const CANARY: &str = r#"{"schemaVersion":1,"routeHeader":"x-meshguard-route","routes":[
  {"name":"web","match":{"pathPrefix":"/"},"canary":{
    "variants":[{"name":"stable","cluster":"web-v1","weight":10000},{"name":"canary","cluster":"web-v2","weight":0}],
    "rules":[{"variant":"canary","header":{"name":"x-user-type","exact":"beta-tester"}}],
    "respondWithVariant":true}}]}"#;

#[test]
fn matched_route_is_told_upstream_and_client_copy_replaced() {
    let c = config(
        r#"{"schemaVersion":1,"routeHeader":"x-meshguard-route","routes":[{"name":"api","match":{"pathPrefix":"/api"}}]}"#,
    );
    let host = FakeHost::new()
        .with_header(":path", b"/api/x")
        .with_header("x-meshguard-route", b"spoofed");
    assert_eq!(run(&host, &c).route, Some(0));
    assert_eq!(
        host.header_values("x-meshguard-route"),
        vec![b"api".to_vec()]
    );
}

#[test]
fn unmatched_request_passes_but_client_copy_is_removed() {
    let c = config(
        r#"{"schemaVersion":1,"routeHeader":"x-meshguard-route","routes":[{"name":"api","match":{"pathPrefix":"/api"}}]}"#,
    );
    let host = FakeHost::new()
        .with_header(":path", b"/web")
        .with_header("x-meshguard-route", b"api");
    assert_eq!(run(&host, &c).route, None);
    assert!(host.header_values("x-meshguard-route").is_empty());
}

#[test]
fn without_route_header_or_canary_nothing_is_written() {
    let c = config(r#"{"schemaVersion":1,"routes":[{"name":"all"}]}"#);
    let host = FakeHost::new()
        .with_header("x-meshguard-route", b"keep")
        .with_header("x-meshguard-variant", b"keep");
    assert_eq!(run(&host, &c).route, Some(0));
    assert_eq!(
        host.header_values("x-meshguard-route"),
        vec![b"keep".to_vec()]
    );
    assert_eq!(
        host.header_values("x-meshguard-variant"),
        vec![b"keep".to_vec()]
    );
    assert!(
        host.reads.borrow().is_empty(),
        "no condition, so no header read"
    );
    assert_eq!(host.route_cache_clears.get(), 0);
}

#[test]
fn a_failing_header_read_counts_as_absent_and_is_logged() {
    let c = config(
        r#"{"schemaVersion":1,"routes":[
            {"name":"beta","match":{"headers":[{"name":"x-user-type","exact":"beta"}]}},
            {"name":"rest"}]}"#,
    );
    let host = FakeHost::new()
        .with_header("x-user-type", b"beta")
        .failing_read("x-user-type");
    assert_eq!(run(&host, &c).route, Some(1));
    assert_eq!(host.logs.borrow().len(), 1);
    assert!(host.logs.borrow()[0]
        .1
        .contains("treating the header as absent"));
}

#[test]
fn each_header_is_read_at_most_once_per_request() {
    let c = config(
        r#"{"schemaVersion":1,"routes":[
            {"name":"a","match":{"headers":[{"name":"x-k","exact":"1"}]}},
            {"name":"b","match":{"headers":[{"name":"x-k","exact":"2"}]}},
            {"name":"c","match":{"headers":[{"name":"x-k","present":true}]}}]}"#,
    );
    let host = FakeHost::new().with_header("x-k", b"3");
    assert_eq!(run(&host, &c).route, Some(2));
    assert_eq!(*host.reads.borrow(), vec!["x-k".to_string()]);
}

#[test]
fn route_cache_clear_asks_envoy_explicitly_and_auto_leaves_it_to_the_host() {
    let c = config(&CANARY.replacen('{', r#"{"routeCache":"clear","#, 1));
    let host = FakeHost::new()
        .with_header(":path", b"/")
        .with_header("x-user-type", b"beta-tester");
    run(&host, &c);
    assert_eq!(host.route_cache_clears.get(), 1);
    // `auto`: a host whose Envoy re-picks the route by itself (the fake, as
    // a Proxy-Wasm module of ABI 0.2.1) is not asked; one whose Envoy does not
    // (a dynamic module) is.
    let auto = config(CANARY);
    for (native, clears) in [(false, 0), (true, 1)] {
        let host = FakeHost::new()
            .with_header(":path", b"/")
            .with_header("x-user-type", b"beta-tester");
        host.no_auto_route_cache.set(native);
        run(&host, &auto);
        assert_eq!(host.route_cache_clears.get(), clears, "native: {native}");
    }
}

#[test]
fn canary_choice_sets_variant_and_cluster_headers_and_lets_envoy_repick_the_route() {
    let c = config(CANARY);
    let host = FakeHost::new()
        .with_header(":path", b"/")
        .with_header("x-user-type", b"beta-tester")
        .with_header("x-meshguard-cluster", b"evil");
    let state = run(&host, &c);
    assert_eq!(state.variant, Some(1));
    assert_eq!(
        host.header_values("x-meshguard-variant"),
        vec![b"canary".to_vec()]
    );
    assert_eq!(
        host.header_values("x-meshguard-cluster"),
        vec![b"web-v2".to_vec()]
    );
    // Envoy clears the route cache on the header edits by itself (the fake
    // is a Proxy-Wasm module of ABI 0.2.1).
    assert_eq!(host.route_cache_clears.get(), 0);
    let mut state = state;
    on_response_headers(&host, &c, &mut state, false);
    assert_eq!(
        host.response_values("x-meshguard-variant"),
        vec![b"canary".to_vec()]
    );
}

#[test]
fn spoofed_variant_header_from_an_untrusted_caller_is_overwritten() {
    let c = config(CANARY);
    let host = FakeHost::new()
        .with_header(":path", b"/")
        .with_header("x-meshguard-variant", b"canary")
        .from_address("203.0.113.1:9");
    assert_eq!(run(&host, &c).variant, Some(0));
    assert_eq!(
        host.header_values("x-meshguard-variant"),
        vec![b"stable".to_vec()]
    );
}

#[test]
fn requests_outside_canary_routes_lose_client_copies_of_routing_headers() {
    let c = config(
        r#"{"schemaVersion":1,"routes":[
          {"name":"api","match":{"pathPrefix":"/api"}},
          {"name":"web","canary":{"variants":[{"name":"stable","weight":10000},{"name":"canary"}]}}]}"#,
    );
    let host = FakeHost::new()
        .with_header(":path", b"/api")
        .with_header("x-meshguard-variant", b"canary")
        .with_header("x-meshguard-cluster", b"canary");
    let state = run(&host, &c);
    assert_eq!((state.route, state.variant), (Some(0), None));
    assert!(host.header_values("x-meshguard-variant").is_empty());
    assert!(host.header_values("x-meshguard-cluster").is_empty());
}

#[test]
fn a_fresh_sticky_cookie_is_issued_once_and_pins_the_next_request() {
    let c = config(
        r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
            "variants":[{"name":"stable","weight":5000},{"name":"canary","weight":5000}],
            "sticky":{"cookie":"mg-user","issueCookie":{"maxAgeSeconds":3600}}}}]}"#,
    );
    let host = FakeHost::new();
    let state = run(&host, &c);
    let cookie = state.set_cookie.clone().expect("a cookie is issued");
    assert!(cookie.starts_with("mg-user="), "{cookie}");
    assert!(
        cookie.ends_with("; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax; Secure"),
        "{cookie}"
    );
    let mut state = state;
    on_response_headers(&host, &c, &mut state, false);
    assert_eq!(
        host.response_values("set-cookie"),
        vec![cookie.clone().into_bytes()]
    );
    // The browser sends it back: same variant, no new cookie, whatever the roll.
    let value = cookie.split(';').next().unwrap().to_string();
    for seed in 0..20 {
        let back = FakeHost::new().with_header("cookie", value.as_bytes());
        let again = on_request_headers(&back, &c, &rng(seed)).state;
        assert_eq!(again.variant, state.variant);
        assert_eq!(again.set_cookie, None);
    }
}

fn red_run(p: &Plugin, world: &FakeHost, headers: &[(&str, &[u8])], code: u64, ms: u64) {
    let mut h = world.stream();
    for (k, v) in headers {
        h = h.with_header(k, v);
    }
    h.now.set(1_000_000_000);
    let s = on_request_headers(&h, p, &rng(2)).state;
    h.now.set(1_000_000_000 + ms * 1_000_000);
    if code > 0 {
        h.properties
            .borrow_mut()
            .push(("response.code".into(), code));
    }
    on_log(&h, p, &s);
}

#[test]
fn red_metrics_count_by_route_variant_and_class_and_time_each_request() {
    let world = FakeHost::new();
    let p = plugin(CANARY, &world);
    red_run(&p, &world, &[(":path", b"/")], 200, 35);
    red_run(
        &p,
        &world,
        &[(":path", b"/"), ("x-user-type", b"beta-tester")],
        503,
        7,
    );
    red_run(&p, &world, &[(":path", b"/")], 0, 1);
    let m = |v: &str, c: &str| {
        world.metric(&format!(
            "meshguard.requests_total.route.web.variant.{v}.code_class.{c}"
        ))
    };
    assert_eq!(
        (
            m("stable", "2xx"),
            m("canary", "5xx"),
            m("stable", "none"),
            m("stable", "5xx")
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(world.metric("meshguard.requests_in_flight.route.web"), 0);
    let durations: Vec<u64> = world
        .world()
        .recorded
        .borrow()
        .iter()
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(durations, vec![35, 7, 1]);
}

#[test]
fn unmatched_requests_count_under_other_or_are_skipped() {
    let world = FakeHost::new();
    let json = r#"{"schemaVersion":1,"routes":[{"name":"api","match":{"pathPrefix":"/api"}}]}"#;
    let p = plugin(json, &world);
    red_run(&p, &world, &[(":path", b"/x")], 404, 1);
    assert_eq!(
        world.metric("meshguard.requests_total.route.other.variant.none.code_class.4xx"),
        1
    );
    let skip = FakeHost::new();
    let json = r#"{"schemaVersion":1,"metrics":{"unmatched":"skip"},"routes":[{"name":"api","match":{"pathPrefix":"/api"}}]}"#;
    let p = plugin(json, &skip);
    red_run(&p, &skip, &[(":path", b"/x")], 404, 1);
    assert!(!skip
        .world()
        .metrics
        .borrow()
        .iter()
        .any(|(n, _, _)| n.contains("route.other")));
}

#[test]
fn a_clock_failure_is_logged_and_skips_limits_and_breakers_but_not_routing() {
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
            "variants":[{"name":"stable","weight":0},{"name":"canary","weight":10000}]},
            "breaker":{"consecutiveFailures":1}}],
            "rateLimits":[{"name":"none-left","key":[],"limit":{"burst":1,"rate":1,"per":"hour"}}]}"#,
        &world,
    );
    let broken = || {
        let h = world.stream();
        h.clock_fails.set(true);
        h
    };
    for _ in 0..3 {
        let h = broken();
        let s = run(&h, &p);
        assert!(!s.rejected, "no limit applied without a clock");
        assert_eq!((s.variant, s.ticket, s.start_ns), (Some(1), None, None));
        assert_eq!(
            h.header_values("x-meshguard-variant"),
            vec![b"canary".to_vec()]
        );
        assert!(
            h.logs
                .borrow()
                .iter()
                .any(|(l, m)| *l == crate::host::Level::Warn
                    && m.contains("the clock is unavailable"))
        );
        on_log(&h, &p, &s);
    }
    assert_eq!(
        world.metric("meshguard.ratelimit_requests_total.policy.none-left.outcome.allowed"),
        0,
        "not charged"
    );
    assert_eq!(
        world.metric("meshguard.requests_total.route.web.variant.canary.code_class.none"),
        3,
        "still counted"
    );
    assert!(world.world().recorded.borrow().is_empty(), "no duration");
}
