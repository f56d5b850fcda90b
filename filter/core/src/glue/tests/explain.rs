//! `explain`: the decision record in filter state and the debug log, the decision
//! header for trusted callers that ask (and nobody else), the status document, and
//! the table metrics.

use meshguard_config::report::{Decision, Status};

use super::{plugin, rng};
use crate::glue::plugin::Plugin;
use crate::host::fake::FakeHost;
use crate::host::Level;

const SEC: u64 = 1_000_000_000;

const CONFIG: &str = r#"{"schemaVersion":1,
  "explain":{"trustedSources":["10.0.0.0/8"],"filterState":true,"log":true,"header":true,
             "statusPath":"/.well-known/meshguard/status"},
  "routes":[
    {"name":"api","match":{"pathPrefix":"/api"},
     "canary":{"variants":[{"name":"stable","cluster":"s","weight":9000},{"name":"canary","cluster":"c","weight":1000}],
               "rules":[{"header":{"name":"x-canary","exact":"1"},"variant":"canary"}],
               "sticky":{"header":"x-user"}},
     "rateLimits":[{"name":"per-user","key":[{"header":"x-user"}],"limit":{"burst":2,"rate":1,"per":"hour"},"maxKeys":1000}],
     "breaker":{"consecutiveFailures":1,"openDurationMs":60000}}
  ]}"#;

/// One request at the test's second (see [`super::send_at`]).
fn send(
    p: &Plugin,
    world: &FakeHost,
    addr: &str,
    headers: &[(&str, &str)],
    status: u64,
) -> FakeHost {
    super::send_at(p, world, SEC, addr, headers, status)
}

/// The decision the stream wrote to filter state (exactly once).
fn recorded(h: &FakeHost) -> Decision {
    let fs = h.filter_state.borrow();
    assert_eq!(fs.len(), 1, "{fs:?}");
    assert_eq!(fs[0].0, "meshguard.decision");
    serde_json::from_slice(&fs[0].1).unwrap()
}

fn header(h: &FakeHost, name: &str) -> Option<Decision> {
    if let Some(v) = h.response_values(name).first() {
        return Some(serde_json::from_slice(v).unwrap());
    }
    let replies = h.replies.borrow();
    let (_, headers, _) = replies.first()?;
    let (_, v) = headers.iter().find(|(k, _)| k == name)?;
    Some(serde_json::from_str(v).unwrap())
}

#[test]
fn every_kind_of_decision_is_recorded_with_its_reason() {
    let world = FakeHost::new();
    let p = plugin(CONFIG, &world);
    let rule = recorded(&send(
        &p,
        &world,
        "192.0.2.1:1",
        &[(":path", "/api"), ("x-canary", "1")],
        200,
    ));
    assert_eq!(rule.route.as_deref(), Some("api"));
    assert_eq!(rule.variant.as_deref(), Some("canary"));
    assert_eq!(rule.reason.as_deref(), Some("rule:0"));
    assert_eq!(rule.breaker.as_deref(), Some("closed"));
    assert_eq!(rule.reply, None);
    assert!(
        rule.limits.is_empty(),
        "no x-user: the policy does not apply"
    );

    let sticky = recorded(&send(
        &p,
        &world,
        "192.0.2.1:1",
        &[(":path", "/api"), ("x-user", "u1")],
        200,
    ));
    assert_eq!(sticky.reason.as_deref(), Some("sticky"));
    assert_eq!(sticky.limits.len(), 1);
    assert_eq!(sticky.limits[0].policy, "per-user");
    assert_eq!(sticky.limits[0].outcome, "allowed");
    assert_eq!(sticky.limits[0].remaining, Some(1));

    let weighted = recorded(&send(&p, &world, "192.0.2.1:1", &[(":path", "/api")], 200));
    assert_eq!(weighted.reason.as_deref(), Some("weighted"));

    send(
        &p,
        &world,
        "192.0.2.1:1",
        &[(":path", "/api"), ("x-user", "u1")],
        200,
    );
    let limited = recorded(&send(
        &p,
        &world,
        "192.0.2.1:1",
        &[(":path", "/api"), ("x-user", "u1")],
        200,
    ));
    assert_eq!(limited.reply.as_deref(), Some("rate_limited"));
    assert_eq!(limited.limits[0].outcome, "limited");
    assert_eq!(limited.limits[0].remaining, Some(0));
    assert_eq!(limited.variant, None, "limits come before the variant");

    // One failure opens stable's breaker (consecutiveFailures: 1).
    send(
        &p,
        &world,
        "192.0.2.1:1",
        &[(":path", "/api"), ("x-user", "u9")],
        503,
    );
    let open = recorded(&send(
        &p,
        &world,
        "192.0.2.1:1",
        &[(":path", "/api"), ("x-user", "u9")],
        200,
    ));
    assert_eq!(open.reply.as_deref(), Some("breaker_open"));
    assert_eq!(open.breaker.as_deref(), Some("open"));
    assert_eq!(open.variant.as_deref(), Some("stable"));

    let unmatched = recorded(&send(
        &p,
        &world,
        "192.0.2.1:1",
        &[(":path", "/other")],
        200,
    ));
    assert_eq!(unmatched, Decision::default());

    let h = send(&p, &world, "192.0.2.1:1", &[(":path", "/api")], 200);
    assert!(h.logs.borrow().iter().any(
        |(l, m)| *l == Level::Debug && m.starts_with("meshguard: decision {\"route\":\"api\"")
    ));
}

