//! The foundation against a real Envoy: configs load or are refused, traffic
//! flows, routes match as configured, and hostile headers never trap the VM.

use std::time::Duration;

use meshguard_integration_tests::bootstrap::Bootstrap;
use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::upstream::{echoed_header, Upstream};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

const ROUTES: &str = r#"{
  "schemaVersion": 1,
  "routeHeader": "x-meshguard-route",
  "routes": [
    { "name": "beta", "match": { "authority": ["*.example.com"], "methods": ["GET"],
                                 "headers": [{ "name": "x-user-type", "exact": "beta-tester" }] } },
    { "name": "binary", "match": { "headers": [{ "name": "x-raw", "regex": "(?s-u)\\xff.*" }] } },
    { "name": "many", "match": { "headers": [{ "name": "x-h-99", "exact": "v99" }] } },
    { "name": "api", "match": { "pathPrefix": "/api" } },
    { "name": "user", "match": { "pathRegex": "/users/[0-9]+" } }
  ]
}"#;

async fn get(url: &str, headers: &[(&str, &[u8])]) -> (u16, serde_json::Value) {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v).unwrap(),
        );
    }
    let resp = reqwest::Client::new()
        .get(url)
        .headers(map)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

fn route_seen(echo: &serde_json::Value) -> Vec<String> {
    echoed_header(echo, "x-meshguard-route")
        .into_iter()
        .map(|v| String::from_utf8(v).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_config_loads_and_requests_reach_the_upstream() {
    let up = Upstream::start("stable");
    let envoy = Envoy::start(&Bootstrap::new(ROUTES).cluster("stable", up.addr), 2);
    for i in 0..20 {
        let (status, echo) = get(&envoy.url(&format!("/api/{i}")), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(echo["upstream"], "stable");
        assert_eq!(echo["path"], format!("/api/{i}"));
    }
    assert_eq!(up.requests(), 20);
    assert!(envoy
        .log()
        .contains("meshguard: configuration loaded: 5 route(s)"));
    assert_eq!(envoy.wasm_failures(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_match_in_order_on_path_method_authority_and_headers() {
    let up = Upstream::start("stable");
    let envoy = Envoy::start(&Bootstrap::new(ROUTES).cluster("stable", up.addr), 2);
    type Case<'a> = (&'a str, &'a [(&'a str, &'a [u8])], &'a [&'a str]);
    let cases: &[Case] = &[
        ("/api/x", &[], &["api"]),
        (
            "/api/x",
            &[
                ("host", b"shop.example.com"),
                ("x-user-type", b"beta-tester"),
            ],
            &["beta"],
        ),
        (
            "/api/x",
            &[("host", b"example.org"), ("x-user-type", b"beta-tester")],
            &["api"],
        ),
        ("/users/42?tab=orders", &[], &["user"]),
        ("/users/42/orders", &[], &[]),
        ("/", &[], &[]),
    ];
    for (path, headers, want) in cases {
        let (status, echo) = get(&envoy.url(path), headers).await;
        assert_eq!(status, 200, "{path} {headers:?}");
        assert_eq!(route_seen(&echo), *want, "{path} {headers:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_sent_route_header_never_reaches_the_upstream() {
    let up = Upstream::start("stable");
    let envoy = Envoy::start(&Bootstrap::new(ROUTES).cluster("stable", up.addr), 1);
    // Matched: the spoofed copy is replaced by the real route name.
    let (_, echo) = get(&envoy.url("/api"), &[("x-meshguard-route", b"beta")]).await;
    assert_eq!(route_seen(&echo), vec!["api"]);
    // Unmatched: the request passes, minus the spoofed header.
    let (status, echo) = get(&envoy.url("/elsewhere"), &[("x-meshguard-route", b"api")]).await;
    assert_eq!(status, 200);
    assert_eq!(route_seen(&echo), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_requests_pass_through_untouched() {
    let up = Upstream::start("stable");
    let config = r#"{"schemaVersion":1,"routes":[{"name":"api","match":{"pathPrefix":"/api"}}]}"#;
    let envoy = Envoy::start(&Bootstrap::new(config).cluster("stable", up.addr), 1);
    let (status, echo) = get(&envoy.url("/static/app.js?v=1"), &[("x-custom", b"kept")]).await;
    assert_eq!(status, 200);
    assert_eq!(echo["path"], "/static/app.js?v=1");
    assert_eq!(echoed_header(&echo, "x-custom"), vec![b"kept".to_vec()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn non_utf8_header_values_pass_without_a_vm_trap() {
    let up = Upstream::start("stable");
    let envoy = Envoy::start(&Bootstrap::new(ROUTES).cluster("stable", up.addr), 2);
    for _ in 0..50 {
        // x-raw is read by a route condition; x-user-type by another; both carry
        // bytes that are not UTF-8.
        let (status, echo) = get(
            &envoy.url("/api"),
            &[
                ("x-raw", b"\xff\xfe\x80"),
                ("x-user-type", b"\xc3\x28beta"),
                ("host", b"a.example.com"),
            ],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            echoed_header(&echo, "x-raw"),
            vec![b"\xff\xfe\x80".to_vec()]
        );
        assert_eq!(
            echoed_header(&echo, "x-user-type"),
            vec![b"\xc3\x28beta".to_vec()]
        );
        assert_eq!(route_seen(&echo), vec!["binary"]);
    }
    assert_eq!(up.requests(), 50);
    assert_eq!(envoy.wasm_failures(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_headers_pass_without_a_vm_trap() {
    let up = Upstream::start("stable");
    // Envoy's default max_headers_count is 100 in all; allow the 100 custom ones
    // plus what every request carries.
    let bootstrap = Bootstrap::new(ROUTES)
        .cluster("stable", up.addr)
        .hcm(serde_json::json!({"common_http_protocol_options": {"max_headers_count": 120}}));
    let envoy = Envoy::start(&bootstrap, 2);
    let names: Vec<String> = (0..100).map(|i| format!("x-h-{i:02}")).collect();
    let values: Vec<Vec<u8>> = (0..100).map(|i| format!("v{i}").into_bytes()).collect();
    let headers: Vec<(&str, &[u8])> = names
        .iter()
        .zip(&values)
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    for _ in 0..20 {
        let (status, echo) = get(&envoy.url("/api"), &headers).await;
        assert_eq!(status, 200);
        for (n, v) in &headers {
            assert_eq!(echoed_header(&echo, n), vec![v.to_vec()], "{n}");
        }
        assert_eq!(route_seen(&echo), vec!["many"]);
    }
    assert_eq!(envoy.wasm_failures(), Vec::<String>::new());
}

#[test]
fn invalid_config_makes_envoy_refuse_it_with_path_and_reason() {
    let bad = r#"{"schemaVersion":1,"routes":[
        {"name":"api","match":{"pathPrefix":"api"}},
        {"name":"api","match":{"pathRegex":"(unclosed"}}]}"#;
    let bootstrap = Bootstrap::new(bad).cluster("stable", "127.0.0.1:9".parse().unwrap());
    let (status, log) = Envoy::run_expecting_exit(&bootstrap, Duration::from_secs(60));
    assert!(!status.success(), "Envoy must refuse the config:\n{log}");
    for line in [
        "meshguard: invalid configuration: routes[0].match.pathPrefix: must start with '/'",
        "meshguard: invalid configuration: routes[1].name: duplicate route name \"api\"",
        "meshguard: invalid configuration: routes[1].match.pathRegex: invalid regex:",
        meshguard_integration_tests::refused_config_line(),
    ] {
        assert!(
            log.contains(line),
            "missing {line:?} in Envoy's log:\n{log}"
        );
    }
}

#[test]
fn unknown_field_makes_envoy_refuse_the_config() {
    let bad = r#"{"schemaVersion":1,"routes":[{"name":"api","macth":{}}]}"#;
    let bootstrap = Bootstrap::new(bad).cluster("stable", "127.0.0.1:9".parse().unwrap());
    let (status, log) = Envoy::run_expecting_exit(&bootstrap, Duration::from_secs(60));
    assert!(!status.success());
    assert!(
        log.contains("meshguard: invalid configuration: routes[0].macth: unknown field `macth`"),
        "{log}"
    );
}
