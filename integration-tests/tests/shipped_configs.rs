//! `envoy/sidecar.yaml` and `envoy/edge-gateway.yaml` carry real traffic as
//! their comments promise (fixed ports swapped for free ones).

use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::load::{client, send, send_all, Req};
use meshguard_integration_tests::upstream::{echoed_header, Upstream};

fn upstream_of(r: &meshguard_integration_tests::load::Resp) -> String {
    assert_eq!(r.status, 200, "{r:?}");
    r.header("x-upstream").unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecar_routes_variants_and_keeps_propagated_canary_requests_on_canary() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let envoy = Envoy::start_repo_config(
        "sidecar.yaml",
        &[(8081, stable.addr.port()), (8082, canary.addr.port())],
        &[15000, 15006],
        2,
    );
    let base = format!("http://{}", envoy.listener("main"));
    let answers = send_all(
        &base,
        vec![
            Req::get("/orders").header("x-user-type", "beta-tester"),
            // A mesh caller (loopback is trusted) already on canary stays there.
            Req::get("/orders").header("x-meshguard-variant", "canary"),
            Req::get("/orders").header("x-meshguard-variant", "stable"),
        ],
        1,
    )
    .await;
    let got: Vec<String> = answers.iter().map(upstream_of).collect();
    assert_eq!(got, vec!["canary", "canary", "stable"]);
    let echo: serde_json::Value = serde_json::from_str(&answers[0].body).unwrap();
    assert_eq!(
        echoed_header(&echo, "x-meshguard-route"),
        vec![b"api".to_vec()]
    );
    // Sticky users: about 10% on canary, each always on the same one.
    let users: Vec<Req> = (0..2000)
        .map(|i| Req::get("/").header("x-user-id", format!("u{i}")))
        .collect();
    let first: Vec<String> = send_all(&base, users.clone(), 16)
        .await
        .iter()
        .map(upstream_of)
        .collect();
    let again: Vec<String> = send_all(&base, users, 16)
        .await
        .iter()
        .map(upstream_of)
        .collect();
    assert_eq!(first, again);
    let on_canary = first.iter().filter(|u| *u == "canary").count();
    // Binomial(2000, 0.1): sd 13.4; 3 sd = 40.
    assert!((on_canary as i64 - 200).abs() <= 40, "{on_canary}");
    assert_decisions_logged(&envoy);
}

