//! Mesh traffic beyond HTTP/1.1 request/response pairs, with real clients and
//! servers, against a real Envoy at `--concurrency 2`: gRPC outcomes (grpcio),
//! gRPC-shaped rejections, HTTP/2 streams sharing one connection, WebSocket
//! sessions, and large or odd bodies.

use std::time::Duration;

use meshguard_integration_tests::bootstrap::Bootstrap;
use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::grpc::{grpc_calls, GrpcServer};
use serde_json::json;

/// Envoy with meshguard (`config`) in front of the gRPC server; `route_extra` is
/// merged into the Envoy route's `route` (e.g. a timeout).
fn grpc_rig(config: &str, server: &GrpcServer, route_extra: serde_json::Value) -> Envoy {
    let mut route = json!({"cluster": "grpc"});
    if let (Some(r), Some(extra)) = (route.as_object_mut(), route_extra.as_object()) {
        for (k, v) in extra {
            r.insert(k.clone(), v.clone());
        }
    }
    let b = Bootstrap::new(config)
        .grpc_cluster("grpc", server.addr)
        .route(json!({"match": {"prefix": "/"}, "route": route}));
    Envoy::start(&b, 2)
}

fn grpc_count(envoy: &Envoy, status: &str) -> u64 {
    envoy
        .stat(&format!(
            "wasmcustom.meshguard.grpc_requests_total.route.rpc.variant.none.grpc_status.{status}"
        ))
        .unwrap_or(0)
}

#[test]
fn unary_grpc_failures_are_counted_by_code_and_open_the_breaker() {
    let server = GrpcServer::start(2); // every other call: UNAVAILABLE
    let config = r#"{"schemaVersion":1,"routes":[{"name":"rpc","protocol":"grpc",
        "breaker":{"failureRateThreshold":50,"minimumCalls":20,"window":{"calls":20},
                   "openDurationMs":30000,"whenOpen":{"body":"circuit open\n"}}}]}"#;
    let envoy = grpc_rig(config, &server, json!({}));
    let results = grpc_calls(envoy.listener("main"), "unary", "ping", 40, 1);
    let server_failures = results
        .iter()
        .filter(|r| r.code == "UNAVAILABLE" && r.details == "backend unavailable")
        .count();
    let ok = results.iter().filter(|r| r.code == "OK").count();
    let rejected: Vec<_> = results
        .iter()
        .filter(|r| r.code == "UNAVAILABLE" && r.details == "circuit open")
        .collect();
    // The breaker opens once 20 calls are in the window with half of them failed.
    assert_eq!(ok + server_failures + rejected.len(), 40, "{results:?}");
    assert!((10..=11).contains(&server_failures), "{results:?}");
    assert!(rejected.len() >= 18, "{results:?}");
    // gRPC's retry hint comes with the rejection.
    let pushback = rejected[0].trailing.get("grpc-retry-pushback-ms");
    assert!(
        pushback.is_some_and(|v| v.parse::<u64>().is_ok_and(|ms| ms >= 1000)),
        "{:?}",
        rejected[0]
    );
    assert_eq!(grpc_count(&envoy, "OK"), ok as u64);
    assert!(grpc_count(&envoy, "UNAVAILABLE") >= server_failures as u64);
    assert_eq!(
        envoy.stat("wasmcustom.meshguard.breaker_state.route.rpc.variant.all"),
        Some(2)
    );
    // Envoy itself sees HTTP 200s: the failures are in grpc-status only.
    assert!(
        envoy.wasm_failures().is_empty(),
        "{:?}",
        envoy.wasm_failures()
    );
}

#[test]
fn a_rate_limited_grpc_call_is_resource_exhausted() {
    let server = GrpcServer::start(0);
    let config = r#"{"schemaVersion":1,"routes":[{"name":"rpc","protocol":"grpc"}],
        "rateLimits":[{"name":"calls","limit":{"burst":5,"rate":1,"per":"hour"}}]}"#;
    let envoy = grpc_rig(config, &server, json!({}));
    let results = grpc_calls(envoy.listener("main"), "unary", "ping", 10, 1);
    let codes: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r.code.as_str(), r.details.as_str()))
        .collect();
    assert_eq!(codes[..5], [("OK", ""); 5]);
    assert_eq!(codes[5..], [("RESOURCE_EXHAUSTED", "rate limited"); 5]);
    assert!(results[9].trailing.contains_key("grpc-retry-pushback-ms"));
    assert_eq!(
        envoy.stat("wasmcustom.meshguard.ratelimit_requests_total.policy.calls.outcome.limited"),
        Some(5)
    );
}

