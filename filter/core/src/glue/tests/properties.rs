//! Property tests (the request path's fuzz target): arbitrary header maps (any
//! bytes, spoofed routing headers, duplicates), caller addresses, failing header
//! reads and clocks, response statuses, gRPC statuses and response flags, driven
//! through the glue as Envoy drives it. Nothing panics, and every decision is one
//! the config allows: a reply is one of its statuses, the variant sent upstream is
//! one of its variants, a decision record parses.

use meshguard_config::report::Decision;
use proptest::prelude::*;

use super::{plugin, rng};
use crate::glue::request::{on_log, on_request_headers, on_response_headers, on_response_trailers};
use crate::glue::tick::on_tick;
use crate::host::fake::FakeHost;

const CONFIG: &str = r#"{"schemaVersion":1,"routeHeader":"x-meshguard-route",
  "explain":{"trustedSources":["10.0.0.0/8"],"filterState":true,"header":true,"statusPath":"/s"},
  "rateLimits":[{"name":"per-client","key":[{"clientAddress":{}}],"limit":{"burst":3,"rate":1,"per":"second"}}],
  "routes":[
    {"name":"api","match":{"pathPrefix":"/api"},
     "canary":{"variants":[{"name":"stable","cluster":"s","weight":9000},{"name":"canary","cluster":"c","weight":1000}],
               "rules":[{"header":{"name":"x-canary","exact":"1"},"variant":"canary"},
                        {"cookie":{"name":"pin","exact":"canary"},"variant":"canary"}],
               "sticky":{"header":"x-user"},"trustedSources":["10.0.0.0/8"],"revision":"r1",
               "analysis":{"minRequests":5}},
     "rateLimits":[{"name":"per-user","key":[{"header":"x-user"}],"limit":{"burst":2,"rate":1,"per":"hour"}}],
     "breaker":{"consecutiveFailures":2,"openDurationMs":1000,"maxConcurrent":3,"whenOpen":{"fallbackVariant":"stable"}},
     "protocol":"grpc"},
    {"name":"flaky","match":{"pathPrefix":"/f"},"breaker":{"consecutiveFailures":1,"openDurationMs":500}}
  ]}"#;

const NAMES: &[&str] = &[
    ":path",
    ":method",
    ":authority",
    "x-user",
    "x-canary",
    "cookie",
    "content-type",
    "x-meshguard-variant",
    "x-meshguard-cluster",
    "x-meshguard-explain",
    "x-meshguard-route",
];

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            &b"/api"[..],
            b"/api/x?q=1",
            b"/f",
            b"/s",
            b"/s?x",
            b"/",
            b"1",
            b"canary",
            b"stable",
            b"pin=canary",
            b"application/grpc",
            b"u1",
            b"u2",
            b"",
        ])
        .prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
}

#[derive(Debug, Clone)]
struct Request {
    headers: Vec<(String, Vec<u8>)>,
    source: Option<String>,
    failing: Option<String>,
    clock_fails: bool,
    at_ms: u64,
    status: Option<u16>,
    grpc: Option<Vec<u8>>,
    flags: u64,
    trailers: bool,
}

fn request() -> impl Strategy<Value = Request> {
    let name = prop_oneof![
        4 => prop::sample::select(NAMES).prop_map(str::to_string),
        1 => "[a-z-]{1,8}",
    ];
    let source = prop_oneof![
        Just(None),
        prop::sample::select(vec![
            "10.1.2.3:5",
            "192.0.2.9:1",
            "[::1]:80",
            "[fd00::1]:9",
            "garbage",
            ""
        ])
        .prop_map(|s| Some(s.to_string())),
    ];
    (
        prop::collection::vec((name, value()), 0..8),
        source,
        prop::option::of(prop::sample::select(NAMES).prop_map(str::to_string)),
        prop::bool::weighted(0.05),
        0u64..5_000,
        prop::option::of(prop_oneof![
            Just(200u16),
            Just(503u16),
            Just(101u16),
            0u16..1000
        ]),
        prop::option::of(prop_oneof![
            Just(b"0".to_vec()),
            Just(b"14".to_vec()),
            value()
        ]),
        prop_oneof![Just(0u64), any::<u64>()],
        any::<bool>(),
    )
        .prop_map(
            |(headers, source, failing, clock_fails, at_ms, status, grpc, flags, trailers)| {
                Request {
                    headers,
                    source,
                    failing,
                    clock_fails,
                    at_ms,
                    status,
                    grpc,
                    flags,
                    trailers,
                }
            },
        )
}

proptest! {
    #[test]
    fn any_traffic_gets_a_decision_the_config_allows(requests in prop::collection::vec(request(), 1..24)) {
        let world = FakeHost::new();
        let p = plugin(CONFIG, &world);
        let rng = rng(3);
        let mut now_ms = 1_000;
        for r in requests {
            now_ms += r.at_ms;
            let mut h = world.stream().at(now_ms * 1_000_000);
            if let Some(s) = &r.source {
                h = h.from_address(s);
            }
            if let Some(f) = &r.failing {
                h = h.failing_read(f);
            }
            for (k, v) in &r.headers {
                h = h.with_header(k, v);
            }
            h.clock_fails.set(r.clock_fails);
            let mut stream = on_request_headers(&h, &p, &rng);
            let replies = h.replies.borrow().clone();
            prop_assert!(replies.len() <= 1);
            prop_assert_eq!(replies.len() == 1, stream.state.rejected);
            if let Some((status, headers, _)) = replies.first() {
                // 200: the status document (or a gRPC-shaped rejection); 429, 503: the policies'.
                prop_assert!([200, 429, 503].contains(status), "{status}");
                if let Some((_, d)) = headers.iter().find(|(k, _)| k == "x-meshguard-decision") {
                    prop_assert!(serde_json::from_str::<Decision>(d).is_ok(), "{d}");
                }
            } else {
                for v in h.header_values("x-meshguard-variant") {
                    prop_assert!(v == b"stable" || v == b"canary", "{v:?}");
                }
                for v in h.header_values("x-meshguard-cluster") {
                    prop_assert!(v == b"s" || v == b"c", "{v:?}");
                }
                if let Some(s) = r.status {
                    h.response_headers.borrow_mut().push((":status".into(), s.to_string().into_bytes()));
                }
                if let Some(g) = &r.grpc {
                    h.response_headers.borrow_mut().push(("grpc-status".into(), g.clone()));
                }
                on_response_headers(&h, &p, &mut stream.state, !r.trailers);
                if r.trailers {
                    if let Some(g) = &r.grpc {
                        h.response_trailers.borrow_mut().push(("grpc-status".into(), g.clone()));
                    }
                    on_response_trailers(&h, &p, &mut stream.state);
                }
            }
            for (_, d) in h.filter_state.borrow().iter() {
                prop_assert!(serde_json::from_slice::<Decision>(d).is_ok());
            }
            prop_assert!(h.filter_state.borrow().len() <= 1);
            h.properties.borrow_mut().push(("response.flags".into(), r.flags));
            on_log(&h, &p, &stream.state);
            world.now.set(now_ms * 1_000_000);
            on_tick(&world, &p);
        }
        // Every request in flight was released (no slot left taken).
        let in_flight = world.metric("meshguard.requests_in_flight.route.api");
        prop_assert_eq!(in_flight, 0);
    }
}
