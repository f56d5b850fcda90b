//! A self-judging canary through the fake host: two workers (two plugin
//! instances, as Envoy runs one VM per worker) sharing one world.

use super::{plugin, rng};
use crate::glue::plugin::Plugin;
use crate::glue::request::{on_log, on_request_headers};
use crate::glue::tick::on_tick;
use crate::host::fake::FakeHost;
use crate::host::Level;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

const BAD_CANARY: &str = r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
    "variants":[{"name":"stable","weight":5000},{"name":"canary","weight":5000}],
    "rules":[{"variant":"canary","header":{"name":"x-user-type","exact":"beta-tester"}}],
    "revision":"v2","analysis":{"minRequests":10}}}]}"#;

/// One request on worker `p` at `now`; the upstream answers 503 on canary when
/// `canary_fails`, else 200. Returns the variant that served it.
fn request(p: &Plugin, world: &FakeHost, now: u64, seed: u64, canary_fails: bool) -> usize {
    request_with(p, world, now, seed, canary_fails, &[])
}

fn request_with(
    p: &Plugin,
    world: &FakeHost,
    now: u64,
    seed: u64,
    canary_fails: bool,
    headers: &[(&str, &[u8])],
) -> usize {
    let mut h = world.stream().at(now).with_header(":path", b"/");
    for (k, v) in headers {
        h = h.with_header(k, v);
    }
    let s = on_request_headers(&h, p, &rng(seed)).state;
    let v = s.variant.unwrap();
    let code = if v == 1 && canary_fails { 503 } else { 200 };
    h.properties
        .borrow_mut()
        .push(("response.code".into(), code));
    on_log(&h, p, &s);
    v
}

fn weight(world: &FakeHost, variant: &str) -> i64 {
    world.metric(&format!(
        "meshguard.canary_weight.route.web.variant.{variant}"
    ))
}

fn logs_with(h: &FakeHost, text: &str) -> usize {
    h.logs
        .borrow()
        .iter()
        .filter(|(l, m)| *l == Level::Info && m.contains(text))
        .count()
}

#[test]
fn a_failing_canary_is_rolled_back_on_every_worker_within_one_tick() {
    let world = FakeHost::new().at(SEC);
    let (a, b) = (plugin(BAD_CANARY, &world), plugin(BAD_CANARY, &world));
    let mut now = SEC;
    let mut seed = 0;
    let mut verdict = false;
    // Traffic on both workers, each ticking every 50 ms, until a tick rolls back.
    for _ in 0..40 {
        for p in [&a, &b] {
            for _ in 0..10 {
                seed += 1;
                request(p, &world, now, seed, true);
            }
        }
        now += 50 * MS;
        let ta = world.stream().at(now);
        on_tick(&ta, &a);
        let tb = world.stream().at(now);
        on_tick(&tb, &b);
        if weight(&world, "canary") == 0 {
            assert_eq!(
                logs_with(&ta, "-> rolled_back") + logs_with(&tb, "-> rolled_back"),
                1,
                "one log line, from the worker whose fold decided"
            );
            verdict = true;
            break;
        }
    }
    assert!(verdict, "rolled back");
    assert_eq!(weight(&world, "stable"), 10_000);
    assert_eq!(
        world.metric(
            "meshguard.canary_transitions_total.route.web.variant.canary.state.rolled_back"
        ),
        1
    );
    assert_eq!(
        world.metric("meshguard.canary_state.route.web.variant.canary.state.rolled_back"),
        1
    );
    assert_eq!(
        world.metric("meshguard.canary_state.route.web.variant.canary.state.holding"),
        0
    );
    // From now on neither worker sends anything to canary, the rule's users included.
    for p in [&a, &b] {
        for i in 0..200 {
            assert_eq!(request(p, &world, now, 10_000 + i, true), 0);
        }
        assert_eq!(
            request_with(p, &world, now, 1, true, &[("x-user-type", b"beta-tester")]),
            0
        );
    }
}

#[test]
fn a_new_worker_or_config_of_the_same_revision_routes_by_the_verdict_from_its_first_request() {
    let world = FakeHost::new().at(SEC);
    let a = plugin(BAD_CANARY, &world);
    let mut now = SEC;
    for i in 0..200 {
        request(&a, &world, now, i, true);
        if i % 20 == 19 {
            now += 50 * MS;
            on_tick(&world.stream().at(now), &a);
        }
    }
    assert_eq!(weight(&world, "canary"), 0);
    // A fresh VM (say after FAIL_RELOAD) configures: it reads the record at once.
    let fresh = crate::glue::configure::configure(
        &world.stream().with_config(BAD_CANARY).at(now),
        Default::default(),
    )
    .expect("configures");
    for i in 0..100 {
        assert_eq!(request(&fresh, &world, now, 5_000 + i, false), 0);
    }
    // A new revision starts afresh.
    let next = BAD_CANARY.replace(r#""revision":"v2""#, r#""revision":"v3""#);
    let next = crate::glue::configure::configure(
        &world.stream().with_config(&next).at(now),
        Default::default(),
    )
    .expect("configures");
    let canary = (0..200)
        .filter(|i| request(&next, &world, now, 9_000 + i, false) == 1)
        .count();
    assert!(
        (60..=140).contains(&canary),
        "{canary} of 200 on a 50% canary"
    );
}

#[test]
fn a_healthy_canary_ramps_to_promoted_and_the_gauges_show_each_step() {
    let json = r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
        "variants":[{"name":"stable"},{"name":"canary"}],"revision":"v1",
        "analysis":{},"ramp":{"steps":[1000,5000,10000],"holdSeconds":1,"minRequests":5}}}]}"#;
    let world = FakeHost::new().at(SEC);
    let p = plugin(json, &world);
    on_tick(&world, &p); // as configure does
    let mut now = SEC;
    let mut seen = vec![weight(&world, "canary")];
    for i in 0..2_000 {
        request(&p, &world, now, i, false);
        if i % 50 == 49 {
            now += 100 * MS;
            on_tick(&world.stream().at(now), &p);
            let w = weight(&world, "canary");
            if seen.last() != Some(&w) {
                seen.push(w);
            }
        }
    }
    assert_eq!(seen, vec![1_000, 5_000, 10_000]);
    assert_eq!(
        world.metric("meshguard.canary_state.route.web.variant.canary.state.promoted"),
        1
    );
    assert_eq!(weight(&world, "stable"), 0);
}

#[test]
fn shadow_mode_reports_a_verdict_and_never_changes_routing() {
    let json = BAD_CANARY.replace(r#""minRequests":10"#, r#""minRequests":10,"shadow":true"#);
    let world = FakeHost::new().at(SEC);
    let p = plugin(&json, &world);
    let mut now = SEC;
    let mut canary = 0;
    let mut ticks = Vec::new();
    for i in 0..1_000 {
        canary += usize::from(request(&p, &world, now, i, true) == 1);
        if i % 20 == 19 {
            now += 50 * MS;
            let t = world.stream().at(now);
            on_tick(&t, &p);
            ticks.push(t);
        }
    }
    assert!(
        (400..=600).contains(&canary),
        "{canary} of 1000 still on canary"
    );
    assert_eq!(weight(&world, "canary"), 5_000);
    assert_eq!(
        world.metric("meshguard.canary_shadow_verdict.route.web.variant.canary"),
        1
    );
    let shadow_logs: usize = ticks.iter().map(|t| logs_with(t, "shadow verdict")).sum();
    assert_eq!(shadow_logs, 1);
}
