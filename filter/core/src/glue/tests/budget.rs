//! Host calls per request, for the configurations `make bench` measures (the same
//! JSON as bench/bench.py). A call that hands bytes back costs about a microsecond
//! (`make bench BENCH_ARGS=--prices` measures each kind), so these lists are the
//! cost model: a change that adds a call to the request path fails here.

use super::{plugin, rng};
use crate::glue::request::{on_log, on_request_headers, on_response_headers};
use crate::host::fake::FakeHost;

const METRICS: &str = r#"{"schemaVersion": 1, "routes": [{"name": "web"}]}"#;
const CANARY: &str = r#"{"schemaVersion": 1, "routes": [{"name": "web", "canary": {"variants": [{"name": "stable", "weight": 9000}, {"name": "canary", "weight": 1000}], "sticky": {"header": "x-user-id"}}}]}"#;
const ANALYSIS: &str = r#"{"schemaVersion": 1, "routes": [{"name": "web", "canary": {"variants": [{"name": "stable", "weight": 9000}, {"name": "canary", "weight": 1000}], "sticky": {"header": "x-user-id"}, "revision": "bench", "analysis": {"slowCallMs": 1000}}}]}"#;
const RATELIMIT: &str = r#"{"schemaVersion": 1, "routes": [{"name": "web"}], "rateLimits": [{"name": "per-client", "key": [{"clientAddress": {}}], "limit": {"burst": 1000000000, "rate": 1000000000, "per": "second"}}]}"#;
const BREAKER: &str = r#"{"schemaVersion": 1, "routes": [{"name": "web", "breaker": {"consecutiveFailures": 1000}}]}"#;
const ALL: &str = r#"{"schemaVersion": 1, "routes": [{"name": "r0", "match": {"pathPrefix": "/r0"}, "canary": {"variants": [{"name": "stable", "weight": 9500}, {"name": "canary", "weight": 500}], "sticky": {"header": "x-user-id"}}, "breaker": {"failureRateThreshold": 50, "minimumCalls": 20}}, {"name": "r1", "match": {"pathPrefix": "/r1"}, "canary": {"variants": [{"name": "stable", "weight": 9500}, {"name": "canary", "weight": 500}], "sticky": {"header": "x-user-id"}}, "breaker": {"failureRateThreshold": 50, "minimumCalls": 20}}, {"name": "r2", "match": {"pathPrefix": "/r2"}, "canary": {"variants": [{"name": "stable", "weight": 9500}, {"name": "canary", "weight": 500}], "sticky": {"header": "x-user-id"}}, "breaker": {"failureRateThreshold": 50, "minimumCalls": 20}}, {"name": "r3", "match": {"pathPrefix": "/r3"}, "canary": {"variants": [{"name": "stable", "weight": 9500}, {"name": "canary", "weight": 500}], "sticky": {"header": "x-user-id"}}, "breaker": {"failureRateThreshold": 50, "minimumCalls": 20}}, {"name": "r4", "match": {"pathPrefix": "/r4"}, "canary": {"variants": [{"name": "stable", "weight": 9500}, {"name": "canary", "weight": 500}], "sticky": {"header": "x-user-id"}}, "breaker": {"failureRateThreshold": 50, "minimumCalls": 20}}, {"name": "r5", "match": {"pathPrefix": "/r5"}, "canary": {"variants": [{"name": "stable", "weight": 9500}, {"name": "canary", "weight": 500}], "sticky": {"header": "x-user-id"}}, "breaker": {"failureRateThreshold": 50, "minimumCalls": 20}}, {"name": "r6", "match": {"pathPrefix": "/r6"}, "canary": {"variants": [{"name": "stable", "weight": 9500}, {"name": "canary", "weight": 500}], "sticky": {"header": "x-user-id"}}, "breaker": {"failureRateThreshold": 50, "minimumCalls": 20}}, {"name": "r7", "match": {"pathPrefix": "/r7"}, "canary": {"variants": [{"name": "stable", "weight": 9500}, {"name": "canary", "weight": 500}], "sticky": {"header": "x-user-id"}}, "breaker": {"failureRateThreshold": 50, "minimumCalls": 20}}, {"name": "r8", "match": {"pathPrefix": "/r8"}, "canary": {"variants": [{"name": "stable", "weight": 9500}, {"name": "canary", "weight": 500}], "sticky": {"header": "x-user-id"}}, "breaker": {"failureRateThreshold": 50, "minimumCalls": 20}}, {"name": "r9", "match": {"pathPrefix": "/"}, "canary": {"variants": [{"name": "stable", "weight": 9500}, {"name": "canary", "weight": 500}], "sticky": {"header": "x-user-id"}}, "breaker": {"failureRateThreshold": 50, "minimumCalls": 20}}], "rateLimits": [{"name": "per-client", "key": [{"clientAddress": {}}], "limit": {"burst": 1000000000, "rate": 1000000000, "per": "second"}}, {"name": "per-route", "key": [{"route": true}], "limit": {"burst": 1000000000, "rate": 1000000000, "per": "second"}}]}"#;