#[test]
fn the_decision_header_goes_only_to_trusted_callers_that_ask() {
    let world = FakeHost::new();
    let p = plugin(CONFIG, &world);
    let ask = [(":path", "/api"), ("x-meshguard-explain", "1")];
    let h = send(&p, &world, "10.1.2.3:4", &ask, 200);
    let d = header(&h, "x-meshguard-decision").expect("asked, trusted");
    assert_eq!(d, recorded(&h), "the header says what filter state says");
    assert_eq!(
        header(
            &send(&p, &world, "10.1.2.3:4", &[(":path", "/api")], 200),
            "x-meshguard-decision"
        ),
        None
    );
    let mut spoofed = 0;
    for i in 0..1000 {
        let h = send(&p, &world, &format!("192.0.2.{}:{i}", i % 250), &ask, 200);
        spoofed += usize::from(header(&h, "x-meshguard-decision").is_some());
    }
    assert_eq!(spoofed, 0);
    // On a local reply the header rides on the reply.
    let limited = [
        (":path", "/api"),
        ("x-user", "z"),
        ("x-meshguard-explain", ""),
    ];
    send(&p, &world, "10.1.2.3:4", &limited, 200);
    send(&p, &world, "10.1.2.3:4", &limited, 200);
    let h = send(&p, &world, "10.1.2.3:4", &limited, 200);
    assert_eq!(h.replies.borrow().len(), 1);
    assert_eq!(
        header(&h, "x-meshguard-decision").unwrap().reply.as_deref(),
        Some("rate_limited")
    );
}

