//! `envoy/demo.yaml` — what `make run` serves — does what the docs say (docs/src/getting-started.md).
//! Its fixed ports are swapped for free ones so the test never collides with a
//! running demo.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;

use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::load::{send_all, Req};
use meshguard_integration_tests::repo_root;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn demo_on_free_ports() -> (Envoy, String) {
    let mut yaml = std::fs::read_to_string(repo_root().join("envoy/demo.yaml")).unwrap();
    for fixed in ["9901", "10000", "10001", "10002", "10003"] {
        let port = free_port().to_string();
        yaml = yaml.replace(
            &format!("port_value: {fixed} "),
            &format!("port_value: {port} "),
        );
    }
    assert!(
        !yaml.contains("port_value: 1000"),
        "a demo port was not rewritten"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.yaml");
    std::fs::write(&path, yaml).unwrap();
    let envoy = Envoy::start_file(&path, dir, 2);
    let base = format!("http://{}", envoy.listener("main"));
    (envoy, base)
}

fn variant(r: &meshguard_integration_tests::load::Resp) -> String {
    assert_eq!(r.status, 200, "{r:?}");
    let tag = r
        .header("x-meshguard-variant")
        .expect("variant tag")
        .to_string();
    assert_eq!(
        r.body.trim(),
        tag,
        "the demo upstream answers with its own name"
    );
    tag
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_routes_beta_testers_to_canary_and_ignores_spoofed_headers() {
    let (_envoy, base) = demo_on_free_ports();
    let answers = send_all(
        &base,
        vec![
            Req::get("/").header("x-user-type", "beta-tester"),
            Req::get("/")
                .header("x-meshguard-variant", "canary")
                .header("x-user-id", "u-1"),
            Req::get("/")
                .header("x-meshguard-cluster", "canary")
                .header("x-user-id", "u-1"),
        ],
        1,
    )
    .await;
    assert_eq!(variant(&answers[0]), "canary");
    // u-1 hashes to stable at 5% (bucket below 9500); spoofing does not move it.
    assert_eq!(variant(&answers[1]), "stable");
    assert_eq!(variant(&answers[2]), "stable");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_sends_about_five_percent_of_users_to_canary_stickily() {
    let (_envoy, base) = demo_on_free_ports();
    let n = 4_000usize;
    let reqs: Vec<Req> = (0..n)
        .map(|i| Req::get("/").header("x-user-id", format!("demo-{i}")))
        .collect();
    let first = send_all(&base, reqs.clone(), 16).await;
    let again = send_all(&base, reqs, 16).await;
    let canary = first.iter().filter(|r| variant(r) == "canary").count();
    // Binomial(4000, 0.05): sd 13.8; 3 sd = 41.
    assert!((canary as f64 - 200.0).abs() <= 41.4, "{canary}/{n}");
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(variant(a), variant(b));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_limits_each_client_to_five_per_second_on_limited() {
    let (_envoy, base) = demo_on_free_ports();
    let answers = send_all(&base, vec![Req::get("/limited"); 8], 1).await;
    let codes: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(codes, vec![200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(
        answers[0].header("ratelimit-policy"),
        Some(r#""per-client";q=5;w=1"#)
    );
    assert_eq!(
        answers[4].header("ratelimit"),
        Some(r#""per-client";r=0;t=1"#)
    );
    assert_eq!(answers[5].header("retry-after"), Some("1"));
    assert_eq!(answers[5].body, "rate limited\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_breaker_on_flaky_opens_after_five_failures() {
    let (envoy, base) = demo_on_free_ports();
    let fail = Req::get("/flaky").header("x-demo-fail", "1");
    let answers = send_all(&base, vec![fail; 6], 1).await;
    let codes: Vec<(u16, Option<&str>)> = answers
        .iter()
        .map(|r| (r.status, r.header("x-meshguard-breaker")))
        .collect();
    assert_eq!(&codes[..5], &[(503, None); 5]);
    assert_eq!(codes[5], (503, Some("open")));
    assert_eq!(answers[5].header("retry-after"), Some("5"));
    let ok = send_all(&base, vec![Req::get("/flaky")], 1).await;
    assert_eq!(
        ok[0].header("x-meshguard-breaker"),
        Some("open"),
        "healthy requests wait too while open"
    );
    assert!(envoy
        .log()
        .contains("meshguard: breaker flaky/all: closed -> open (5 consecutive failures)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_exposes_labelled_series_for_every_route() {
    let (envoy, base) = demo_on_free_ports();
    send_all(
        &base,
        vec![Req::get("/"), Req::get("/limited"), Req::get("/flaky")],
        1,
    )
    .await;
    let scrape = envoy.scrape();
    for series in [
        r#"meshguard_requests_total{route="web",variant="stable",code_class="2xx"}"#,
        r#"meshguard_requests_total{route="limited",variant="none",code_class="2xx"} 1"#,
        r#"meshguard_requests_total{route="flaky",variant="none",code_class="2xx"} 1"#,
        r#"meshguard_requests_total{route="other",variant="none",code_class="5xx"} 0"#,
        r#"meshguard_ratelimit_requests_total{policy="per-client",outcome="allowed"} 1"#,
        r#"meshguard_breaker_state{route="flaky",variant="all"} 0"#,
        r#"meshguard_request_duration_milliseconds_bucket{route="web",variant="canary",le="5"}"#,
    ] {
        assert!(scrape.contains(series), "missing {series}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_checkout_canary_fails_half_its_requests_and_is_rolled_back_under_load() {
    let (envoy, base) = demo_on_free_ports();
    let weight = |route: &str| {
        envoy.stat(&format!(
            "wasmcustom.meshguard.canary_weight.route.{route}.variant.canary"
        ))
    };
    assert_eq!(weight("checkout"), Some(500));
    assert_eq!(weight("catalog"), Some(500), "the ramp's first step");
    assert_eq!(
        envoy.stat("wasmcustom.meshguard.canary_state.route.catalog.variant.canary.state.ramping"),
        Some(1)
    );
    let mut failed_on_canary = 0;
    for _ in 0..100 {
        if weight("checkout") == Some(0) {
            break;
        }
        let out = send_all(&base, vec![Req::get("/checkout"); 40], 8).await;
        failed_on_canary += out
            .iter()
            .filter(|r| r.status == 503 && r.header("x-meshguard-variant") == Some("canary"))
            .count();
    }
    assert_eq!(weight("checkout"), Some(0), "rolled back:\n{}", envoy.log());
    assert!(failed_on_canary > 0, "the canary really failed");
    // Every worker reads the verdict within a tick (50 ms).
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let out = send_all(&base, vec![Req::get("/checkout"); 200], 8).await;
    assert!(out.iter().all(|r| variant(r) == "stable"));
    assert!(envoy
        .log()
        .contains("meshguard: canary checkout/canary: holding -> rolled_back (errors: e-value"));
    // Open the breaker on /flaky, then ask `meshguard status` what the demo is doing.
    let fail = Req::get("/flaky").header("x-demo-fail", "1");
    send_all(&base, vec![fail; 5], 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let out = std::process::Command::new(repo_root().join("target/release/meshguard"))
        .args(["status", &format!("{base}/.well-known/meshguard/status")])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let block = |route: &str| {
        let start = table
            .find(&format!("route {route}"))
            .unwrap_or_else(|| panic!("{route}: {table}"));
        let rest = &table[start + 1..];
        rest[..rest.find("\nroute ").unwrap_or(rest.len())].to_string()
    };
    let checkout = block("checkout");
    assert!(
        checkout
            .lines()
            .any(|l| l.trim_start().starts_with("canary")
                && l.contains("0.00%")
                && l.contains("rolled_back")),
        "{table}"
    );
    assert!(
        checkout.contains("stable           100.00%  baseline"),
        "{table}"
    );
    let flaky = block("flaky");
    assert!(
        flaky
            .lines()
            .any(|l| l.trim_start().starts_with("all") && l.contains(" open ")),
        "{table}"
    );
    assert!(table.contains("per-client"), "{table}");
    // Every request leaves an access log line with its decision: the rejected one too.
    let r = send_all(&base, vec![Req::get("/flaky")], 1).await;
    assert_eq!(r[0].status, 503);
    let want = r#"meshguard={"route":"flaky","breaker":"open","reply":"breaker_open"}"#;
    let mut log = String::new();
    for _ in 0..40 {
        log = envoy.log();
        if log
            .lines()
            .any(|l| l.contains("\"GET /flaky\" 503") && l.contains(want))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        log.lines()
            .any(|l| l.contains("\"GET /flaky\" 503") && l.contains(want)),
        "{log}"
    );
}