#[test]
fn a_stream_that_ends_badly_or_is_reset_is_a_failure() {
    let server = GrpcServer::start(0);
    let config = r#"{"schemaVersion":1,"routes":[{"name":"rpc","protocol":"grpc","latency":"headers",
        "breaker":{"consecutiveFailures":2,"openDurationMs":30000}}]}"#;
    // Envoy gives up on a stream after 400 ms: once the response has started, it
    // can only reset it (flag UT).
    let envoy = grpc_rig(config, &server, json!({"timeout": "0.4s"}));
    let target = envoy.listener("main");
    // Three messages then OK: a success.
    let ok = grpc_calls(target, "stream", "3 10 0", 1, 1);
    assert_eq!((ok[0].code.as_str(), ok[0].messages), ("OK", 3));
    // Three messages then UNAVAILABLE in the trailers: a failure.
    let bad = grpc_calls(target, "stream", "3 10 14", 1, 1);
    assert_eq!((bad[0].code.as_str(), bad[0].messages), ("UNAVAILABLE", 3));
    assert_eq!(
        envoy.stat("wasmcustom.meshguard.breaker_state.route.rpc.variant.all"),
        Some(0)
    );
    // Twenty messages 50 ms apart: reset by Envoy's timeout after a few.
    let reset = grpc_calls(target, "stream", "20 50 0", 1, 1);
    assert_ne!(reset[0].code, "OK", "{reset:?}");
    assert!(reset[0].messages < 20, "{reset:?}");
    // Two failures in a row: open; the next call gets meshguard's UNAVAILABLE.
    assert_eq!(
        envoy.stat("wasmcustom.meshguard.breaker_state.route.rpc.variant.all"),
        Some(2)
    );
    let after = grpc_calls(target, "stream", "1 0 0", 1, 1);
    assert_eq!(
        (after[0].code.as_str(), after[0].details.as_str()),
        ("UNAVAILABLE", "circuit open")
    );
    assert_eq!(grpc_count(&envoy, "OK"), 1);
    assert!(grpc_count(&envoy, "UNAVAILABLE") >= 1);
    assert!(grpc_count(&envoy, "none") >= 1, "the reset stream");
}

fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP/2 client")
}

/// Sends `n` GETs at once on one HTTP/2 connection, each held `delay_ms` by the
/// upstream; statuses in order (0: the client gave up after `give_up`).
async fn h2_burst(
    client: &reqwest::Client,
    base: &str,
    n: usize,
    delay_ms: u64,
    give_up: Duration,
) -> Vec<u16> {
    let calls = (0..n).map(|_| {
        let req = client
            .get(format!("{base}/"))
            .header("x-test-delay-ms", delay_ms.to_string())
            .send();
        async move {
            match tokio::time::timeout(give_up, req).await {
                Ok(Ok(r)) => r.status().as_u16(),
                Ok(Err(e)) => panic!("request failed: {e}"),
                Err(_) => 0, // dropped: the stream is reset
            }
        }
    });
    futures_util::future::join_all(calls).await
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_streams_each_hold_one_slot_and_reset_streams_give_theirs_back() {
    let up = meshguard_integration_tests::upstream::Upstream::start("web");
    let config = r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{"maxConcurrent":100}}]}"#;
    let envoy = Envoy::start(&Bootstrap::new(config).cluster("web", up.addr), 2);
    let base = envoy.url("");
    let client = h2_client();
    // 500 streams on one connection while 100 are held: exactly 100 pass.
    let statuses = h2_burst(&client, &base, 500, 1_500, Duration::from_secs(20)).await;
    let count = |s: u16| statuses.iter().filter(|x| **x == s).count();
    assert_eq!((count(200), count(503)), (100, 400), "{statuses:?}");
    assert_eq!(
        envoy.worker_connections(0) + envoy.worker_connections(1),
        1,
        "one connection"
    );
    // 100 streams reset by the client while held: their slots come back.
    let reset = h2_burst(&client, &base, 100, 5_000, Duration::from_millis(400)).await;
    assert!(reset.iter().all(|s| *s == 0), "{reset:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let statuses = h2_burst(&client, &base, 150, 500, Duration::from_secs(20)).await;
    let count = |s: u16| statuses.iter().filter(|x| **x == s).count();
    assert_eq!((count(200), count(503)), (100, 50), "{statuses:?}");
    let in_flight = "wasmcustom.meshguard.requests_in_flight.route.web";
    assert_eq!(envoy.stat(in_flight), Some(0));
    assert!(
        envoy.wasm_failures().is_empty(),
        "{:?}",
        envoy.wasm_failures()
    );
}

