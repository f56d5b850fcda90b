//! `explain` in a real Envoy: an access log line per request carrying meshguard's
//! decision (filter state `wasm.meshguard.decision`), the decision header only for
//! trusted callers that ask, and the status document only for trusted callers —
//! both validated against the schemas `meshguard schema` prints.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use meshguard_integration_tests::bootstrap::Bootstrap;
use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::load::{client_from, send, Req};
use meshguard_integration_tests::repo_root;
use meshguard_integration_tests::upstream::Upstream;
use serde_json::{json, Value};

const STATUS_PATH: &str = "/.well-known/meshguard/status";

const CONFIG: &str = r#"{"schemaVersion":1,
  "explain":{"trustedSources":["127.0.0.1"],"filterState":true,"header":true,
             "statusPath":"/.well-known/meshguard/status"},
  "routes":[
    {"name":"api","match":{"pathPrefix":"/api"},
     "canary":{"variants":[{"name":"stable","cluster":"stable","weight":5000},
                           {"name":"canary","cluster":"canary","weight":5000}],
               "rules":[{"variant":"canary","header":{"name":"x-beta","exact":"1"}}],
               "sticky":{"header":"x-user"}},
     "rateLimits":[{"name":"per-key","key":[{"header":"x-limit-key"}],"maxKeys":1000,
                    "limit":{"burst":1,"rate":1,"per":"hour"}}],
     "breaker":{"consecutiveFailures":1,"openDurationMs":60000,
                "whenOpen":{"fallbackVariant":"stable"}}},
    {"name":"flaky","match":{"pathPrefix":"/flaky"},
     "breaker":{"consecutiveFailures":1,"openDurationMs":60000}}
  ]}"#;

