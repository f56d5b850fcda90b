//! gRPC through the fake host: statuses from trailers or a trailers-only answer
//! decide outcomes, `protocol: grpc` routes count by gRPC status, meshguard's own
//! replies to gRPC requests are gRPC, and long streams keep out of the latency
//! histogram.

use meshguard_engine::StreamState;

use super::{plugin, rng};
use crate::glue::plugin::Plugin;
use crate::glue::request::{on_log, on_request_headers, on_response_headers, on_response_trailers};
use crate::host::fake::FakeHost;

const SEC: u64 = 1_000_000_000;
const GRPC: &[u8] = b"application/grpc";

/// How the upstream answers a call.
#[derive(Clone, Copy)]
enum Answer {
    /// HTTP 200, then trailers with this `grpc-status`.
    Trailers(u32),
    /// HTTP 200 with `grpc-status` in the headers, nothing else.
    TrailersOnly(u32),
    /// HTTP 200 headers, then the stream is reset (no trailers).
    Reset,
    /// Plain HTTP with this status.
    Http(u64),
}

/// One call through a fresh stream of `world` at `now`.
fn call(p: &Plugin, world: &FakeHost, now: u64, answer: Answer) -> (StreamState, FakeHost) {
    let h = world
        .stream()
        .at(now)
        .with_header(":path", b"/svc.Echo/Get")
        .with_header("content-type", GRPC);
    let mut s = on_request_headers(&h, p, &rng(3)).state;
    if s.rejected {
        on_log(&h, p, &s);
        return (s, h);
    }
    let status = match answer {
        Answer::Http(code) => code,
        _ => 200,
    };
    h.response_headers
        .borrow_mut()
        .push((":status".into(), status.to_string().into_bytes()));
    if let Answer::TrailersOnly(code) = answer {
        h.response_headers
            .borrow_mut()
            .push(("grpc-status".into(), code.to_string().into_bytes()));
    }
    let only_headers = matches!(answer, Answer::TrailersOnly(_) | Answer::Http(_));
    h.now.set(now + 5_000_000);
    on_response_headers(&h, p, &mut s, only_headers);
    if let Answer::Trailers(code) = answer {
        h.response_trailers
            .borrow_mut()
            .push(("grpc-status".into(), code.to_string().into_bytes()));
        on_response_trailers(&h, p, &mut s);
    }
    if let Answer::Reset = answer {
        h.properties
            .borrow_mut()
            .push(("response.flags".into(), 0x10)); // upstream remote reset
    }
    h.now.set(now + 20_000_000);
    on_log(&h, p, &s);
    (s, h)
}

const BREAKER: &str = r#"{"schemaVersion":1,"routes":[{"name":"rpc","protocol":"grpc",
    "breaker":{"consecutiveFailures":3,"openDurationMs":5000}}]}"#;

fn grpc_count(world: &FakeHost, status: &str) -> i64 {
    world.metric(&format!(
        "meshguard.grpc_requests_total.route.rpc.variant.none.grpc_status.{status}"
    ))
}

#[test]
fn grpc_failures_from_trailers_or_headers_open_the_breaker_and_ok_does_not() {
    let world = FakeHost::new();
    let p = plugin(BREAKER, &world);
    // OK in trailers and trailers-only, and a client error: no failures.
    for (i, a) in [
        Answer::Trailers(0),
        Answer::TrailersOnly(0),
        Answer::Trailers(5),
    ]
    .into_iter()
    .enumerate()
    {
        assert!(!call(&p, &world, SEC + i as u64, a).0.rejected);
    }
    // UNAVAILABLE in trailers, DEADLINE_EXCEEDED trailers-only, a reset: three in a row.
    for (i, a) in [Answer::Trailers(14), Answer::TrailersOnly(4), Answer::Reset]
        .into_iter()
        .enumerate()
    {
        assert!(!call(&p, &world, 2 * SEC + i as u64, a).0.rejected);
    }
    assert_eq!(
        world.metric("meshguard.breaker_state.route.rpc.variant.all"),
        2
    );
    // Open: the gRPC client gets UNAVAILABLE with the body as message.
    let (s, h) = call(&p, &world, 3 * SEC, Answer::Trailers(0));
    assert!(s.rejected);
    let replies = h.replies.borrow();
    let (status, headers, body) = &replies[0];
    assert_eq!(*status, 200);
    assert!(body.is_empty());
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("grpc-status"), Some("14"));
    assert_eq!(get("grpc-message"), Some("circuit open"));
    // Opened at 2.02 s for 5 s: 4.02 s left, rounded up to whole seconds as in
    // `retry-after`.
    assert_eq!(get("grpc-retry-pushback-ms"), Some("5000"));
    assert_eq!(get("content-type"), None, "Envoy sets application/grpc");
    drop(replies);
    // Counted by gRPC status (the rejection too: Envoy's reply passes back
    // through meshguard as a 200 with grpc-status 14 only in Envoy, not here).
    assert_eq!(grpc_count(&world, "OK"), 2);
    assert_eq!(grpc_count(&world, "NOT_FOUND"), 1);
    assert_eq!(grpc_count(&world, "UNAVAILABLE"), 1);
    assert_eq!(grpc_count(&world, "DEADLINE_EXCEEDED"), 1);
    assert_eq!(grpc_count(&world, "none"), 2, "the reset and the rejection");
}

