//! The self-judging canary against a real Envoy at `--concurrency 2`, traffic
//! spread over both workers: rollback of a failing canary (and its traffic
//! stopping), a ramp to promoted, state across config reloads and a VM reload,
//! shadow mode, the practice's gates, and bad configs refused.

use std::time::Duration;

use meshguard_integration_tests::bootstrap::Bootstrap;
use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::load::{send_all, Req, Resp};
use meshguard_integration_tests::trap_wasm_path;
use meshguard_integration_tests::upstream::Upstream;

/// Route `web` with a canary policy: `variants` and `rest` are JSON fragments.
fn config(variants: &str, rest: &str) -> String {
    format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web","match":{{"pathPrefix":"/"}},"canary":{{
            "variants":{variants},"respondWithVariant":true,{rest}}}}}]}}"#
    )
}

const FIVE_PERCENT: &str = r#"[{"name":"stable","weight":9500},{"name":"canary","weight":500}]"#;
const HALF: &str = r#"[{"name":"stable","weight":5000},{"name":"canary","weight":5000}]"#;

struct Rig {
    stable: Upstream,
    canary: Upstream,
    envoy: Envoy,
}

fn bootstrap(plugin: &str, stable: &Upstream, canary: &Upstream) -> Bootstrap {
    Bootstrap::new(plugin)
        .cluster("stable", stable.addr)
        .cluster("canary", canary.addr)
        .canary_routes("x-meshguard-cluster", "stable")
        .balanced()
}

/// Envoy with `plugin`, stable healthy and canary failing every `fail_every`-th
/// request (0: healthy).
fn rig(plugin: &str, fail_every: u64) -> Rig {
    let stable = Upstream::start("stable");
    let canary = if fail_every == 0 {
        Upstream::start("canary")
    } else {
        Upstream::start_failing("canary", fail_every)
    };
    let envoy = Envoy::start(&bootstrap(plugin, &stable, &canary), 2);
    Rig {
        stable,
        canary,
        envoy,
    }
}

fn gauge(envoy: &Envoy, metric: &str, variant: &str, rest: &str) -> Option<u64> {
    envoy.stat(&format!(
        "wasmcustom.meshguard.{metric}.route.web.variant.{variant}{rest}"
    ))
}

fn weight(envoy: &Envoy, variant: &str) -> Option<u64> {
    gauge(envoy, "canary_weight", variant, "")
}

fn state(envoy: &Envoy, variant: &str, s: &str) -> Option<u64> {
    gauge(envoy, "canary_state", variant, &format!(".state.{s}"))
}

/// One round: `n` requests over 6 connections, then a pause, so that the rate
/// stays at a few hundred per second.
async fn round(envoy: &Envoy, n: usize, req: &Req) -> Vec<Resp> {
    let out = send_all(&envoy.url(""), vec![req.clone(); n], 6).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    out
}

/// Waits three ticks (50 ms each): a verdict one worker made (and set the
/// process-wide gauge for) has been read by every other worker.
async fn every_worker_has_read() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

/// Rounds of plain requests until `done` holds (at most `rounds`), then until every
/// worker has read it; how many rounds.
async fn load_until(envoy: &Envoy, rounds: usize, done: impl Fn(&Envoy) -> bool) -> usize {
    for i in 0..rounds {
        if done(envoy) {
            every_worker_has_read().await;
            return i;
        }
        round(envoy, 30, &Req::get("/")).await;
    }
    rounds
}

fn variant_of(r: &Resp) -> String {
    assert_eq!(r.status / 100, if r.status == 503 { 5 } else { 2 }, "{r:?}");
    r.header("x-meshguard-variant")
        .unwrap_or("none")
        .to_string()
}