/// Runs `requests` requests 20 µs apart (50,000/s, one worker) with bench's
/// headers; returns the calls of each request, numeric arguments (metric ids)
/// dropped and shared-data keys shortened to their kind.
fn calls(config: &str, requests: usize) -> Vec<Vec<String>> {
    let host = FakeHost::new()
        .with_header(":path", b"/")
        .with_header("x-user-id", b"bench-user")
        .from_address("127.0.0.1:5000");
    let plugin = plugin(config, &host);
    let rng = rng(1);
    (0..requests)
        .map(|i| {
            host.calls.borrow_mut().clear();
            host.now.set(1_000_000_000 + i as u64 * 20_000);
            let mut state = on_request_headers(&host, &plugin, &rng).state;
            host.response_headers.borrow_mut().clear();
            host.response_headers
                .borrow_mut()
                .push((":status".into(), b"200".to_vec()));
            on_response_headers(&host, &plugin, &mut state, false);
            state.response_complete = true; // the body's end of stream
            on_log(&host, &plugin, &state);
            host.calls
                .take()
                .into_iter()
                .map(|c| {
                    let name = c.split('(').next().unwrap_or_default().to_owned();
                    match name.as_str() {
                        "increment_metric" | "record_metric" | "now" => name,
                        "shared_get" | "shared_set" if c.contains(".rl2.") => {
                            format!("{name}(bucket)")
                        }
                        "shared_get" | "shared_set" if c.contains(".cb.") => {
                            format!("{name}(breaker)")
                        }
                        _ => c,
                    }
                })
                .collect()
        })
        .collect()
}

// The clock is read first (time is an argument of the decision), then whatever
// the decision reads, then the decision is applied: the header writes. Counters
// and the in-flight gauge are batched (handed to Envoy on the tick, see
// `the_tick_hands_over_one_count_per_metric`), and Envoy re-picks the route by
// itself after a header edit of a module of ABI 0.2.1.
const NOW: [&str; 1] = ["now"];
// A 200 response may be a gRPC answer: its `grpc-status` is looked for (absent
// here, the cheapest read) unless the route says `protocol: http`.
const RED_END: [&str; 4] = [
    "response_header(:status)",
    "response_header(grpc-status)",
    "now",
    "record_metric",
];

fn steady(config: &str) -> Vec<String> {
    calls(config, 3).pop().unwrap()
}

fn list(parts: &[&[&str]]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|p| p.iter().map(|s| s.to_string()))
        .collect()
}

/// `config` with top-level fields `extra` (JSON members) added.
fn with(config: &str, extra: &str) -> String {
    format!("{{{extra}, {}", config.trim_start().trim_start_matches('{'))
}

#[test]
fn metrics_alone_cost_the_status_read_the_clock_and_the_histogram() {
    assert_eq!(steady(METRICS), list(&[&NOW, &RED_END]));
}

#[test]
fn a_sticky_canary_reads_its_key_and_sets_two_routing_headers() {
    let read = ["request_header(x-user-id)"];
    let write = [
        "set_request_header(x-meshguard-variant)",
        "set_request_header(x-meshguard-cluster)",
    ];
    assert_eq!(steady(CANARY), list(&[&NOW, &read, &write, &RED_END]));
}

#[test]
fn the_old_calls_come_back_when_asked_for() {
    // Immediate counters: the in-flight gauge up and down and the request counter;
    // routeCache clear: the explicit re-pick; one routing header only.
    let config = with(
        &CANARY.replace(
            r#""routes""#,
            r#""metrics": {"counters": "immediate"}, "routes""#,
        ),
        r#""routeCache": "clear", "routingHeaders": "variant""#,
    );
    let want = [
        "now",
        "request_header(x-user-id)",
        "increment_metric",
        "set_request_header(x-meshguard-variant)",
        "clear_route_cache()",
        "response_header(:status)",
        "response_header(grpc-status)",
        "now",
        "increment_metric",
        "increment_metric",
        "record_metric",
    ];
    assert_eq!(steady(&config), list(&[&want]));
}