#[tokio::test(flavor = "multi_thread")]
async fn edge_gateway_scrubs_client_headers_limits_per_client_and_pins_browsers() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let envoy = Envoy::start_repo_config(
        "edge-gateway.yaml",
        &[(9081, stable.addr.port()), (9082, canary.addr.port())],
        &[8001, 8080],
        2,
    );
    let base = format!("http://{}", envoy.listener("main"));
    // Spoofed routing headers never reach canary, and never reach the upstream as sent.
    let spoofs: Vec<Req> = (0..100)
        .map(|i| {
            Req::get("/")
                .header("x-meshguard-variant", "canary")
                .header("x-meshguard-cluster", "shop-canary")
                .header("x-meshguard-route", "admin")
                .header("cookie", format!("mg-uid=fixed-{}", i % 3))
        })
        .collect();
    let c = client(4);
    for r in &spoofs[..20] {
        let resp = send(&c, &base, r).await;
        if resp.status == 429 {
            break;
        }
        let echo: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
        assert_ne!(
            echoed_header(&echo, "x-meshguard-cluster"),
            vec![b"shop-canary".to_vec()]
        );
        assert!(
            echoed_header(&echo, "x-meshguard-route").is_empty(),
            "client-sent route header survived"
        );
    }
    assert!(canary.requests() + stable.requests() > 0);
    // The per-client limit (burst 20, 10/s) holds whatever X-Forwarded-For says.
    let edge_client = client(1);
    let mut codes = Vec::new();
    for i in 0..40 {
        let r = send(
            &edge_client,
            &base,
            &Req::get("/").header("x-forwarded-for", format!("198.51.100.{i}")),
        )
        .await;
        codes.push(r.status);
    }
    let limited = codes.iter().filter(|c| **c == 429).count();
    assert!(limited >= 10, "expected the burst to run out: {codes:?}");
    // A new browser gets a sticky cookie; sending it back keeps its variant.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await; // refill
    let browser = client(1);
    let first = send(&browser, &base, &Req::get("/")).await;
    let cookie = first
        .header("set-cookie")
        .expect("sticky cookie issued")
        .to_string();
    assert!(
        cookie.starts_with("mg-uid=") && cookie.contains("HttpOnly") && cookie.contains("Secure"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let variant = upstream_of(&first);
    for _ in 0..5 {
        let r = send(&browser, &base, &Req::get("/").header("cookie", &pair)).await;
        assert_eq!(upstream_of(&r), variant);
        assert!(
            r.header("ratelimit").is_some(),
            "allowed responses advertise the limit"
        );
    }
    assert_decisions_logged(&envoy);
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_config_limits_each_api_key_through_the_rate_limit_service() {
    use meshguard_integration_tests::rls::{Redis, RlsServer};
    let redis = Redis::start();
    let limits = std::fs::read_to_string(
        meshguard_integration_tests::repo_root().join("envoy/ratelimit/limits.yaml"),
    )
    .unwrap();
    let rls = RlsServer::start(&limits, Some(&redis.url()), 0);
    let envoy = Envoy::start_repo_config(
        "fleet.yaml",
        &[(8081, rls.addr.port()), (8082, rls.addr.port())],
        &[9901, 10000, 10001, 10002, 10003],
        2,
    );
    let base = format!("http://{}", envoy.listener("main"));
    // Warm the connection to the service (a cold one may miss the 50 ms timeout,
    // and onError: allow would then admit).
    send_all(&base, vec![Req::get("/").header("x-api-key", "warm-up")], 1).await;
    let answers = send_all(&base, vec![Req::get("/").header("x-api-key", "k1"); 30], 4).await;
    let admitted = answers.iter().filter(|r| r.status == 200).count() as u64;
    let errors = envoy
        .stat("wasmcustom.meshguard.ratelimit_requests_total.policy.per-api-key.outcome.error_allowed")
        .unwrap_or(0);
    // 10 per second per key, fleet-wide (a second may begin during the burst).
    assert!(
        (1..=20 + errors).contains(&admitted),
        "{admitted} admitted, {errors} calls failed"
    );
    assert!(answers.iter().any(|r| r.status == 429));
    let other = send_all(&base, vec![Req::get("/").header("x-api-key", "k2")], 1).await;
    assert_eq!(other[0].status, 200, "each key its own counter");
    assert_decisions_logged(&envoy);
}

/// `make run-fleet`'s three Envoys (envoy/fleet.yaml) and two replicas: the
/// checkout canary, failing half its requests, is stopped by all three once
/// the fleet's verdict is in, though each saw a third of the traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_config_judges_the_checkout_canary_for_three_envoys_as_one() {
    use meshguard_integration_tests::rls::{Redis, RlsServer};
    let redis = Redis::start();
    let limits = std::fs::read_to_string(
        meshguard_integration_tests::repo_root().join("envoy/ratelimit/limits.yaml"),
    )
    .unwrap();
    let replicas: Vec<RlsServer> = (0..2)
        .map(|_| RlsServer::start(&limits, Some(&redis.url()), 0))
        .collect();
    let envoys: Vec<Envoy> = (0..3)
        .map(|_| {
            Envoy::start_repo_config(
                "fleet.yaml",
                &[
                    (8081, replicas[0].addr.port()),
                    (8082, replicas[1].addr.port()),
                ],
                &[9901, 10000, 10001, 10002, 10003],
                2,
            )
        })
        .collect();
    let rolled_back = |e: &Envoy| {
        e.stat_now(
            "wasmcustom.meshguard.canary_state.route.checkout.variant.canary.state.rolled_back",
        ) == Some(1)
    };
    let mut rounds = 0;
    while rounds < 300 && !envoys.iter().any(rolled_back) {
        for e in &envoys {
            send_all(&e.url("/checkout"), vec![Req::get("/checkout"); 10], 4).await;
        }
        rounds += 1;
    }
    assert!(rounds < 300, "no verdict");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    for e in &envoys {
        assert!(rolled_back(e), "{}", e.log());
        let answers = send_all(&e.url("/checkout"), vec![Req::get("/checkout"); 40], 4).await;
        assert!(answers
            .iter()
            .all(|r| r.status == 200 && r.header("x-meshguard-variant") == Some("stable")));
    }
}

/// The shipped access log line carries meshguard's decision with Envoy's request id.
fn assert_decisions_logged(envoy: &Envoy) {
    let mut log = String::new();
    for _ in 0..40 {
        log = envoy.log();
        if log
            .lines()
            .any(|l| l.contains(" id=") && l.contains(r#"meshguard={"route":""#))
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no access log line with a decision:\n{log}");
}
