//! Global policies through the fake host: calls to the rate limit service, the
//! stream pausing and resuming, leases, remembered rejections, back-off.

use meshguard_rls_proto::rate_limit_response::{Code, DescriptorStatus};
use meshguard_rls_proto::{HeaderValue, RateLimitRequest, RateLimitResponse};
use prost::Message;

use super::{plugin, rng};
use crate::glue::plugin::Plugin;
use crate::glue::request::{on_grpc_response, on_request_headers, on_stream_end, Stream};
use crate::host::fake::FakeHost;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

fn config(global: &str, service: &str) -> String {
    format!(
        r#"{{"schemaVersion":1,"routeHeader":"x-route",
            "rateLimitService":{{"cluster":"rls","domain":"fleet","timeoutMs":25,"errorsBeforeBackoff":2,"backoffMs":1000{service}}},
            "rateLimits":[{{"name":"api","key":[{{"header":"x-api-key","descriptorKey":"api_key"}},{{"route":true}}],"global":{global}}}],
            "routes":[{{"name":"web"}}]}}"#
    )
}

fn world() -> FakeHost {
    let w = FakeHost::new().at(SEC);
    w.grpc_clusters.borrow_mut().push("rls".into());
    w
}

fn start(p: &Plugin, world: &FakeHost, now: u64) -> (Stream, FakeHost) {
    let h = world.stream().at(now).with_header("x-api-key", b"k1");
    h.grpc_clusters.borrow_mut().push("rls".into());
    let s = on_request_headers(&h, p, &rng(1));
    (s, h)
}

fn answer(code: Code, reset_ms: Option<u64>, headers: &[(&str, &str)]) -> Vec<u8> {
    RateLimitResponse {
        overall_code: code as i32,
        statuses: vec![DescriptorStatus {
            code: code as i32,
            duration_until_reset: reset_ms.map(|ms| prost_types::Duration {
                seconds: (ms / 1000) as i64,
                nanos: ((ms % 1000) * 1_000_000) as i32,
            }),
            ..DescriptorStatus::default()
        }],
        response_headers_to_add: headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        request_headers_to_add: vec![HeaderValue {
            key: "x-ratelimit-checked".into(),
            value: "yes".into(),
        }],
    }
    .encode_to_vec()
}

/// Delivers `body` (or a gRPC failure `status`) for the stream's only call.
fn deliver(p: &Plugin, h: &FakeHost, s: &mut Stream, status: u32, body: Option<Vec<u8>>) -> bool {
    let token = s.calls[0].0.expect("a dispatched call");
    *h.grpc_body.borrow_mut() = body;
    on_grpc_response(h, p, s, (token, status, 0), &rng(1))
}

fn outcome(world: &FakeHost, o: &str) -> i64 {
    world.metric(&format!(
        "meshguard.ratelimit_requests_total.policy.api.outcome.{o}"
    ))
}

#[test]
fn a_request_waits_for_the_service_and_goes_on_when_it_says_ok() {
    let w = world();
    let p = plugin(&config("{}", ""), &w);
    let (mut s, h) = start(&p, &w, SEC);
    assert!(s.must_pause(), "the request waits");
    assert!(h.header_values("x-route").is_empty(), "nothing written yet");
    let calls = h.grpc_calls.borrow().clone();
    assert_eq!(calls.len(), 1);
    let (cluster, service, method, message, timeout) = &calls[0];
    assert_eq!(
        (
            cluster.as_str(),
            service.as_str(),
            method.as_str(),
            *timeout
        ),
        (
            "rls",
            "envoy.service.ratelimit.v3.RateLimitService",
            "ShouldRateLimit",
            25
        )
    );
    let req = RateLimitRequest::decode(message.as_slice()).unwrap();
    assert_eq!((req.domain.as_str(), req.hits_addend), ("fleet", 1));
    let entries: Vec<(String, String)> = req.descriptors[0]
        .entries
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    assert_eq!(
        entries,
        [
            ("api_key".into(), "k1".into()),
            ("route".into(), "web".into())
        ]
    );
    h.now.set(SEC + 3 * MS);
    assert!(deliver(
        &p,
        &h,
        &mut s,
        0,
        Some(answer(Code::Ok, None, &[]))
    ));
    assert!(!s.must_pause());
    assert_eq!(h.resumed.get(), 1);
    assert_eq!(h.header_values("x-route"), vec![b"web".to_vec()]);
    assert_eq!(
        h.header_values("x-ratelimit-checked"),
        vec![b"yes".to_vec()]
    );
    assert_eq!(outcome(&w, "allowed"), 1);
    let rpc = w.metric("meshguard.ratelimit_rpc_duration_milliseconds.policy.api");
    assert_eq!(rpc, 3, "the call took 3 ms");
}

