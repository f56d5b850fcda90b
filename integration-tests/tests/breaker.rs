//! Circuit breaking against a real Envoy at `--concurrency 2`, with the test
//! upstream failing on demand.

use std::time::Duration;

use meshguard_integration_tests::bootstrap::Bootstrap;
use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::load::{client, send, send_all, Req, Resp};
use meshguard_integration_tests::upstream::Upstream;
use serde_json::json;

fn config(breaker: &str) -> String {
    format!(r#"{{"schemaVersion":1,"routes":[{{"name":"flaky","breaker":{breaker}}}]}}"#)
}

fn start(breaker: &str) -> (Upstream, Envoy) {
    let up = Upstream::start("api");
    let envoy = Envoy::start(
        &Bootstrap::new(&config(breaker))
            .cluster("api", up.addr)
            .balanced(),
        2,
    );
    (up, envoy)
}

fn fail() -> Req {
    Req::get("/").header("x-test-status", "503")
}

fn gauge(envoy: &Envoy, route: &str, variant: &str) -> Option<u64> {
    envoy.stat(&format!(
        "wasmcustom.meshguard.breaker_state.route.{route}.variant.{variant}"
    ))
}

fn is_open_rejection(r: &Resp) -> bool {
    r.status == 503 && r.header("x-meshguard-breaker") == Some("open")
}

/// Sends `reqs` one by one, each on its own new connection, keeping every
/// connection open until the end (exact balancing hands each new connection to
/// the worker with the fewest open ones, so consecutive requests alternate).
async fn one_by_one(envoy: &Envoy, reqs: Vec<Req>) -> Vec<Resp> {
    let mut clients = Vec::new();
    let mut out = Vec::new();
    for r in reqs {
        let c = client(1);
        out.push(send(&c, &envoy.url(""), &r).await);
        clients.push(c);
    }
    out
}

/// Waits until the upstream has received `n` requests.
async fn until_upstream_saw(up: &Upstream, n: u64) {
    for _ in 0..200 {
        if up.requests() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("upstream saw {} requests, expected {n}", up.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn opens_across_both_workers_and_keeps_traffic_off_the_upstream() {
    let (up, envoy) = start(r#"{"consecutiveFailures":6,"openDurationMs":60000}"#);
    let answers = one_by_one(&envoy, vec![fail(); 6]).await;
    assert!(answers
        .iter()
        .all(|r| r.status == 503 && r.header("x-meshguard-breaker").is_none()));
    assert!(
        envoy.worker_connections(0) >= 3 && envoy.worker_connections(1) >= 3,
        "both workers saw failures"
    );
    assert_eq!(gauge(&envoy, "flaky", "all"), Some(2));
    let before = up.requests();
    let rejected = send_all(&envoy.url(""), vec![Req::get("/"); 100], 8).await;
    assert!(
        rejected.iter().all(is_open_rejection),
        "{:?}",
        rejected.first()
    );
    let retry: u64 = rejected[0].header("retry-after").unwrap().parse().unwrap();
    assert!((58..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(
        up.requests(),
        before,
        "no request reached the upstream while open"
    );
    assert_eq!(
        envoy.stat(
            "wasmcustom.meshguard.breaker_rejected_total.route.flaky.variant.all.outcome.open"
        ),
        Some(100)
    );
    assert!(envoy
        .log()
        .contains("meshguard: breaker flaky/all: closed -> open (6 consecutive failures)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_open_period_exactly_the_probes_reach_the_upstream_then_it_closes() {
    let (up, envoy) =
        start(r#"{"consecutiveFailures":2,"openDurationMs":1000,"halfOpenProbes":3}"#);
    one_by_one(&envoy, vec![fail(); 2]).await;
    assert_eq!(gauge(&envoy, "flaky", "all"), Some(2));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // 20 slow requests at once: 3 probes go through, the rest are turned away.
    let before = up.requests();
    let slow = Req::get("/").header("x-test-delay-ms", "400");
    let answers = send_all(&envoy.url(""), vec![slow; 20], 20).await;
    let passed = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(passed, 3);
    assert_eq!(
        up.requests() - before,
        3,
        "exactly the probes reached the upstream"
    );
    assert!(answers
        .iter()
        .filter(|r| r.status != 200)
        .all(|r| r.header("x-meshguard-breaker") == Some("half-open")));
    assert_eq!(
        gauge(&envoy, "flaky", "all"),
        Some(0),
        "closed after the probes succeeded"
    );
    let after = send_all(&envoy.url(""), vec![Req::get("/"); 10], 4).await;
    assert!(after.iter().all(|r| r.status == 200));
    let log = envoy.log();
    assert!(
        log.contains("flaky/all: open -> half_open (open period elapsed)"),
        "{log}"
    );
    assert!(
        log.contains("flaky/all: half_open -> closed (3 half-open probe(s) succeeded)"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_probe_reopens_the_breaker() {
    let (up, envoy) = start(
        r#"{"consecutiveFailures":1,"openDurationMs":500,"maxOpenDurationMs":5000,"halfOpenProbes":1}"#,
    );
    one_by_one(&envoy, vec![fail()]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let probe = one_by_one(&envoy, vec![fail()]).await;
    assert_eq!(probe[0].status, 503);
    assert!(
        probe[0].header("x-meshguard-breaker").is_none(),
        "the probe reached the upstream"
    );
    assert_eq!(up.requests(), 2);
    let again = one_by_one(&envoy, vec![Req::get("/")]).await;
    assert!(is_open_rejection(&again[0]));
    // The second open period is twice as long (1 s): retry-after says so.
    assert_eq!(again[0].header("retry-after"), Some("1"));
    assert!(envoy
        .log()
        .contains("half_open -> open (a half-open probe failed)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_canary_breaker_sends_canary_clients_to_stable() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start_with("canary", 503);
    let plugin = r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
        "variants":[{"name":"stable","weight":5000},{"name":"canary","weight":5000}],
        "rules":[{"variant":"canary","header":{"name":"x-user-type","exact":"beta-tester"}}]},
        "breaker":{"consecutiveFailures":3,"openDurationMs":60000,"whenOpen":{"fallbackVariant":"stable"}}}]}"#;
    let b = Bootstrap::new(plugin)
        .cluster("stable", stable.addr)
        .cluster("canary", canary.addr)
        .canary_routes("x-meshguard-cluster", "stable");
    let envoy = Envoy::start(&b, 2);
    let beta = || Req::get("/").header("x-user-type", "beta-tester");
    let first = one_by_one(&envoy, vec![beta(); 3]).await;
    assert!(first
        .iter()
        .all(|r| r.status == 503 && r.header("x-upstream") == Some("canary")));
    assert_eq!(gauge(&envoy, "web", "canary"), Some(2));
    let later = send_all(&envoy.url(""), vec![beta(); 200], 8).await;
    assert!(
        later
            .iter()
            .all(|r| r.status == 200 && r.header("x-upstream") == Some("stable")),
        "{:?}",
        later[0]
    );
    assert_eq!(canary.requests(), 3);
    assert_eq!(
        gauge(&envoy, "web", "stable"),
        Some(0),
        "stable's own breaker is untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_concurrency_limit_rejects_the_next_in_flight_request_and_admits_again() {
    let (up, envoy) = start(r#"{"maxConcurrent":2}"#);
    let base = envoy.url("");
    let slow = Req::get("/").header("x-test-delay-ms", "1500");
    let (b1, b2, s1, s2) = (base.clone(), base.clone(), slow.clone(), slow.clone());
    let t1 = tokio::spawn(async move { send(&client(1), &b1, &s1).await });
    let t2 = tokio::spawn(async move { send(&client(1), &b2, &s2).await });
    until_upstream_saw(&up, 2).await;
    let third = send(&client(1), &base, &Req::get("/")).await;
    assert_eq!(third.status, 503);
    assert_eq!(third.header("x-meshguard-breaker"), Some("concurrency"));
    assert_eq!(
        (t1.await.unwrap().status, t2.await.unwrap().status),
        (200, 200)
    );
    let fourth = send(&client(1), &base, &Req::get("/")).await;
    assert_eq!(fourth.status, 200);
    assert_eq!(up.requests(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_streams_give_their_concurrency_slot_back() {
    let (_up, envoy) = start(r#"{"maxConcurrent":2}"#);
    let base = envoy.url("");
    // Ten clients give up on slow requests after 200 ms (their streams are reset).
    for _ in 0..10 {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let _ = c.get(&base).header("x-test-delay-ms", "600").send().await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = send_all(&base, vec![Req::get("/"); 2], 2).await;
    assert!(
        after.iter().all(|r| r.status == 200),
        "slots leaked: {:?}",
        after[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_timeouts_count_as_failures() {
    let up = Upstream::start("api");
    // Only 500 is a failure status; the 504s below count because of Envoy's
    // upstream-timeout response flag.
    let plugin =
        config(r#"{"failureStatuses":["500"],"consecutiveFailures":2,"openDurationMs":60000}"#);
    let b = Bootstrap::new(&plugin)
        .cluster("api", up.addr)
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "api", "timeout": "0.2s"}}));
    let envoy = Envoy::start(&b, 2);
    let slow = Req::get("/").header("x-test-delay-ms", "1000");
    let answers = one_by_one(&envoy, vec![slow; 2]).await;
    assert!(answers.iter().all(|r| r.status == 504));
    let next = one_by_one(&envoy, vec![Req::get("/")]).await;
    assert!(is_open_rejection(&next[0]), "{:?}", next[0]);
    // And a plain 503 with no flag does not count under this status set.
    let (_up2, envoy2) = start(r#"{"failureStatuses":["500"],"consecutiveFailures":2}"#);
    one_by_one(&envoy2, vec![fail(); 4]).await;
    assert_eq!(gauge(&envoy2, "flaky", "all"), Some(0));
}

/// `n` requests, `failing` of every 10 answered 503 by the upstream, sent from 8
/// connections over both workers; returns how many the breaker rejected.
async fn mixed(envoy: &Envoy, n: usize, failing: usize) -> usize {
    let reqs = (0..n)
        .map(|i| {
            if i % 10 < failing {
                fail()
            } else {
                Req::get("/")
            }
        })
        .collect();
    send_all(&envoy.url(""), reqs, 8)
        .await
        .iter()
        .filter(|r| r.header("x-meshguard-breaker").is_some())
        .count()
}

/// Successes are written to the shared window in batches (5 per worker for a
/// window of 100), failures at once: a failure rate well under the threshold must
/// not trip, one well over it must, with traffic on both workers.
#[tokio::test(flavor = "multi_thread")]
async fn batched_outcomes_trip_on_the_real_failure_rate_only() {
    let policy = r#"{"failureRateThreshold":50,"minimumCalls":20,"openDurationMs":60000}"#;
    let (_up, envoy) = start(policy);
    assert_eq!(
        mixed(&envoy, 2_000, 3).await,
        0,
        "30% failures must not trip"
    );
    assert_eq!(gauge(&envoy, "flaky", "all"), Some(0));
    for w in 0..2 {
        assert!(
            envoy.worker_connections(w) >= 1,
            "worker {w} served no connection"
        );
    }
    let (_up, envoy) = start(policy);
    let rejected = mixed(&envoy, 2_000, 8).await;
    assert!(
        rejected > 1_000,
        "80% failures must trip ({rejected} rejected)"
    );
    assert_eq!(gauge(&envoy, "flaky", "all"), Some(2), "open");
}

#[test]
fn envoy_refuses_bad_breaker_policies_with_their_paths() {
    let bad = r#"{"schemaVersion":1,"routes":[{"name":"web",
        "canary":{"variants":[{"name":"stable","weight":10000},{"name":"canary"}]},
        "breaker":{"failureRateThreshold":150,"window":{"calls":0},"halfOpenProbes":0,"whenOpen":{"fallbackVariant":"blue"}}}]}"#;
    let b = Bootstrap::new(bad).cluster("api", "127.0.0.1:9".parse().unwrap());
    let (status, log) = Envoy::run_expecting_exit(&b, Duration::from_secs(60));
    assert!(!status.success());
    for line in [
        "routes[0].breaker.failureRateThreshold: must be a percentage from 1 to 100, got 150",
        "routes[0].breaker.window.calls: must be 1 to 1000, got 0",
        "routes[0].breaker.halfOpenProbes: must be 1 to 1000, got 0",
        "routes[0].breaker.whenOpen.fallbackVariant: unknown variant \"blue\"",
    ] {
        assert!(
            log.contains(&format!("meshguard: invalid configuration: {line}")),
            "missing {line:?}:\n{log}"
        );
    }
}

/// A worker holds its breaker's successes back and writes them in batches; when
/// its streams end one at a time it goes idle after each (meshguard native then
/// writes what it holds as the last stream ends, the Wasm build's tick writes it).
/// With no later request on either worker they still reach the shared record: the
/// status document, read after a pause, counts every call.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_workers_held_successes_reach_the_shared_record_without_more_traffic() {
    let up = Upstream::start("api");
    let config = r#"{"schemaVersion":1,
      "explain":{"trustedSources":["127.0.0.1"],"statusPath":"/.well-known/meshguard/status"},
      "routes":[{"name":"flaky","breaker":{"failureRateThreshold":50,"minimumCalls":100}}]}"#;
    let envoy = Envoy::start(
        &Bootstrap::new(config).cluster("api", up.addr).balanced(),
        2,
    );
    let ok = one_by_one(&envoy, (0..3).map(|_| Req::get("/")).collect()).await;
    assert!(ok.iter().all(|r| r.status == 200), "{ok:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = send(
        &client(1),
        &envoy.url(""),
        &Req::get("/.well-known/meshguard/status"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let window = &doc["routes"][0]["breakers"][0]["window"];
    assert_eq!(window["calls"], 3, "{doc:#}");
    assert_eq!(window["failures"], 0, "{doc:#}");
}