#[test]
fn the_status_path_answers_trusted_callers_and_is_ordinary_for_others() {
    let world = FakeHost::new();
    let p = plugin(CONFIG, &world);
    send(
        &p,
        &world,
        "192.0.2.1:1",
        &[(":path", "/api"), ("x-user", "u9")],
        503,
    );
    let h = send(
        &p,
        &world,
        "10.0.0.1:1",
        &[(":path", "/.well-known/meshguard/status?x=1")],
        200,
    );
    let replies = h.replies.borrow();
    let (status, headers, body) = replies.first().expect("answered");
    assert_eq!(*status, 200);
    assert!(headers.contains(&("content-type".into(), "application/json".into())));
    let doc: Status = serde_json::from_slice(body).unwrap();
    assert_eq!(doc.schema, "meshguard.status/v1");
    assert_eq!(doc.revision.len(), 16);
    let api = &doc.routes[0];
    assert_eq!(api.name, "api");
    let canary = api.canary.as_ref().unwrap();
    assert_eq!(
        (canary.variants[0].weight, canary.variants[1].weight),
        (9000, 1000)
    );
    assert_eq!(api.breakers[0].variant, "stable");
    assert_eq!(api.breakers[0].phase, "open");
    let open_for = api.breakers[0].open_for_ms.unwrap();
    assert!((59_000..=60_000).contains(&open_for), "{open_for}");
    assert_eq!(api.breakers[0].window.failures, 1);
    assert_eq!(doc.policies[0].name, "per-user");
    assert_eq!(doc.policies[0].table.used, 1, "u9's bucket is partly spent");
    assert!(recorded_nothing(&h), "a status request is not a decision");
    // Untrusted: the path is an ordinary request (unmatched here: passed through).
    let h = send(
        &p,
        &world,
        "192.0.2.1:1",
        &[(":path", "/.well-known/meshguard/status")],
        200,
    );
    assert!(h.replies.borrow().is_empty());
    assert_eq!(recorded(&h).route, None);
}

fn recorded_nothing(h: &FakeHost) -> bool {
    h.filter_state.borrow().is_empty()
}

#[test]
fn without_explain_nothing_is_read_written_or_built() {
    let world = FakeHost::new();
    let plain = CONFIG.replace(
        r#""explain":{"trustedSources":["10.0.0.0/8"],"filterState":true,"log":true,"header":true,
             "statusPath":"/.well-known/meshguard/status"},"#,
        "",
    );
    assert_ne!(plain, CONFIG);
    let p = plugin(&plain, &world);
    let h = send(
        &p,
        &world,
        "10.0.0.1:1",
        &[
            (":path", "/.well-known/meshguard/status"),
            ("x-meshguard-explain", "1"),
        ],
        200,
    );
    assert!(recorded_nothing(&h));
    assert!(h.replies.borrow().is_empty());
    assert!(!h.reads.borrow().iter().any(|r| r == "x-meshguard-explain"));
    // With only the header on, a caller that does not ask costs no host call
    // here (this config reads every header at once anyway) and no address read.
    let header_only = CONFIG.replace(
        r#""filterState":true,"log":true,"header":true,
             "statusPath":"/.well-known/meshguard/status""#,
        r#""header":true"#,
    );
    assert_ne!(header_only, CONFIG);
    let calls = |config: &str| {
        let world = FakeHost::new();
        let p = plugin(config, &world);
        let h = send(
            &p,
            &world,
            "10.0.0.1:1",
            &[(":path", "/api"), ("x-user", "u")],
            200,
        );
        h.calls.take()
    };
    let (with, without) = (calls(&header_only), calls(&plain));
    assert_eq!(with, without);
    assert!(!with.iter().any(|c| c.starts_with("source_address")));
    // A config that reads one header per call pays one read for the ask header.
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"explain":{"trustedSources":["::1"],"header":true},"routes":[{"name":"web"}]}"#,
        &world,
    );
    let h = send(&p, &world, "10.0.0.1:1", &[], 200);
    assert_eq!(*h.reads.borrow(), vec!["x-meshguard-explain".to_string()]);
    assert!(!h
        .calls
        .borrow()
        .iter()
        .any(|c| c.starts_with("source_address")));
}

#[test]
fn overflow_and_new_keys_are_counted_per_policy() {
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"routes":[{"name":"web"}],
            "rateLimits":[{"name":"tiny","key":[{"header":"x-k"}],"maxKeys":1,"limit":{"burst":5,"rate":1,"per":"hour"}}]}"#,
        &world,
    );
    send(&p, &world, "192.0.2.1:1", &[("x-k", "a")], 200);
    send(&p, &world, "192.0.2.1:1", &[("x-k", "a")], 200);
    send(&p, &world, "192.0.2.1:1", &[("x-k", "b")], 200);
    send(&p, &world, "192.0.2.1:1", &[("x-k", "c")], 200);
    assert_eq!(
        world.metric("meshguard.ratelimit_table_keys.policy.tiny"),
        1
    );
    assert_eq!(
        world.metric("meshguard.ratelimit_overflow_total.policy.tiny"),
        2
    );
    assert_eq!(
        world.metric("meshguard.ratelimit_store_conflicts_total.policy.tiny"),
        0
    );
}

