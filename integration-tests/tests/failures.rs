//! Every failure counted where operators look: real Envoy, a real grpcio server
//! and client, HTTP upstreams that fail with 503 or reset mid-response, and a
//! real Prometheus scraping through the shipped `prometheus.yml` with the shipped
//! rules. What the breaker and the analysis count as a failure is what
//! `meshguard_request_failures_total` counts, what the recorded error ratios
//! divide, and what fires the burn-rate alerts; a caller's errors do not.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use meshguard_integration_tests::bootstrap::Bootstrap;
use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::grpc::{grpc_calls, GrpcServer};
use meshguard_integration_tests::load::{send_all, Req};
use meshguard_integration_tests::prometheus::Prometheus;
use meshguard_integration_tests::upstream::Upstream;
use serde_json::json;

/// A server that answers `200` with a body shorter than its `content-length`
/// and closes: Envoy sees the upstream connection end mid-response.
fn resetting_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial");
            let _ = s.flush();
            drop(s);
        }
    });
    addr
}

fn config() -> &'static str {
    // Default settings everywhere: no `protocol`, no breaker, no analysis.
    r#"{"schemaVersion":1,"routes":[
        {"name":"rpc","match":{"pathPrefix":"/test.Echo/"}},
        {"name":"web","match":{"pathPrefix":"/web"}},
        {"name":"cut","match":{"pathPrefix":"/cut"}},
        {"name":"missing","match":{"pathPrefix":"/missing"}}]}"#
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_failures_503s_and_resets_fill_the_failure_counter_the_ratios_and_the_fast_burn_alert()
{
    let grpc = GrpcServer::start(0);
    let web = Upstream::start_failing("web", 2);
    let plain = Upstream::start("missing");
    let cut = resetting_upstream();
    let b = Bootstrap::new(config())
        .grpc_cluster("grpc", grpc.addr)
        .cluster("web", web.addr)
        .cluster("cut", cut)
        .cluster("missing", plain.addr)
        .route(json!({"match": {"prefix": "/test.Echo/"}, "route": {"cluster": "grpc"}}))
        .route(json!({"match": {"prefix": "/web"}, "route": {"cluster": "web"}}))
        .route(json!({"match": {"prefix": "/cut"}, "route": {"cluster": "cut"}}))
        .route(json!({"match": {"prefix": "/missing"}, "route": {"cluster": "missing"}}));
    let envoy = Envoy::start(&b, 2);
    let prom = Prometheus::start(&envoy.admin.to_string());
    // Prometheus has the counters at 0 before any traffic (rate() counts only
    // increases it saw).
    assert_eq!(
        prom.wait_for(
            r#"count(meshguard_request_failures_total{route="rpc"})"#,
            1.0
        )
        .await,
        1.0,
        "{}",
        prom.log()
    );

    // gRPC, all HTTP 200: 12 UNAVAILABLE (a failure), 8 INVALID_ARGUMENT (the
    // caller's), 20 OK. The streaming method ends with the code it is asked for.
    let target = envoy.listener("main");
    let mut codes = Vec::new();
    for (request, n) in [("0 0 14", 12), ("0 0 3", 8), ("1 0 0", 20)] {
        codes.extend(
            grpc_calls(target, "stream", request, n, 4)
                .into_iter()
                .map(|r| r.code),
        );
    }
    assert_eq!(
        codes.iter().filter(|c| *c == "UNAVAILABLE").count(),
        12,
        "{codes:?}"
    );
    assert_eq!(codes.iter().filter(|c| *c == "INVALID_ARGUMENT").count(), 8);
    // HTTP: every other request 503; 10 cut short; 6 answered 404 (the caller's).
    let base = envoy.url("");
    let web_answers = send_all(&base, vec![Req::get("/web"); 20], 4).await;
    assert_eq!(web_answers.iter().filter(|r| r.status == 503).count(), 10);
    // Cut short: the body never completes (read as far as it goes).
    let client = reqwest::Client::new();
    for _ in 0..10 {
        if let Ok(r) = client.get(format!("{base}/cut")).send().await {
            assert_eq!(r.status(), 200);
            assert!(r.bytes().await.is_err(), "the body ends early");
        }
    }
    let missing = send_all(
        &base,
        vec![Req::get("/missing").header("x-test-status", "404"); 6],
        2,
    )
    .await;
    assert!(missing.iter().all(|r| r.status == 404));

    // The counters, read through Prometheus.
    let failures =
        |route: &str| format!(r#"sum(meshguard_request_failures_total{{route="{route}"}})"#);
    assert_eq!(
        prom.wait_for(&failures("rpc"), 12.0).await,
        12.0,
        "{}",
        prom.log()
    );
    assert_eq!(prom.wait_for(&failures("web"), 10.0).await, 10.0);
    assert_eq!(
        prom.wait_for(&failures("cut"), 10.0).await,
        10.0,
        "resets count"
    );
    assert_eq!(
        prom.wait_for(&failures("missing"), 0.0).await,
        0.0,
        "a 404 does not"
    );
    let requests = prom
        .wait_for(r#"sum(meshguard_requests_total{route="rpc"})"#, 40.0)
        .await;
    assert_eq!(requests, 40.0);
    // The recorded error ratio is the failed share: both counters move in the
    // same scrapes, so the ratio of their rates is the ratio of the counts.
    let ratio = {
        let mut got = f64::NAN;
        for _ in 0..60 {
            if let [(_, v)] = prom
                .query(r#"meshguard:route_error_ratio:rate5m{route="rpc"}"#)
                .await
                .as_slice()
            {
                got = *v;
                if (got - 0.3).abs() < 0.01 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        got
    };
    assert!((ratio - 12.0 / 40.0).abs() < 0.01, "error ratio {ratio}");
    // The fast-burn alert is pending (its `for:` runs) or firing for the gRPC
    // route, and for the 503s and the resets; never for the 404s.
    let mut alerting = Vec::new();
    for _ in 0..60 {
        alerting = prom
            .query(r#"ALERTS{alertname="MeshguardErrorBudgetBurnFast"}"#)
            .await
            .into_iter()
            .map(|(m, _)| m["route"].as_str().unwrap_or_default().to_string())
            .collect();
        alerting.sort();
        if alerting.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(alerting, ["cut", "rpc", "web"], "{}", prom.log());
}