#[test]
fn an_http_route_does_not_look_for_grpc_status() {
    let config = METRICS.replace(r#""name": "web""#, r#""name": "web", "protocol": "http""#);
    let want = ["now", "response_header(:status)", "now", "record_metric"];
    assert_eq!(steady(&config), list(&[&want]));
}

#[test]
fn one_routing_header_is_one_write() {
    let config = with(CANARY, r#""routingHeaders": "cluster""#);
    let want = [
        "now",
        "request_header(x-user-id)",
        "set_request_header(x-meshguard-cluster)",
    ];
    assert_eq!(steady(&config), list(&[&want, &RED_END]));
}

#[test]
fn a_per_client_rate_limit_reads_the_address_and_spends_a_lease() {
    let read = ["property(source.address)"];
    assert_eq!(steady(RATELIMIT), list(&[&NOW, &read, &RED_END]));
}

#[test]
fn the_client_address_from_a_header_is_a_header_read() {
    let config = with(RATELIMIT, r#""clientAddress": {"header": "x-client-ip"}"#);
    let host = FakeHost::new()
        .with_header(":path", b"/")
        .with_header("x-client-ip", b"192.0.2.7");
    let plugin = plugin(&config, &host);
    let rng = rng(1);
    for _ in 0..3 {
        host.calls.borrow_mut().clear();
        let state = on_request_headers(&host, &plugin, &rng).state;
        on_log(&host, &plugin, &state);
    }
    let calls = host.calls.take();
    assert!(
        calls.contains(&"request_header(x-client-ip)".to_string()),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("property(source")),
        "{calls:?}"
    );
}

#[test]
fn a_cookie_and_query_key_reads_the_cookie_header_and_the_path_once_each() {
    let config = r#"{"schemaVersion": 1, "routes": [{"name": "web"}], "rateLimits": [{"name": "t", "key": [{"cookie": "tenant"}, {"query": "plan"}], "limit": {"burst": 1000000000, "rate": 1000000000, "per": "day"}}]}"#;
    let host = FakeHost::new()
        .with_header(":path", b"/?plan=x")
        .with_header("cookie", b"tenant=a");
    let plugin = plugin(config, &host);
    let rng = rng(1);
    for _ in 0..3 {
        host.calls.borrow_mut().clear();
        let state = on_request_headers(&host, &plugin, &rng).state;
        on_log(&host, &plugin, &state);
        let reads: Vec<String> = host
            .calls
            .take()
            .into_iter()
            .filter(|c| c.starts_with("request_header") || c.starts_with("property(source"))
            .collect();
        assert_eq!(reads, ["request_header(cookie)", "request_header(:path)"]);
    }
}

#[test]
fn a_cost_from_a_header_is_one_header_read_and_a_fixed_cost_none() {
    let config = |cost: &str| {
        format!(
            r#"{{"schemaVersion": 1, "routes": [{{"name": "web"}}], "rateLimits": [{{"name": "c", "cost": {cost}, "limit": {{"burst": 1000000000, "rate": 1000000000, "per": "second"}}}}]}}"#
        )
    };
    let reads = |config: &str| -> Vec<String> {
        let host = FakeHost::new()
            .with_header(":path", b"/")
            .with_header("x-cost", b"3");
        let plugin = plugin(config, &host);
        let rng = rng(1);
        let mut last = Vec::new();
        for _ in 0..3 {
            host.calls.borrow_mut().clear();
            let state = on_request_headers(&host, &plugin, &rng).state;
            on_log(&host, &plugin, &state);
            last = host
                .calls
                .take()
                .into_iter()
                .filter(|c| c.starts_with("request_header"))
                .collect();
        }
        last
    };
    assert_eq!(
        reads(&config(r#"{"header": "x-cost", "max": 10}"#)),
        ["request_header(x-cost)"]
    );
    assert!(reads(&config("3")).is_empty());
}

#[test]
fn three_headers_or_more_are_read_in_one_call() {
    // Path (routes), sticky key, and a rule header: `auto` reads them all at once.
    let config = r#"{"schemaVersion": 1, "routes": [{"name": "web", "match": {"pathPrefix": "/"}, "canary": {"variants": [{"name": "stable", "weight": 9000}, {"name": "canary", "weight": 1000}], "sticky": {"header": "x-user-id"}, "rules": [{"variant": "canary", "header": {"name": "x-beta", "exact": "1"}}]}}]}"#;
    let reads: Vec<String> = steady(config)
        .into_iter()
        .filter(|c| c.starts_with("request_header"))
        .collect();
    assert_eq!(reads, ["request_headers()"]);
    let each = with(config, r#""requestHeaders": "each""#);
    let reads: Vec<String> = steady(&each)
        .into_iter()
        .filter(|c| c.starts_with("request_header"))
        .collect();
    assert_eq!(
        reads,
        [
            "request_header(:path)",
            "request_header(x-beta)",
            "request_header(x-user-id)"
        ]
    );
}

#[test]
fn a_closed_breaker_touches_no_shared_data_between_batches() {
    assert_eq!(steady(BREAKER), list(&[&NOW, &RED_END]));
}

#[test]
fn all_features_on_ten_routes() {
    let all = [
        "now",
        "request_header(:path)",
        "property(source.address)",
        "request_header(x-user-id)",
        "set_request_header(x-meshguard-variant)",
        "set_request_header(x-meshguard-cluster)",
    ];
    assert_eq!(steady(ALL), list(&[&all, &RED_END]));
}

#[test]
fn a_decision_record_in_filter_state_is_one_call_and_an_unasked_header_none_extra() {
    let record = with(ALL, r#""explain": {"filterState": true}"#);
    let all = [
        "now",
        "request_header(:path)",
        "property(source.address)",
        "request_header(x-user-id)",
        "set_property(meshguard.decision)",
        "set_request_header(x-meshguard-variant)",
        "set_request_header(x-meshguard-cluster)",
    ];
    assert_eq!(steady(&record), list(&[&all, &RED_END]));
    // The ask header makes three headers to read: one call reads them all, and
    // nobody asked, so the address is read only for the rate limit, as before.
    let ask = with(
        ALL,
        r#""explain": {"trustedSources": ["10.0.0.0/8"], "header": true}"#,
    );
    let all = [
        "now",
        "request_headers()",
        "property(source.address)",
        "set_request_header(x-meshguard-variant)",
        "set_request_header(x-meshguard-cluster)",
    ];
    assert_eq!(steady(&ask), list(&[&all, &RED_END]));
}

#[test]
fn the_tick_hands_over_one_count_per_metric() {
    let host = FakeHost::new()
        .with_header(":path", b"/r3")
        .with_header("x-user-id", b"bench-user")
        .from_address("127.0.0.1:5000");
    let plugin = plugin(ALL, &host);
    let rng = rng(1);
    for i in 0..100u64 {
        host.now.set(1_000_000_000 + i * 20_000);
        let state = on_request_headers(&host, &plugin, &rng).state;
        on_log(&host, &plugin, &state);
    }
    host.calls.borrow_mut().clear();
    crate::glue::tick::on_tick(&host, &plugin);
    host.flush_counts(); // the Wasm host's part of its tick
    let increments = host
        .calls
        .take()
        .iter()
        .filter(|c| c.starts_with("increment_metric"))
        .count();
    // Two rate-limit outcome counters, one request counter (class `none`, no
    // response) and each policy's table-keys gauge (its one key took a fresh
    // slot); the in-flight gauge went up and down 100 times: no call.
    assert_eq!(increments, 5);
    assert_eq!(host.metric_now("meshguard.requests_in_flight.route.r3"), 0);
    assert_eq!(
        host.metric_now("meshguard.requests_total.route.r3.variant.stable.code_class.none"),
        100
    );
}

#[test]
fn shared_data_is_touched_once_per_lease_or_batch_not_per_request() {
    let runs = calls(ALL, 1_000);
    let count = |what: &str| runs.iter().flatten().filter(|c| *c == what).count();
    // Two policies: a key's first charge creates its slot with one token (looking
    // at all 4 candidate slots), then a lease of 16 tokens per write.
    let leases = 2 * (1 + 999_usize.div_ceil(16));
    assert_eq!(count("shared_set(bucket)"), leases);
    assert_eq!(count("shared_get(bucket)"), leases + 2 * 3);
    // The breaker (a window of 100 calls): outcomes written 5 at a time, and the
    // closed phase read again at most once a millisecond when no write refreshed it.
    assert_eq!(count("shared_set(breaker)"), 1_000 / 5);
    assert!(count("shared_get(breaker)") <= 1_000 / 5 + 20 + 1);
}

#[test]
fn the_canary_analysis_adds_no_host_call_to_a_request() {
    assert_eq!(steady(ANALYSIS), steady(CANARY));
}

#[test]
fn the_canary_analysis_costs_one_shared_data_round_trip_per_tick() {
    let host = FakeHost::new()
        .with_header(":path", b"/")
        .with_header("x-user-id", b"bench-user");
    let plugin = plugin(ANALYSIS, &host);
    let rng = rng(1);
    for tick in 1..=20u64 {
        for i in 0..50u64 {
            let h = host.stream().at(tick * 50_000_000 + i);
            let h = h
                .with_header(":path", b"/")
                .with_header("x-user-id", b"bench-user");
            let state = on_request_headers(&h, &plugin, &rng).state;
            on_log(&h, &plugin, &state);
        }
        let t = host.stream().at(tick * 50_000_000 + 49_000_000);
        crate::glue::tick::on_tick(&t, &plugin);
        let calls = t.calls.take();
        let gets = calls.iter().filter(|c| c.starts_with("shared_get")).count();
        let sets = calls.iter().filter(|c| c.starts_with("shared_set")).count();
        assert_eq!((gets, sets), (1, 1), "tick {tick}: {calls:?}");
    }
}