/// The number the verdict's log line gives: "... after N requests with ...".
fn requests_at_verdict(log: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("meshguard: canary web/canary:") && l.contains("-> rolled_back"))
        .unwrap_or_else(|| panic!("no verdict in the log:\n{log}"));
    line.split(" after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_canary_is_rolled_back_and_its_traffic_stops_one_tick_after_the_verdict() {
    let rig = rig(&config(FIVE_PERCENT, r#""revision":"r1","analysis":{}"#), 2);
    assert_eq!(weight(&rig.envoy, "canary"), Some(500));
    let rounds = load_until(&rig.envoy, 200, |e| weight(e, "canary") == Some(0)).await;
    assert!(rounds < 200, "not rolled back:\n{}", rig.envoy.log());
    for w in 0..2 {
        assert!(rig.envoy.worker_connections(w) > 0, "worker {w} idle");
    }
    assert_eq!(weight(&rig.envoy, "stable"), Some(10_000));
    assert_eq!(state(&rig.envoy, "canary", "rolled_back"), Some(1));
    assert_eq!(
        gauge(
            &rig.envoy,
            "canary_transitions_total",
            "canary",
            ".state.rolled_back"
        ),
        Some(1),
        "one transition, counted once"
    );
    // What reached the canary beyond what the verdict judged: requests in flight
    // (6 connections), outcomes the other worker had not folded yet and requests it
    // routed before its next read: a tick (50 ms) each, at ~15 canary requests/s.
    // (load_until waited until every worker had read the verdict.)
    let judged = requests_at_verdict(&rig.envoy.log());
    let after = rig.canary.requests().saturating_sub(judged);
    eprintln!("judged {judged} canary requests; {after} more reached the canary after the verdict");
    assert!(
        after <= 10,
        "{after} canary requests after the verdict ({judged} judged)"
    );
    // From here on not one request reaches it.
    let before = rig.canary.requests();
    let stable_before = rig.stable.requests();
    for _ in 0..30 {
        round(&rig.envoy, 30, &Req::get("/")).await;
    }
    assert_eq!(rig.canary.requests(), before);
    assert_eq!(rig.stable.requests(), stable_before + 900);
    assert!(rig.envoy.wasm_failures().is_empty());
}

/// The p95 of canary requests from the turn to the verdict that the engine's
/// seeded simulation of this scenario gives
/// (`filter/engine/src/analysis/sim.rs`, `LATE_CHANGE_P95_REQUESTS`).
const LATE_CHANGE_P95_REQUESTS: u64 = 110;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_healthy_at_its_first_step_and_failing_at_the_next_is_rolled_back_by_the_change_detector(
) {
    let rig = rig(
        &config(
            r#"[{"name":"stable"},{"name":"canary"}]"#,
            r#""revision":"r1","analysis":{"method":"changepoint","horizonSeconds":600},
            "ramp":{"steps":[1000,5000,10000],"holdSeconds":3,"minRequests":20}"#,
        ),
        0,
    );
    let analysis =
        "wasmcustom.meshguard.canary_analysis.route.web.variant.canary.method.changepoint";
    assert_eq!(
        rig.envoy.stat(analysis),
        Some(1),
        "the metric names the method"
    );
    // A healthy first step; the ramp moves on.
    let rounds = load_until(&rig.envoy, 400, |e| weight(e, "canary") == Some(5_000)).await;
    assert!(rounds < 400, "no second step:\n{}", rig.envoy.log());
    // The canary's new build fails every fourth request: only the upstream changes.
    let before = rig.canary.requests();
    rig.canary.fail_every(4);
    let rounds = load_until(&rig.envoy, 400, |e| weight(e, "canary") == Some(0)).await;
    assert!(rounds < 400, "not rolled back:\n{}", rig.envoy.log());
    let log = rig.envoy.log();
    let judged = requests_at_verdict(&log);
    let after = judged.saturating_sub(before);
    eprintln!("{before} healthy canary requests, {after} failing ones judged to the verdict");
    // Within the simulated p95, plus a tick's worth (50 ms at ~200 canary
    // requests/s on each of two workers, and the 6 requests in flight).
    assert!(
        after <= LATE_CHANGE_P95_REQUESTS + 30,
        "{after} canary requests after the change ({judged} judged)"
    );
    let line = log
        .lines()
        .find(|l| l.contains("-> rolled_back"))
        .unwrap_or_default();
    eprintln!("{line}");
    assert!(line.contains("errors: e-detector"), "{line}");
    assert!(line.contains("method changepoint, window"), "{line}");
    assert!(line.contains("evidence growing since"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_canary_ramps_through_every_step_to_promoted() {
    let rig = rig(
        &config(
            r#"[{"name":"stable"},{"name":"canary"}]"#,
            r#""revision":"r1","analysis":{},"ramp":{"steps":[1000,5000,10000],"holdSeconds":1,"minRequests":20}"#,
        ),
        0,
    );
    let mut seen = Vec::new();
    for _ in 0..300 {
        let w = weight(&rig.envoy, "canary");
        if seen.last() != Some(&w) {
            seen.push(w);
        }
        if state(&rig.envoy, "canary", "promoted") == Some(1) {
            break;
        }
        round(&rig.envoy, 30, &Req::get("/")).await;
    }
    assert_eq!(seen, vec![Some(1_000), Some(5_000), Some(10_000)]);
    assert_eq!(state(&rig.envoy, "canary", "ramping"), Some(0));
    assert_eq!(weight(&rig.envoy, "stable"), Some(0));
    let before = rig.stable.requests();
    let out = round(&rig.envoy, 100, &Req::get("/")).await;
    assert!(out.iter().all(|r| variant_of(r) == "canary"));
    assert_eq!(
        rig.stable.requests(),
        before,
        "promoted: everything on canary"
    );
    let log = rig.envoy.log();
    assert!(log.contains("meshguard: canary web/canary: ramp to step 2 at 5000 bp"));
    assert!(log.contains("meshguard: canary web/canary: ramping -> promoted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_of_the_same_revision_keeps_a_rollback_and_a_new_revision_starts_afresh() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start_failing("canary", 2);
    let healthy = Upstream::start("canary2");
    let boot = |plugin: &str| {
        bootstrap(plugin, &stable, &canary)
            .cluster("canary2", healthy.addr)
            .dynamic()
    };
    let r1 = config(HALF, r#""revision":"r1","analysis":{}"#);
    let mut envoy = Envoy::start(&boot(&r1), 2);
    let rounds = load_until(&envoy, 100, |e| weight(e, "canary") == Some(0)).await;
    assert!(rounds < 100, "not rolled back");
    // The same revision, another setting: the verdict stays.
    let same = config(HALF, r#""revision":"r1","analysis":{"minRequests":30}"#);
    assert!(envoy.reload(&boot(&same)));
    let before = canary.requests();
    for _ in 0..10 {
        round(&envoy, 30, &Req::get("/")).await;
    }
    assert_eq!(
        canary.requests(),
        before,
        "still rolled back after the reload"
    );
    assert_eq!(weight(&envoy, "canary"), Some(0));
    // A new release: revision r2, the canary variant on a healthy cluster.
    let r2 = config(
        r#"[{"name":"stable","weight":5000},{"name":"canary","cluster":"canary2","weight":5000}]"#,
        r#""revision":"r2","analysis":{}"#,
    );
    assert!(envoy.reload(&boot(&r2)));
    let out = round(&envoy, 200, &Req::get("/")).await;
    let on_canary = out.iter().filter(|r| variant_of(r) == "canary").count();
    assert!(
        (60..=140).contains(&on_canary),
        "{on_canary} of 200 on a fresh 50% canary"
    );
    assert_eq!(healthy.requests(), on_canary as u64);
    assert_eq!(weight(&envoy, "canary"), Some(5_000));
    assert_eq!(state(&envoy, "canary", "holding"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollback_survives_a_vm_reload() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start_failing("canary", 2);
    let mut b = bootstrap(
        &config(HALF, r#""revision":"r1","analysis":{}"#),
        &stable,
        &canary,
    )
    .wasm_file(trap_wasm_path());
    b.failure_policy = "FAIL_RELOAD".into();
    let envoy = Envoy::start(&b, 2);
    let rounds = load_until(&envoy, 100, |e| weight(e, "canary") == Some(0)).await;
    assert!(rounds < 100, "not rolled back");
    // Trap the VMs (each worker's, across a few connections), let Envoy reload them.
    let trap = Req::get("/").header("x-meshguard-trap", "1");
    send_all(&envoy.url(""), vec![trap; 8], 4).await;
    let mut recovered = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let out = send_all(&envoy.url(""), vec![Req::get("/"); 20], 4).await;
        if out.iter().all(|r| r.status == 200) {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the VMs did not come back:\n{}", envoy.log());
    assert!(envoy.log().contains("panicked at"), "the drill trapped");
    let before = canary.requests();
    for _ in 0..10 {
        let out = round(&envoy, 30, &Req::get("/")).await;
        assert!(out.iter().all(|r| variant_of(r) == "stable"));
    }
    assert_eq!(
        canary.requests(),
        before,
        "fresh VMs route by the stored verdict"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_mode_reports_a_verdict_and_never_changes_routing() {
    let rig = rig(
        &config(HALF, r#""revision":"r1","analysis":{"shadow":true}"#),
        2,
    );
    let rounds = load_until(&rig.envoy, 100, |e| {
        gauge(e, "canary_shadow_verdict", "canary", "") == Some(1)
    })
    .await;
    assert!(rounds < 100, "no shadow verdict:\n{}", rig.envoy.log());
    let before = rig.canary.requests();
    let out = round(&rig.envoy, 200, &Req::get("/")).await;
    let on_canary = out.iter().filter(|r| variant_of(r) == "canary").count();
    assert!((60..=140).contains(&on_canary), "{on_canary} of 200");
    assert_eq!(rig.canary.requests(), before + on_canary as u64);
    assert_eq!(weight(&rig.envoy, "canary"), Some(5_000));
    assert_eq!(state(&rig.envoy, "canary", "rolled_back"), Some(0));
    assert!(rig.envoy.log().contains(
        "meshguard: canary web/canary: shadow verdict, would roll back (errors: e-value"
    ));
}

/// The practice meshguard replaces, end to end: beta testers always on canary,
/// everyone else 95/5, gates on a success-rate floor and a z-test (intervals
/// shortened to a second), no sequential test.
fn practice(gates: &str) -> String {
    config(
        FIVE_PERCENT,
        &format!(
            r#""rules":[{{"variant":"canary","header":{{"name":"x-user-type","exact":"beta-tester"}}}}],
               "revision":"r1","analysis":{{"sequential":false,"minRequests":50,{gates}}}"#
        ),
    )
}

async fn practice_rolls_back_by(gates: &str, fail_every: u64, cause: &str) {
    let rig = rig(&practice(gates), fail_every);
    let beta = Req::get("/").header("x-user-type", "beta-tester");
    let out = round(&rig.envoy, 30, &beta).await;
    assert!(out.iter().all(|r| variant_of(r) == "canary"), "the rule");
    let mut rolled_back = false;
    for _ in 0..200 {
        if weight(&rig.envoy, "canary") == Some(0) {
            rolled_back = true;
            break;
        }
        // Beta testers and everyone else, as traffic would come.
        round(&rig.envoy, 10, &beta).await;
        round(&rig.envoy, 30, &Req::get("/")).await;
    }
    assert!(
        rolled_back,
        "not rolled back by the {cause}:\n{}",
        rig.envoy.log()
    );
    every_worker_has_read().await;
    let log = rig.envoy.log();
    assert!(
        log.contains(&format!("-> rolled_back ({cause}")),
        "{cause} not the cause:\n{log}"
    );
    let before = rig.canary.requests();
    let out = round(&rig.envoy, 30, &beta).await;
    assert!(
        out.iter().all(|r| variant_of(r) == "stable"),
        "the rule no longer sends to it"
    );
    assert_eq!(rig.canary.requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_practice_success_rate_gate_rolls_back_a_canary_failing_five_percent() {
    practice_rolls_back_by(
        r#""successRate":{"min":99.5,"intervalSeconds":1,"intervals":3}"#,
        20,
        "success-rate gate",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_practice_z_test_gate_rolls_back_a_canary_failing_ten_percent() {
    practice_rolls_back_by(
        r#""zTest":{"z":1.96,"intervalSeconds":1}"#,
        10,
        "z-test gate",
    )
    .await;
}

#[test]
fn envoy_refuses_bad_rollouts_with_their_paths() {
    let bad = config(
        r#"[{"name":"stable"},{"name":"canary"}]"#,
        r#""revision":"r1","analysis":{"alpha":0.7,"successRate":{"min":99.5}},"ramp":{"steps":[5000,2500]}"#,
    );
    let b = Bootstrap::new(&bad).cluster("stable", "127.0.0.1:9".parse().unwrap());
    let (status, log) = Envoy::run_expecting_exit(&b, Duration::from_secs(60));
    assert!(!status.success());
    for line in [
        "routes[0].canary.analysis.alpha: must be above 0 and below 0.5, got 0.7",
        "routes[0].canary.analysis.successRate.intervalSeconds: required: the gate's interval, in seconds",
        "routes[0].canary.ramp.steps[1]: steps must increase: 2500 does not exceed the step before (5000)",
    ] {
        assert!(
            log.contains(&format!("meshguard: invalid configuration: {line}")),
            "missing {line:?}:\n{log}"
        );
    }
}