#[test]
fn over_limit_is_the_policys_rejection_with_the_services_headers() {
    let w = world();
    let p = plugin(&config(r#"{}"#, ""), &w);
    let (mut s, h) = start(&p, &w, SEC);
    let body = answer(Code::OverLimit, Some(2_500), &[("X-RateLimit-Limit", "10")]);
    assert!(deliver(&p, &h, &mut s, 0, Some(body)));
    assert!(s.state.rejected);
    assert_eq!(h.resumed.get(), 0, "answered, not resumed");
    let (status, headers, body) = h.replies.borrow()[0].clone();
    assert_eq!((status, body.as_slice()), (429, &b"rate limited\n"[..]));
    assert!(headers.contains(&("retry-after".into(), "3".into())));
    assert!(headers.contains(&("x-ratelimit-limit".into(), "10".into())));
    assert_eq!(outcome(&w, "limited"), 1);
}

#[test]
fn a_failed_call_follows_on_error_and_failures_in_a_row_start_the_fallback() {
    let w = world();
    let p = plugin(
        &config(
            r#"{"fallback":{"burst":1,"rate":1,"per":"hour"}}"#,
            r#","onError":"deny""#,
        ),
        &w,
    );
    // A timeout (gRPC 14 from Envoy): denied.
    let (mut s, h) = start(&p, &w, SEC);
    assert!(deliver(&p, &h, &mut s, 14, None));
    assert!(s.state.rejected);
    assert_eq!(outcome(&w, "error_denied"), 1);
    // A second failure in a row: back-off begins.
    let (mut s, h) = start(&p, &w, SEC);
    deliver(&p, &h, &mut s, 4, None);
    assert_eq!(outcome(&w, "error_denied"), 2);
    assert!(h
        .logs
        .borrow()
        .iter()
        .any(|(_, m)| m.contains("backing off for 1000 ms")));
    // During back-off nobody is asked: the fallback limit (1 per hour) decides.
    let (s, h) = start(&p, &w, SEC + MS);
    assert!(!s.must_pause() && !s.state.rejected);
    assert!(h.grpc_calls.borrow().is_empty());
    let (s, _) = start(&p, &w, SEC + 2 * MS);
    assert!(s.state.rejected);
    assert_eq!(
        (outcome(&w, "fallback"), outcome(&w, "fallback_limited")),
        (1, 1)
    );
    // After the back-off the service is asked again.
    let (s, h) = start(&p, &w, 3 * SEC);
    assert!(s.must_pause());
    assert_eq!(h.grpc_calls.borrow().len(), 1);
}

#[test]
fn an_unknown_cluster_fails_at_once_and_follows_on_error() {
    let w = FakeHost::new().at(SEC); // no cluster "rls"
    let p = plugin(&config("{}", ""), &w);
    let h = w.stream().with_header("x-api-key", b"k1");
    let s = on_request_headers(&h, &p, &rng(1));
    assert!(!s.must_pause(), "decided at once");
    assert_eq!(outcome(&w, "error_allowed"), 1);
    assert_eq!(
        h.header_values("x-route"),
        vec![b"web".to_vec()],
        "allowed on"
    );
}

#[test]
fn a_lease_spends_its_hits_without_calls_and_a_rejection_is_remembered() {
    let w = world();
    let p = plugin(&config(r#"{"lease":{"hits":4,"ttlMs":100}}"#, ""), &w);
    let (mut s, h) = start(&p, &w, SEC);
    let req = RateLimitRequest::decode(h.grpc_calls.borrow()[0].3.as_slice()).unwrap();
    assert_eq!(req.hits_addend, 4);
    deliver(&p, &h, &mut s, 0, Some(answer(Code::Ok, None, &[])));
    for i in 1..=3 {
        let (s, h) = start(&p, &w, SEC + i * MS);
        assert!(
            !s.must_pause() && h.grpc_calls.borrow().is_empty(),
            "hit {i} from the lease"
        );
    }
    assert_eq!(w.metric("meshguard.ratelimit_leases_total.policy.api"), 1);
    let (mut s, h) = start(&p, &w, SEC + 4 * MS);
    assert!(s.must_pause(), "the lease is spent: ask again");
    deliver(
        &p,
        &h,
        &mut s,
        0,
        Some(answer(Code::OverLimit, Some(500), &[])),
    );
    for i in 5..10 {
        let (s, h) = start(&p, &w, SEC + i * MS);
        assert!(s.state.rejected && h.grpc_calls.borrow().is_empty());
    }
    assert_eq!(
        w.metric("meshguard.ratelimit_cached_rejections_total.policy.api"),
        5
    );
    assert_eq!(outcome(&w, "allowed"), 4);
    assert_eq!(outcome(&w, "limited"), 6);
}

#[test]
fn local_policies_shield_the_service_and_a_stream_that_ends_cancels_its_call() {
    let json = config("{}", "").replace(
        r#""routes":[{"name":"web"}]"#,
        r#""routes":[{"name":"web","rateLimits":[{"name":"local","key":[],"limit":{"burst":1,"rate":1,"per":"hour"}}]}]"#,
    );
    let w = world();
    let p = plugin(&json, &w);
    let (s, h) = start(&p, &w, SEC);
    assert!(s.must_pause());
    // The client goes away before the answer: the call is cancelled.
    on_stream_end(&h, &p, &s);
    assert_eq!(*h.grpc_cancelled.borrow(), vec![1]);
    // The local limit (1 per hour) now rejects before any call.
    let (s, h) = start(&p, &w, SEC + MS);
    assert!(s.state.rejected);
    assert!(h.grpc_calls.borrow().is_empty());
}

#[test]
fn the_decision_record_says_limited_once_and_cached_for_a_remembered_rejection() {
    let w = world();
    let json = config(r#"{"lease":{"hits":1,"ttlMs":100}}"#, "").replace(
        r#""routeHeader":"x-route","#,
        r#""routeHeader":"x-route","explain":{"filterState":true},"#,
    );
    let p = plugin(&json, &w);
    let decision = |h: &FakeHost| -> serde_json::Value {
        let fs = h.filter_state.borrow();
        assert_eq!(fs.len(), 1, "{fs:?}");
        serde_json::from_slice(&fs[0].1).unwrap()
    };
    // The answer arrives after a wait: the record is written once, then.
    let (mut s, h) = start(&p, &w, SEC);
    assert!(h.filter_state.borrow().is_empty(), "nothing decided yet");
    deliver(
        &p,
        &h,
        &mut s,
        0,
        Some(answer(Code::OverLimit, Some(500), &[])),
    );
    assert_eq!(
        decision(&h)["limits"],
        serde_json::json!([{"policy": "api", "outcome": "limited"}])
    );
    // Remembered: one entry, `cached_limited`, not also `limited`.
    let (_, h) = start(&p, &w, SEC + MS);
    let d = decision(&h);
    assert_eq!(
        d["limits"],
        serde_json::json!([{"policy": "api", "outcome": "cached_limited"}])
    );
    assert_eq!(d["reply"], "rate_limited");
}