/// The JSON Schema `meshguard schema WHICH` prints, compiled.
fn schema(which: &str) -> jsonschema::Validator {
    let out = std::process::Command::new(repo_root().join("target/release/meshguard"))
        .args(["schema", which])
        .output()
        .expect("target/release/meshguard (make build)");
    assert!(out.status.success());
    let schema: Value = serde_json::from_slice(&out.stdout).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_valid(v: &jsonschema::Validator, doc: &Value) {
    let errors: Vec<String> = v.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{doc:#}");
}

struct Setup {
    envoy: Envoy,
    _up: (Upstream, Upstream),
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn start() -> Setup {
    let (stable, canary) = (Upstream::start("stable"), Upstream::start("canary"));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let b = Bootstrap::new(CONFIG)
        .cluster("stable", stable.addr)
        .cluster("canary", canary.addr)
        .canary_routes("x-meshguard-cluster", "stable")
        .hcm(json!({"access_log": [{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": log.display().to_string(),
                "log_format": {"text_format_source": {"inline_string":
                    "%REQ(X-TEST-ID)% %RESPONSE_CODE% %FILTER_STATE(wasm.meshguard.decision:PLAIN)%\n"}}
            }
        }]}));
    Setup {
        envoy: Envoy::start(&b, 2),
        _up: (stable, canary),
        log,
        _dir: dir,
    }
}

fn from(ip: &str) -> reqwest::Client {
    client_from(ip.parse::<IpAddr>().unwrap())
}

/// The access log's lines by test id: (status, decision or `-`).
fn access_log(path: &std::path::Path, want: usize) -> HashMap<String, (u16, String)> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: HashMap<String, (u16, String)> = text
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ' ');
                let id = parts.next()?.to_string();
                let code = parts.next()?.parse().ok()?;
                Some((id, (code, parts.next()?.to_string())))
            })
            .collect();
        if lines.len() >= want {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "access log incomplete:\n{}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_kind_gets_an_access_log_line_with_its_decision() {
    let s = start();
    let base = s.envoy.url("");
    let c = from("127.0.0.2");
    let pause = || tokio::time::sleep(Duration::from_millis(50));
    let kinds: Vec<(&str, Req)> = vec![
        ("rule", Req::get("/api").header("x-beta", "1")),
        ("sticky", Req::get("/api").header("x-user", "u1")),
        ("weighted", Req::get("/api")),
        ("first-key", Req::get("/api").header("x-limit-key", "k")),
        ("limited", Req::get("/api").header("x-limit-key", "k")),
        (
            "flaky-fails",
            Req::get("/flaky").header("x-test-status", "503"),
        ),
        ("breaker-open", Req::get("/flaky")),
        (
            "canary-fails",
            Req::get("/api")
                .header("x-beta", "1")
                .header("x-test-status", "503"),
        ),
        ("fallback", Req::get("/api").header("x-beta", "1")),
        ("unmatched", Req::get("/other")),
    ];
    for (id, req) in &kinds {
        send(&c, &base, &req.clone().header("x-test-id", id)).await;
        pause().await; // breaker state written by one worker, read by the other
    }
    let log = access_log(&s.log, kinds.len());
    let decision = |id: &str| -> Value {
        let (_, d) = log
            .get(id)
            .unwrap_or_else(|| panic!("{id}: no line in {log:?}"));
        serde_json::from_str(d).unwrap_or_else(|e| panic!("{id}: {d:?}: {e}"))
    };
    let v = schema("decision");
    for (id, _) in &kinds {
        assert_valid(&v, &decision(id));
    }
    let d = decision("rule");
    assert_eq!(
        (d["route"].as_str(), d["variant"].as_str()),
        (Some("api"), Some("canary"))
    );
    assert_eq!(d["reason"], "rule:0");
    assert_eq!(d["breaker"], "closed");
    assert_eq!(decision("sticky")["reason"], "sticky");
    assert_eq!(decision("weighted")["reason"], "weighted");
    assert_eq!(
        decision("first-key")["limits"],
        json!([{"policy":"per-key","outcome":"allowed","remaining":0}])
    );
    let d = decision("limited");
    assert_eq!(log["limited"].0, 429);
    assert_eq!(d["reply"], "rate_limited");
    assert_eq!(
        d["limits"],
        json!([{"policy":"per-key","outcome":"limited","remaining":0}])
    );
    let d = decision("breaker-open");
    assert_eq!(log["breaker-open"].0, 503);
    assert_eq!(
        (d["reply"].as_str(), d["breaker"].as_str()),
        (Some("breaker_open"), Some("open"))
    );
    assert_eq!(d["route"], "flaky");
    let d = decision("fallback");
    assert_eq!(log["fallback"].0, 200);
    assert_eq!(
        (d["variant"].as_str(), d["reason"].as_str()),
        (Some("stable"), Some("fallback"))
    );
    assert_eq!(d["breaker"], "open");
    assert_eq!(decision("unmatched"), json!({"route": null}));
    assert!(
        s.envoy.wasm_failures().is_empty(),
        "{:?}",
        s.envoy.wasm_failures()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_decision_header_reaches_trusted_askers_only() {
    let s = start();
    let base = s.envoy.url("");
    let ask = Req::get("/api")
        .header("x-meshguard-explain", "1")
        .header("x-user", "u7");
    let r = send(&from("127.0.0.1"), &base, &ask).await;
    assert_eq!(r.status, 200);
    let d: Value =
        serde_json::from_str(r.header("x-meshguard-decision").expect("trusted asker")).unwrap();
    assert_valid(&schema("decision"), &d);
    assert_eq!(d["reason"], "sticky");
    assert_eq!(
        d["variant"].as_str(),
        r.header("x-upstream"),
        "the record names who answered"
    );
    let plain = send(&from("127.0.0.1"), &base, &Req::get("/api")).await;
    assert_eq!(
        plain.header("x-meshguard-decision"),
        None,
        "trusted but did not ask"
    );
    let spoofer = from("127.0.0.2");
    let mut leaked = 0;
    for _ in 0..1000 {
        let r = send(&spoofer, &base, &ask).await;
        assert_eq!(r.status, 200);
        leaked += usize::from(r.header("x-meshguard-decision").is_some());
    }
    assert_eq!(leaked, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_path_is_a_document_for_trusted_callers_and_ordinary_for_others() {
    let s = start();
    let base = s.envoy.url("");
    let c = from("127.0.0.2");
    send(
        &c,
        &base,
        &Req::get("/flaky").header("x-test-status", "503"),
    )
    .await;
    send(&c, &base, &Req::get("/api").header("x-limit-key", "k")).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = send(&from("127.0.0.1"), &base, &Req::get(STATUS_PATH)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-upstream"), None, "answered by meshguard");
    let doc: Value = serde_json::from_str(&r.body).unwrap();
    assert_valid(&schema("status"), &doc);
    assert_eq!(doc["schema"], "meshguard.status/v1");
    assert_eq!(doc["routes"][1]["name"], "flaky");
    assert_eq!(doc["routes"][1]["breakers"][0]["phase"], "open");
    assert_eq!(doc["routes"][1]["breakers"][0]["window"]["failures"], 1);
    assert_eq!(doc["routes"][0]["canary"]["variants"][1]["weight"], 5000);
    assert_eq!(doc["policies"][0]["name"], "per-key");
    assert_eq!(
        doc["policies"][0]["table"]["used"], 1,
        "maxKeys 1000: every slot read"
    );
    assert_eq!(doc["policies"][0]["table"]["sampled"], 1000);
    // Everyone else: the path is just a request (no route matches: stable serves).
    let r = send(&c, &base, &Req::get(STATUS_PATH)).await;
    assert_eq!((r.status, r.header("x-upstream")), (200, Some("stable")));
    assert!(!r.body.contains("meshguard.status"));
}
