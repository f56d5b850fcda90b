use super::{plugin, rng};
use crate::glue::plugin::Plugin;
use crate::glue::request::{on_request_headers, on_response_headers};
use crate::host::fake::FakeHost;

const SEC: u64 = 1_000_000_000;

/// A stream of `world` from a fixed client.
fn client(world: &FakeHost, now: u64) -> FakeHost {
    world
        .stream()
        .at(now)
        .from_address("192.0.2.7:5555")
        .with_header(":path", b"/")
}

fn host(now: u64) -> FakeHost {
    client(&FakeHost::new(), now)
}

/// Sends `n` requests, each on a fresh stream of the same world.
fn send(p: &Plugin, world: &FakeHost, now: u64, n: usize) -> Vec<RequestStateLite> {
    (0..n)
        .map(|_| {
            let h = client(world, now);
            let s = on_request_headers(&h, p, &rng(1)).state;
            let replies = h.replies.borrow().clone();
            RequestStateLite {
                rejected: s.rejected,
                replies,
            }
        })
        .collect()
}

#[derive(Debug)]
struct RequestStateLite {
    rejected: bool,
    replies: Vec<crate::host::fake::Reply>,
}

fn header<'a>(r: &'a RequestStateLite, name: &str) -> Option<&'a str> {
    r.replies
        .first()?
        .1
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

const ONE: &str = r#"{"schemaVersion":1,"routes":[{"name":"web"}],
    "rateLimits":[{"name":"per-client","key":[{"clientAddress":{}}],"limit":{"burst":2,"rate":1,"per":"second"},
                   "headers":{"legacy":true}}]}"#;

#[test]
fn the_burst_passes_then_a_429_carries_the_ratelimit_fields() {
    let shared = FakeHost::new();
    let p = plugin(ONE, &shared);
    let out = send(&p, &shared, 100 * SEC, 3);
    assert_eq!(
        out.iter().map(|r| r.rejected).collect::<Vec<_>>(),
        vec![false, false, true]
    );
    let r = &out[2];
    assert_eq!(r.replies[0].0, 429);
    assert_eq!(r.replies[0].2, b"rate limited\n");
    assert_eq!(header(r, "retry-after"), Some("1"));
    assert_eq!(
        header(r, "ratelimit-policy"),
        Some(r#""per-client";q=2;w=2"#)
    );
    assert_eq!(header(r, "ratelimit"), Some(r#""per-client";r=0;t=2"#));
    assert_eq!(header(r, "x-ratelimit-remaining"), Some("0"));
    let m = |o: &str| {
        shared.metric(&format!(
            "meshguard.ratelimit_requests_total.policy.per-client.outcome.{o}"
        ))
    };
    assert_eq!((m("allowed"), m("limited")), (2, 1));
}

#[test]
fn shadow_mode_counts_but_never_rejects() {
    let shared = FakeHost::new();
    let p = plugin(
        &ONE.replace(r#""headers":{"legacy":true}"#, r#""shadow":true"#),
        &shared,
    );
    let out = send(&p, &shared, 100 * SEC, 5);
    assert!(out.iter().all(|r| !r.rejected && r.replies.is_empty()));
    let m = |o: &str| {
        shared.metric(&format!(
            "meshguard.ratelimit_requests_total.policy.per-client.outcome.{o}"
        ))
    };
    assert_eq!((m("allowed"), m("shadow_limited"), m("limited")), (2, 3, 0));
}

#[test]
fn a_request_passes_only_if_every_policy_passes() {
    let shared = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,
            "rateLimits":[{"name":"wide","limit":{"burst":10,"rate":1,"per":"second"}}],
            "routes":[{"name":"web","rateLimits":[{"name":"narrow","key":[{"route":true}],"limit":{"burst":1,"rate":1,"per":"minute"},
                                                  "response":{"status":503,"body":"busy"}}]}]}"#,
        &shared,
    );
    let out = send(&p, &shared, 100 * SEC, 2);
    assert!(!out[0].rejected);
    assert!(out[1].rejected);
    assert_eq!(out[1].replies[0].0, 503);
    assert_eq!(out[1].replies[0].2, b"busy");
    // Both policies' states are reported; retry-after follows the limiting one (60 s).
    assert_eq!(header(&out[1], "retry-after"), Some("60"));
    assert_eq!(
        header(&out[1], "ratelimit"),
        Some(r#""wide";r=8;t=2, "narrow";r=0;t=60"#)
    );
}

#[test]
fn a_missing_key_part_exempts_the_request() {
    let shared = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"routes":[{"name":"web"}],
            "rateLimits":[{"name":"by-key","key":[{"header":"x-api-key"}],"limit":{"burst":1,"rate":1,"per":"hour"}}]}"#,
        &shared,
    );
    assert!(send(&p, &shared, SEC, 5).iter().all(|r| !r.rejected));
    assert_eq!(
        shared.metric("meshguard.ratelimit_requests_total.policy.by-key.outcome.allowed"),
        0
    );
}

#[test]
fn allowed_responses_carry_the_fields_when_asked() {
    let h = host(100 * SEC);
    let p = plugin(&ONE.replace(r#""legacy":true"#, r#""onAllowed":true"#), &h);
    let s = on_request_headers(&h, &p, &rng(1)).state;
    let mut s = s;
    on_response_headers(&h, &p, &mut s, false);
    assert_eq!(
        h.response_values("ratelimit"),
        vec![br#""per-client";r=1;t=1"#.to_vec()]
    );
    assert_eq!(
        h.response_values("ratelimit-policy"),
        vec![br#""per-client";q=2;w=2"#.to_vec()]
    );
    assert!(h.response_values("x-ratelimit-remaining").is_empty());
}

#[test]
fn store_failures_follow_the_failure_mode_and_are_counted() {
    for (mode, rejected, outcome) in [
        ("allow", false, "error_allowed"),
        ("deny", true, "error_denied"),
    ] {
        let h = host(SEC);
        let p = plugin(
            &ONE.replace(
                r#""headers":{"legacy":true}"#,
                &format!(r#""onStoreError":"{mode}""#),
            ),
            &h,
        );
        h.world().lose_every_cas.set(true);
        let s = on_request_headers(&h, &p, &rng(1)).state;
        assert_eq!(s.rejected, rejected, "{mode}");
        assert_eq!(
            h.metric(&format!(
                "meshguard.ratelimit_requests_total.policy.per-client.outcome.{outcome}"
            )),
            1
        );
        if rejected {
            let r = &h.replies.borrow()[0];
            assert_eq!(r.0, 429);
            assert!(r.1.iter().any(|(k, v)| k == "retry-after" && v == "1"));
            assert!(
                !r.1.iter().any(|(k, _)| k == "ratelimit"),
                "no numbers after a store failure"
            );
        }
    }
}