/// Prometheus text: the value of the first sample whose line starts with `prefix`.
fn sample(scrape: &str, prefix: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls the scrape until `prefix` reads `want` (histograms reach it on Envoy's
/// stats flush, every second in tests) or 5 s pass.
fn eventually(envoy: &Envoy, prefix: &str, want: f64) -> Option<f64> {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = sample(&envoy.scrape(), prefix);
        if got == Some(want) || std::time::Instant::now() > until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_session_counts_once_without_failing_or_distorting_latency() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ws = meshguard_integration_tests::upstream::WsEcho::start();
    let up = meshguard_integration_tests::upstream::Upstream::start("web");
    // One failure would open this breaker.
    let config =
        r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{"consecutiveFailures":1}}]}"#;
    let b = Bootstrap::new(config)
        .cluster("web", up.addr)
        .cluster("ws", ws.addr)
        .route(json!({"match": {"prefix": "/ws"}, "route": {"cluster": "ws"}}))
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "web"}}))
        .hcm(json!({"upgrade_configs": [{"upgrade_type": "websocket"}]}));
    let envoy = Envoy::start(&b, 2);
    let url = format!("ws://{}/ws", envoy.listener("main"));
    let (mut socket, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws handshake");
    assert_eq!(response.status().as_u16(), 101);
    // Three seconds of messages, while 50 plain requests go by.
    let base = envoy.url("");
    let http = tokio::spawn(async move {
        let client = reqwest::Client::new();
        for _ in 0..50 {
            let r = client
                .get(format!("{base}/"))
                .header("x-test-delay-ms", "20")
                .send()
                .await
                .expect("request");
            assert_eq!(r.status().as_u16(), 200);
        }
    });
    for i in 0..30 {
        socket
            .send(Message::text(format!("m{i}")))
            .await
            .expect("send");
        let echo = socket.next().await.expect("echo").expect("echo frame");
        assert_eq!(echo, Message::text(format!("m{i}")));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    socket.close(None).await.expect("close");
    while socket.next().await.is_some() {}
    http.await.expect("plain requests");
    let r = |class: &str| {
        format!(r#"meshguard_requests_total{{route="web",variant="none",code_class="{class}"}}"#)
    };
    let got = eventually(&envoy, &r("1xx"), 1.0);
    let scrape = envoy.scrape();
    let lines: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("meshguard_request"))
        .collect();
    assert_eq!(got, Some(1.0), "{lines:#?}");
    assert_eq!(eventually(&envoy, &r("2xx"), 50.0), Some(50.0));
    // The latency histogram holds the 50 requests, not the 3 s session.
    let count = r#"meshguard_request_duration_milliseconds_count{route="web",variant="none"}"#;
    assert_eq!(eventually(&envoy, count, 50.0), Some(50.0));
    let slow =
        r#"meshguard_request_duration_milliseconds_bucket{route="web",variant="none",le="1000"}"#;
    assert_eq!(eventually(&envoy, slow, 50.0), Some(50.0));
    assert_eq!(
        envoy.stat("wasmcustom.meshguard.breaker_state.route.web.variant.all"),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_and_odd_bodies_pass_untouched_and_count_once() {
    let up = meshguard_integration_tests::upstream::Upstream::start("web");
    let config = r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{"consecutiveFailures":1}}],
        "rateLimits":[{"name":"all","limit":{"burst":100,"rate":1,"per":"second"}}]}"#;
    let envoy = Envoy::start(&Bootstrap::new(config).cluster("web", up.addr), 2);
    let base = envoy.url("");
    // A 10 MiB upload with `Expect: 100-continue` (curl, a real client), echoed back.
    let dir = tempfile::tempdir().unwrap();
    let upload = meshguard_integration_tests::upstream::pattern(10 << 20);
    let file = dir.path().join("up.bin");
    let echoed = dir.path().join("echo.bin");
    std::fs::write(&file, &upload).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "-o"])
        .arg(&echoed)
        .args([
            "-H",
            "Expect: 100-continue",
            "-H",
            "x-test-echo-body: 1",
            "-T",
        ])
        .arg(&file)
        .arg(format!("{base}/upload"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&echoed).unwrap() == upload,
        "the echo differs"
    );
    // A chunked 10 MiB download.
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{base}/download"))
        .header("x-test-size", (10 << 20).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers().get("transfer-encoding").map(|v| v.as_bytes()),
        Some(&b"chunked"[..])
    );
    let body = r.bytes().await.unwrap();
    assert!(body.as_ref() == meshguard_integration_tests::upstream::pattern(10 << 20).as_slice());
    // HEAD, 204 and 304: no body, one count each.
    let head = client.head(format!("{base}/")).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
    for status in ["204", "304"] {
        let r = client
            .get(format!("{base}/"))
            .header("x-test-status", status)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_str(), status);
        assert!(r.bytes().await.unwrap().is_empty());
    }
    let r = |class: &str| {
        format!(r#"meshguard_requests_total{{route="web",variant="none",code_class="{class}"}}"#)
    };
    assert_eq!(eventually(&envoy, &r("2xx"), 4.0), Some(4.0));
    assert_eq!(eventually(&envoy, &r("3xx"), 1.0), Some(1.0));
    let count = r#"meshguard_request_duration_milliseconds_count{route="web",variant="none"}"#;
    assert_eq!(eventually(&envoy, count, 5.0), Some(5.0));
    assert_eq!(
        envoy.stat("wasmcustom.meshguard.ratelimit_requests_total.policy.all.outcome.allowed"),
        Some(5)
    );
    assert_eq!(
        envoy.stat("wasmcustom.meshguard.breaker_state.route.web.variant.all"),
        Some(0)
    );
}