#[test]
fn the_status_document_counts_this_workers_leases() {
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"explain":{"trustedSources":["10.0.0.1"],"statusPath":"/s"},
            "routes":[{"name":"web"}],
            "rateLimits":[{"name":"big","key":[],"maxKeys":100,"limit":{"burst":100000,"rate":1,"per":"second"}}]}"#,
        &world,
    );
    // The key's first charge creates its slot; the second takes a lease, and the
    // lease serves the next ones without shared data.
    for _ in 0..5 {
        send(&p, &world, "192.0.2.1:1", &[(":path", "/")], 200);
    }
    let h = send(&p, &world, "10.0.0.1:1", &[(":path", "/s")], 200);
    let replies = h.replies.borrow();
    let doc: Status = serde_json::from_slice(&replies[0].2).unwrap();
    assert_eq!(
        doc.policies[0].worker.leases,
        1,
        "{}",
        String::from_utf8_lossy(&replies[0].2)
    );
    assert_eq!(doc.policies[0].table.used, 1);
}

#[test]
fn a_caller_that_asks_gets_the_header_when_nothing_else_records_decisions() {
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"explain":{"trustedSources":["10.0.0.0/8"],"header":true},"routes":[{"name":"web"}]}"#,
        &world,
    );
    let h = send(
        &p,
        &world,
        "10.0.0.1:1",
        &[("x-meshguard-explain", "1")],
        200,
    );
    assert_eq!(
        header(&h, "x-meshguard-decision").unwrap().route.as_deref(),
        Some("web")
    );
    assert!(
        h.filter_state.borrow().is_empty(),
        "no filter state without filterState"
    );
}

