//! The observability pack: alert rules pass promtool and their unit tests; the
//! dashboard and the rules query only metrics the filter really emits; every
//! shipped Envoy config carries the stats tags and buckets the filter needs.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use meshguard_engine::metrics::{histogram_buckets, stats_tags, DURATION_STORED_PREFIX};
use meshguard_integration_tests::bootstrap::Bootstrap;
use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::repo_root;
use meshguard_integration_tests::upstream::Upstream;

fn obs() -> PathBuf {
    repo_root().join("envoy/observability")
}

fn promtool(args: &[&str]) -> String {
    let bin = std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".into());
    let out = Command::new(&bin)
        .args(args)
        .current_dir(obs())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e} (run `make setup`)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let check = promtool(&["check", "rules", "alerts.yml"]);
    assert!(check.contains("SUCCESS: 12 rules found"), "{check}");
    let test = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(test.contains("SUCCESS"), "{test}");
}

/// Metric names (`meshguard_…`) used in a text, histogram suffixes folded.
fn metrics_used(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bmeshguard_[a-z_]+").unwrap();
    re.find_iter(text)
        .map(|m| {
            let n = m.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    n.strip_suffix(s)
                        .filter(|base| base.ends_with("_milliseconds"))
                })
                .unwrap_or(n)
                .to_string()
        })
        .collect()
}

#[test]
fn dashboard_and_rules_query_only_metrics_the_filter_emits() {
    // An Envoy whose config uses every feature, so every metric family exists.
    let up = Upstream::start("stable");
    let config = r#"{"schemaVersion":1,
        "rateLimitService":{"cluster":"ratelimit","domain":"d"},
        "fleetService":{"cluster":"fleet"},
        "rateLimits":[{"name":"per-client","key":[{"clientAddress":{}}],"limit":{"burst":5,"rate":5,"per":"second"},"cost":{"header":"x-cost","max":5}},
                      {"name":"fleet","key":[{"route":true}],"global":{"lease":{"hits":5}}}],
        "routes":[{"name":"web","canary":{"variants":[{"name":"stable","weight":9000},{"name":"canary","weight":1000}],
                                          "revision":"r1","analysis":{"slowCallMs":500},"fleet":{}},
                   "breaker":{"maxConcurrent":10}}]}"#;
    let envoy = Envoy::start(
        &Bootstrap::new(config)
            .cluster("stable", up.addr)
            .cluster("canary", up.addr),
        1,
    );
    // One request: the native build's histograms exist from their first value.
    let (code, _) = meshguard_integration_tests::http_get(envoy.listener("main"), "/")
        .expect("a request through meshguard");
    assert!(code > 0);
    let scrape = envoy.scrape();
    let emitted: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("meshguard_"))
        .map(str::to_string)
        .collect();
    // Every family but the per-code gRPC series (routes with `protocol: grpc`).
    let expected: BTreeSet<String> = meshguard_integration_tests::METRIC_FAMILIES
        .iter()
        .filter(|f| **f != "meshguard_grpc_requests_total")
        .map(|s| s.to_string())
        .collect();
    assert_eq!(emitted, expected, "metric families in /stats/prometheus");

    let dashboard_text = std::fs::read_to_string(obs().join("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 9, "dashboard queries: {exprs:?}");
    let used = metrics_used(&exprs.join("\n"));
    assert!(
        used.is_subset(&emitted),
        "dashboard queries unknown metrics: {:?}",
        used.difference(&emitted).collect::<Vec<_>>()
    );
    assert_eq!(used, emitted, "every emitted metric has a panel");

    for file in [
        obs().join("alerts.yml"),
        repo_root().join("envoy/rollouts/argo-analysis-template.yaml"),
        repo_root().join("envoy/rollouts/flagger-metric-template.yaml"),
    ] {
        let used = metrics_used(&std::fs::read_to_string(&file).unwrap());
        assert!(
            used.is_subset(&emitted),
            "{} uses unknown metrics: {:?}",
            file.display(),
            used.difference(&emitted).collect::<Vec<_>>()
        );
    }
}

#[test]
fn every_envoy_config_ships_the_stats_tags_and_buckets_meshguard_needs() {
    let want_tags: Vec<(String, String)> = stats_tags()
        .into_iter()
        .map(|(n, r)| (n.to_string(), r))
        .collect();
    let dir = repo_root().join("envoy");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let doc: serde_json::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let sc = &doc["stats_config"];
        let tags: Vec<(String, String)> = sc["stats_tags"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no stats_config.stats_tags", path.display()))
            .iter()
            .map(|t| {
                (
                    t["tag_name"].as_str().unwrap().to_string(),
                    t["regex"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            tags,
            want_tags,
            "{}: stats_tags differ from meshguard's",
            path.display()
        );
        for (prefix, want) in histogram_buckets() {
            let buckets = sc["histogram_bucket_settings"]
                .as_array()
                .and_then(|l| l.iter().find(|b| b["match"]["prefix"] == prefix))
                .unwrap_or_else(|| panic!("{}: no bucket settings for {prefix}", path.display()));
            let got: Vec<u64> = buckets["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_f64().unwrap() as u64)
                .collect();
            assert_eq!(got, want.to_vec(), "{}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 1);
}

#[test]
fn every_kubernetes_manifest_is_valid_against_the_real_crd_schemas() {
    use meshguard_integration_tests::schemas::{check_all, report, yaml_documents};
    let mut checked = 0;
    for sub in ["istio", "gateway"] {
        let dir = repo_root().join("envoy").join(sub);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let docs = yaml_documents(&path);
            let results = check_all(&docs);
            let label = path.display().to_string();
            assert_eq!(
                report(&label, &docs, &results),
                0,
                "every Istio and Gateway kind is checked"
            );
            for (doc, c) in docs.iter().zip(&results) {
                assert!(
                    c.errors.is_empty(),
                    "{}: {} {}:\n{}",
                    path.display(),
                    doc["kind"],
                    doc["metadata"]["name"],
                    c.errors.join("\n")
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 1, "no manifests found");
}

#[test]
fn the_schema_check_catches_a_broken_manifest() {
    use meshguard_integration_tests::schemas::check_all;
    let bad = serde_json::json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": "x"},
        "spec": {"configPatches": [{"applyTo": "NOT_A_THING", "patch": {"operation": "MERGE"}}]}
    });
    let checked = check_all(std::slice::from_ref(&bad)).pop().unwrap();
    assert!(!checked.by.is_empty(), "some validator ran");
    // Each validator that ran reports it.
    for by in &checked.by {
        assert!(
            checked.errors.iter().any(|e| e.starts_with(by.as_str())),
            "{by} did not report the invalid applyTo: {:?}",
            checked.errors
        );
    }
}

#[test]
fn the_istio_stats_filter_carries_meshguards_tags_and_buckets() {
    use meshguard_integration_tests::schemas::yaml_documents;
    let docs = yaml_documents(&repo_root().join("envoy/istio/meshguard.yaml"));
    let filter = docs
        .iter()
        .find(|d| d["kind"] == "EnvoyFilter")
        .expect("the stats EnvoyFilter");
    let sc = &filter["spec"]["configPatches"][0]["patch"]["value"]["stats_config"];
    let tags: Vec<(String, String)> = sc["stats_tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tag_name"].as_str().unwrap().to_string(),
                t["regex"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = stats_tags()
        .into_iter()
        .map(|(n, r)| (n.to_string(), r))
        .collect();
    assert_eq!(tags, want);
    assert_eq!(
        sc["histogram_bucket_settings"][0]["match"]["prefix"],
        DURATION_STORED_PREFIX
    );
}
