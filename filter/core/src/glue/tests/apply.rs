//! The one apply step: every local reply, whatever its reason, goes out through
//! `apply_request`, and nothing else is written for a rejected request.

use meshguard_engine::ReplyReason;

use super::{plugin, rng};
use crate::glue::apply::apply_request;
use crate::glue::plugin::Plugin;
use crate::glue::record::Writes;
use crate::glue::request::on_log;
use crate::glue::stream::Stream;
use crate::host::fake::FakeHost;
use crate::host::view::CachedRequest;
use crate::host::Process;

const SEC: u64 = 1_000_000_000;

/// Decides a request on a fresh stream of `world`, applies the decision, and
/// returns the reply's reason with the stream (its replies and header writes).
fn decide(
    p: &Plugin,
    world: &FakeHost,
    headers: &[(&str, &[u8])],
) -> (Option<ReplyReason>, FakeHost) {
    let mut h = world.stream().at(SEC).from_address("192.0.2.1:1");
    for (k, v) in headers {
        h = h.with_header(k, v);
    }
    let (state, effects) = p.runtime.decide(
        &mut CachedRequest::new(&h),
        &mut h.store(),
        &rng(1),
        Some(SEC),
    );
    let reason = effects.reply.as_ref().map(|r| r.reason);
    assert_eq!(state.rejected, reason.is_some());
    let mut stream = Stream {
        state,
        ..Stream::default()
    };
    apply_request(&h, p, &mut stream, effects, Writes::default(), false);
    let state = stream.state;
    if !state.rejected {
        h.properties
            .borrow_mut()
            .push(("response.code".into(), 503));
        on_log(&h, p, &state);
    }
    (reason, h)
}

/// The only local reply the stream saw, with its headers.
fn only_reply(h: &FakeHost) -> (u16, Vec<(String, String)>) {
    let replies = h.replies.borrow();
    assert_eq!(replies.len(), 1, "{replies:?}");
    (replies[0].0, replies[0].1.clone())
}

fn has(headers: &[(String, String)], k: &str, v: &str) -> bool {
    headers.iter().any(|(a, b)| a == k && b == v)
}

#[test]
fn a_rate_limit_rejection_is_sent_by_the_apply_step_and_nothing_is_forwarded() {
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"routeHeader":"x-meshguard-route","routes":[{"name":"web"}],
            "rateLimits":[{"name":"all","key":[],"limit":{"burst":1,"rate":1,"per":"hour"}}]}"#,
        &world,
    );
    assert_eq!(decide(&p, &world, &[]).0, None);
    let (reason, h) = decide(&p, &world, &[]);
    assert_eq!(reason, Some(ReplyReason::RateLimited { policy: 0 }));
    let (status, headers) = only_reply(&h);
    assert_eq!(status, 429);
    assert!(has(&headers, "retry-after", "3600"), "{headers:?}");
    assert!(
        h.header_values("x-meshguard-route").is_empty(),
        "no header written"
    );
}

#[test]
fn a_store_failure_that_denies_is_its_own_reason() {
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"routes":[{"name":"web"}],
            "rateLimits":[{"name":"all","key":[],"limit":{"burst":5,"rate":1,"per":"hour"},"onStoreError":"deny"}]}"#,
        &world,
    );
    world.world().fail_shared_data.set(true);
    let (reason, h) = decide(&p, &world, &[]);
    assert_eq!(reason, Some(ReplyReason::RateLimitStoreError { policy: 0 }));
    assert!(has(&only_reply(&h).1, "retry-after", "1"));
}

#[test]
fn breaker_open_half_open_and_concurrency_replies_go_through_the_apply_step() {
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{"consecutiveFailures":1,"openDurationMs":1,"halfOpenProbes":1}}]}"#,
        &world,
    );
    // One failure opens it (the stream's on_log records a 503).
    assert_eq!(decide(&p, &world, &[]).0, None);
    let (reason, h) = decide(&p, &world, &[]);
    assert_eq!(reason, Some(ReplyReason::BreakerOpen));
    assert!(has(&only_reply(&h).1, "x-meshguard-breaker", "open"));

    // Half-open with its one probe out: the next request is turned away.
    let probe_world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{"consecutiveFailures":1,"openDurationMs":1,"halfOpenProbes":1}}]}"#,
        &probe_world,
    );
    decide(&p, &probe_world, &[]);
    let later = |w: &FakeHost| {
        let h = w.stream().at(2 * SEC);
        let (state, effects) = p.runtime.decide(
            &mut CachedRequest::new(&h),
            &mut h.store(),
            &rng(1),
            Some(2 * SEC),
        );
        let reason = effects.reply.as_ref().map(|r| r.reason);
        assert_eq!(state.rejected, reason.is_some());
        let mut stream = Stream {
            state,
            ..Stream::default()
        };
        apply_request(&h, &p, &mut stream, effects, Writes::default(), false);
        (reason, h)
    };
    assert_eq!(later(&probe_world).0, None, "the probe");
    let (reason, h) = later(&probe_world);
    assert_eq!(reason, Some(ReplyReason::BreakerHalfOpen));
    assert!(has(&only_reply(&h).1, "x-meshguard-breaker", "half-open"));

    let busy = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{"maxConcurrent":1}}]}"#,
        &busy,
    );
    let h = busy.stream().at(SEC);
    let (held, effects) = p.runtime.decide(
        &mut CachedRequest::new(&h),
        &mut h.store(),
        &rng(1),
        Some(SEC),
    );
    assert!(!held.rejected);
    let mut stream = Stream {
        state: held,
        ..Stream::default()
    };
    apply_request(&h, &p, &mut stream, effects, Writes::default(), false);
    let (reason, h) = decide(&p, &busy, &[]);
    assert_eq!(reason, Some(ReplyReason::Concurrency));
    let (status, headers) = only_reply(&h);
    assert_eq!(status, 503);
    assert!(has(&headers, "x-meshguard-breaker", "concurrency"));
}