#[test]
fn the_breaker_field_names_each_phase_and_the_rollout_state_each_variant() {
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"explain":{"filterState":true},"routes":[
            {"name":"api","match":{"pathPrefix":"/api"},
             "canary":{"variants":[{"name":"stable","cluster":"s","weight":5000},{"name":"canary","cluster":"c","weight":5000}],
                       "rules":[{"header":{"name":"x-canary","exact":"1"},"variant":"canary"},
                                {"header":{"name":"x-stable","exact":"1"},"variant":"stable"}],
                       "revision":"r1","analysis":{}},
             "breaker":{"consecutiveFailures":1,"openDurationMs":1000,"halfOpenProbes":1,
                        "whenOpen":{"fallbackVariant":"stable"}}},
            {"name":"cc","match":{"pathPrefix":"/cc"},"breaker":{"maxConcurrent":1}},
            {"name":"ho","match":{"pathPrefix":"/ho"},"breaker":{"consecutiveFailures":1,"openDurationMs":1000,"halfOpenProbes":1}}]}"#,
        &world,
    );
    let canary = [(":path", "/api"), ("x-canary", "1")];
    let stable = [(":path", "/api"), ("x-stable", "1")];
    let d = recorded(&send(&p, &world, "192.0.2.1:1", &stable, 200));
    assert_eq!(
        (d.variant.as_deref(), d.analysis.as_deref()),
        (Some("stable"), Some("baseline"))
    );
    let d = recorded(&send(&p, &world, "192.0.2.1:1", &canary, 503));
    assert_eq!(
        (d.variant.as_deref(), d.analysis.as_deref()),
        (Some("canary"), Some("holding"))
    );
    assert_eq!(d.breaker.as_deref(), Some("closed"));
    // canary's breaker is open: its clients go to stable, said as such.
    let d = recorded(&send(&p, &world, "192.0.2.1:1", &canary, 200));
    assert_eq!(
        (
            d.variant.as_deref(),
            d.reason.as_deref(),
            d.breaker.as_deref()
        ),
        (Some("stable"), Some("fallback"), Some("open"))
    );
    // After the open period: one probe, then half-open with the probe out.
    let later = SEC + 2 * SEC;
    let probe = {
        let mut h = world.stream().at(later).from_address("192.0.2.1:1");
        for (k, v) in canary {
            h = h.with_header(k, v.as_bytes());
        }
        let s = crate::glue::request::on_request_headers(&h, &p, &rng(1));
        (h, s)
    };
    assert_eq!(recorded(&probe.0).breaker.as_deref(), Some("probe"));
    // A second caller while the probe is out: the fallback again (not a probe).
    let h = super::send_at(&p, &world, later, "192.0.2.1:1", &canary, 200);
    assert_eq!(recorded(&h).breaker.as_deref(), Some("open"));
    crate::glue::request::on_log(&probe.0, &p, &probe.1.state);
    // The concurrency limit: one in flight, the next is at capacity.
    let first = world
        .stream()
        .at(later)
        .from_address("192.0.2.1:1")
        .with_header(":path", b"/cc");
    let held = crate::glue::request::on_request_headers(&first, &p, &rng(1));
    let d = recorded(&send(&p, &world, "192.0.2.1:1", &[(":path", "/cc")], 200));
    assert_eq!(
        (d.breaker.as_deref(), d.reply.as_deref()),
        (Some("at_capacity"), Some("concurrency"))
    );
    crate::glue::request::on_log(&first, &p, &held.state);
    // Half-open without a fallback: with its probe out, the next is answered.
    let ho = [(":path", "/ho")];
    send(&p, &world, "192.0.2.1:1", &ho, 503);
    let t = SEC + 3 * SEC;
    let probe_h = world
        .stream()
        .at(t)
        .from_address("192.0.2.1:1")
        .with_header(":path", b"/ho");
    let probe_s = crate::glue::request::on_request_headers(&probe_h, &p, &rng(1));
    assert_eq!(recorded(&probe_h).breaker.as_deref(), Some("probe"));
    let d = recorded(&super::send_at(&p, &world, t, "192.0.2.1:1", &ho, 200));
    assert_eq!(
        (d.breaker.as_deref(), d.reply.as_deref()),
        (Some("half_open"), Some("breaker_half_open"))
    );
    crate::glue::request::on_log(&probe_h, &p, &probe_s.state);
}

#[test]
fn the_status_document_labels_static_splits_and_shows_evidence_with_an_analysis() {
    let world = FakeHost::new();
    let p = plugin(
        r#"{"schemaVersion":1,"explain":{"trustedSources":["10.0.0.1"],"statusPath":"/s"},"routes":[
            {"name":"judged","match":{"pathPrefix":"/j"},
             "canary":{"variants":[{"name":"stable","weight":5000},{"name":"canary","weight":5000}],"revision":"r","analysis":{}}},
            {"name":"plain","canary":{"variants":[{"name":"stable","weight":9000},{"name":"canary","weight":1000}]}}]}"#,
        &world,
    );
    let h = send(&p, &world, "10.0.0.1:1", &[(":path", "/s")], 200);
    let doc: Status = serde_json::from_slice(&h.replies.borrow()[0].2).unwrap();
    let judged = doc.routes[0].canary.as_ref().unwrap();
    assert!(judged.rollout);
    assert_eq!(judged.variants[0].state, "baseline");
    assert_eq!(
        judged.variants[0].evidence, None,
        "the baseline is not judged"
    );
    assert_eq!(judged.variants[1].state, "holding");
    assert!(judged.variants[1].evidence.is_some());
    let plain = doc.routes[1].canary.as_ref().unwrap();
    assert!(!plain.rollout);
    let states: Vec<&str> = plain.variants.iter().map(|v| v.state.as_str()).collect();
    assert_eq!(states, ["baseline", "static"]);
}