#[test]
fn failure_codes_are_configurable_and_http_routes_ignore_grpc_status() {
    let own = r#"{"schemaVersion":1,"routes":[{"name":"rpc",
        "breaker":{"consecutiveFailures":2,"failureGrpcCodes":["NOT_FOUND"]}}]}"#;
    let world = FakeHost::new();
    let p = plugin(own, &world);
    call(&p, &world, SEC, Answer::Trailers(14));
    call(&p, &world, SEC + 1, Answer::Trailers(14));
    assert_eq!(
        world.metric("meshguard.breaker_state.route.rpc.variant.all"),
        0
    );
    call(&p, &world, SEC + 2, Answer::Trailers(5));
    call(&p, &world, SEC + 3, Answer::TrailersOnly(5));
    assert_eq!(
        world.metric("meshguard.breaker_state.route.rpc.variant.all"),
        2
    );

    let http = r#"{"schemaVersion":1,"routes":[{"name":"rpc","protocol":"http",
        "breaker":{"consecutiveFailures":2}}]}"#;
    let world = FakeHost::new();
    let p = plugin(http, &world);
    let (_, h) = call(&p, &world, SEC, Answer::Trailers(14));
    call(&p, &world, SEC + 1, Answer::TrailersOnly(14));
    assert_eq!(
        world.metric("meshguard.breaker_state.route.rpc.variant.all"),
        0
    );
    assert!(!h.calls.borrow().iter().any(|c| c.contains("grpc-status")));
    // Its HTTP statuses still count.
    call(&p, &world, SEC + 2, Answer::Http(503));
    call(&p, &world, SEC + 3, Answer::Http(503));
    assert_eq!(
        world.metric("meshguard.breaker_state.route.rpc.variant.all"),
        2
    );
}

#[test]
fn a_rate_limited_grpc_call_is_resource_exhausted_and_plain_http_stays_429() {
    let json = r#"{"schemaVersion":1,"routes":[{"name":"rpc"}],"rateLimits":[{"name":"one",
        "limit":{"burst":1,"rate":1,"per":"hour"}}]}"#;
    let world = FakeHost::new();
    let p = plugin(json, &world);
    assert!(!call(&p, &world, SEC, Answer::Trailers(0)).0.rejected);
    let (s, h) = call(&p, &world, SEC + 1, Answer::Trailers(0));
    assert!(s.rejected);
    let replies = h.replies.borrow();
    let headers = &replies[0].1;
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get("grpc-status").as_deref(), Some("8"));
    assert_eq!(get("grpc-message").as_deref(), Some("rate limited"));
    assert!(get("grpc-retry-pushback-ms").is_some_and(|v| v.parse::<u64>().unwrap() >= 1000));
    assert!(get("ratelimit").is_some(), "the RateLimit fields stay");
    // The same request without a gRPC content-type gets the HTTP reply.
    let plain = world.stream().at(SEC + 2).with_header(":path", b"/");
    let s = on_request_headers(&plain, &p, &rng(1)).state;
    assert!(s.rejected);
    assert_eq!(plain.replies.borrow()[0].0, 429);
    assert_eq!(plain.replies.borrow()[0].2, b"rate limited\n");
}

#[test]
fn a_policy_names_its_own_grpc_status() {
    let json = r#"{"schemaVersion":1,"routes":[{"name":"rpc"}],"rateLimits":[{"name":"one",
        "limit":{"burst":1,"rate":1,"per":"hour"},
        "response":{"grpcStatus":"UNAVAILABLE","body":"slow down"}}]}"#;
    let world = FakeHost::new();
    let p = plugin(json, &world);
    call(&p, &world, SEC, Answer::Trailers(0));
    let (_, h) = call(&p, &world, SEC + 1, Answer::Trailers(0));
    let replies = h.replies.borrow();
    let headers = &replies[0].1;
    assert!(headers.contains(&("grpc-status".into(), "14".into())));
    assert!(headers.contains(&("grpc-message".into(), "slow down".into())));
}

#[test]
fn upgrades_and_long_streams_keep_out_of_the_latency_histogram() {
    let json = r#"{"schemaVersion":1,"routes":[
        {"name":"ws","match":{"pathPrefix":"/ws"}},
        {"name":"sse","match":{"pathPrefix":"/events"},"latency":"headers"},
        {"name":"rpc"}]}"#;
    let world = FakeHost::new();
    let p = plugin(json, &world);
    let stream = |path: &[u8], status: &[u8], headers_at: u64, end_at: u64| {
        let h = world.stream().at(SEC).with_header(":path", path);
        let mut s = on_request_headers(&h, &p, &rng(1)).state;
        h.response_headers
            .borrow_mut()
            .push((":status".into(), status.to_vec()));
        h.now.set(SEC + headers_at);
        on_response_headers(&h, &p, &mut s, false);
        s.response_complete = true;
        h.now.set(SEC + end_at);
        on_log(&h, &p, &s);
        h
    };
    let recorded = |world: &FakeHost| world.world().recorded.borrow().clone();
    // A WebSocket session of 9 s: counted as 1xx, no duration.
    stream(b"/ws", b"101", 2_000_000, 9 * SEC);
    assert!(recorded(&world).is_empty());
    assert_eq!(
        world.metric("meshguard.requests_total.route.ws.variant.none.code_class.1xx"),
        1
    );
    // Server-sent events for 9 s, `latency: headers`: 3 ms to the response.
    stream(b"/events", b"200", 3_000_000, 9 * SEC);
    assert_eq!(
        recorded(&world).iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        [3]
    );
    // Any other route: to the stream's end.
    stream(b"/rpc", b"200", 3_000_000, 40_000_000);
    assert_eq!(recorded(&world).last().map(|(_, v)| *v), Some(40));
}
