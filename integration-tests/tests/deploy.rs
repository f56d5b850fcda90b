//! Deployment artefacts: `meshguard render` output is valid for each target and
//! in step with the shipped manifests; the CEL rules that matter to us hold.

use std::process::Command;

use meshguard_integration_tests::schemas::{check_all, report, yaml_documents};
use meshguard_integration_tests::{envoy_bin, native_dir, repo_root, wasm_path};
use serde_json::Value;

fn cli() -> std::path::PathBuf {
    let p = repo_root().join("target/release/meshguard");
    assert!(p.exists(), "{} missing — run `make build`", p.display());
    p
}

fn render(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(cli())
        .arg("render")
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn docs(yaml: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.yaml");
    std::fs::write(&path, yaml).unwrap();
    yaml_documents(&path)
}

#[test]
fn shipped_manifests_are_what_render_produces_for_the_example_config() {
    for (file, target, extra) in [
        (
            "envoy/istio/meshguard.yaml",
            "istio",
            vec!["--namespace", "shop", "--selector", "app=checkout"],
        ),
        (
            "envoy/gateway/meshguard.yaml",
            "envoy-gateway",
            vec!["--namespace", "default", "--gateway", "eg"],
        ),
    ] {
        let shipped = yaml_documents(&repo_root().join(file));
        let first = &shipped[0];
        let (image, sha) = if target == "istio" {
            (
                first["spec"]["url"].as_str().unwrap().to_string(),
                first["spec"]["sha256"].as_str().unwrap().to_string(),
            )
        } else {
            let img = &first["spec"]["wasm"][0]["code"]["image"];
            (
                img["url"].as_str().unwrap().to_string(),
                img["sha256"].as_str().unwrap().to_string(),
            )
        };
        let mut args = vec!["--target", target, "--image", &image, "--sha256", &sha];
        args.extend(extra);
        args.push("config/examples/canary.yaml");
        let (code, out, err) = render(&args);
        assert_eq!(code, 0, "{err}");
        assert_eq!(docs(&out), shipped, "{file} is stale: run `make manifests`");
    }
}

#[test]
fn rendered_manifests_pass_the_crd_schemas_and_the_cel_rules_we_rely_on() {
    let sha = "0".repeat(64);
    for (target, example) in [
        ("istio", "config/examples/canary.yaml"),
        ("envoy-gateway", "config/examples/canary.yaml"),
        // With fleetService: the fleet service's cluster, in an EnvoyFilter
        // (Istio) or the EnvoyProxy's bootstrap (Envoy Gateway).
        ("istio", "config/examples/fleet.yaml"),
        ("envoy-gateway", "config/examples/fleet.yaml"),
    ] {
        let (code, out, err) = render(&["--target", target, "--sha256", &sha, example]);
        assert_eq!(code, 0, "{err}");
        let rendered = docs(&out);
        let checked = check_all(&rendered);
        assert_eq!(
            report(target, &rendered, &checked),
            0,
            "every rendered kind is checked"
        );
        for (d, c) in rendered.iter().zip(&checked) {
            assert_eq!(c.errors, Vec::<String>::new(), "{target} {}", d["kind"]);
        }
    }
    for path in [
        "envoy/istio/meshguard.yaml",
        "envoy/gateway/meshguard.yaml",
        "envoy/gateway/gateway.yaml",
    ] {
        for d in yaml_documents(&repo_root().join(path)) {
            match d["kind"].as_str().unwrap() {
                "WasmPlugin" => {
                    // CEL: url scheme one of http, https, file, oci; at most one of
                    // selector / targetRef / targetRefs. Pattern: sha256 is 64 hex.
                    let url = d["spec"]["url"].as_str().unwrap();
                    let scheme = url.split_once("://").map_or("", |(s, _)| s);
                    assert!(["oci", "http", "https", "file"].contains(&scheme), "{url}");
                    let targets = ["selector", "targetRef", "targetRefs"]
                        .iter()
                        .filter(|k| !d["spec"][**k].is_null())
                        .count();
                    assert!(targets <= 1);
                    let sha = d["spec"]["sha256"].as_str().unwrap();
                    assert!(
                        sha.len() == 64
                            && sha
                                .chars()
                                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
                    );
                }
                "EnvoyExtensionPolicy" => {
                    // CEL: targetRefs only to gateway.networking.k8s.io Gateway/xRoutes.
                    for r in d["spec"]["targetRefs"].as_array().unwrap() {
                        assert_eq!(r["group"], "gateway.networking.k8s.io");
                        assert!(["Gateway", "HTTPRoute"].contains(&r["kind"].as_str().unwrap()));
                    }
                }
                _ => {}
            }
        }
    }
}

#[test]
fn the_argo_rollouts_and_flagger_manifests_pass_their_crd_schemas() {
    let mut kinds = Vec::new();
    for path in [
        "envoy/rollouts/argo-analysis-template.yaml",
        "envoy/rollouts/flagger-metric-template.yaml",
    ] {
        let docs = yaml_documents(&repo_root().join(path));
        let checked = check_all(&docs);
        let unchecked = report(path, &docs, &checked);
        for (d, c) in docs.iter().zip(&checked) {
            assert_eq!(c.errors, Vec::<String>::new(), "{path} {}", d["kind"]);
            let flagger = d["apiVersion"]
                .as_str()
                .unwrap()
                .starts_with("flagger.app/");
            // Argo Rollouts kinds are always checked (npm); Flagger's only with the
            // raw CRDs, and the report above says when they were not.
            assert!(
                flagger || !c.by.is_empty(),
                "{path} {} unchecked",
                d["kind"]
            );
            kinds.push(d["kind"].as_str().unwrap().to_string());
        }
        if path.contains("argo") {
            assert_eq!(unchecked, 0);
        }
    }
    assert_eq!(
        kinds,
        ["AnalysisTemplate", "Rollout", "MetricTemplate", "Canary"]
    );
    // The verdict query fails the rollout as soon as one Envoy rolled back.
    let argo = yaml_documents(&repo_root().join("envoy/rollouts/argo-analysis-template.yaml"));
    let metric = &argo[0]["spec"]["metrics"][0];
    assert_eq!(metric["failureLimit"], 0);
    assert!(metric["provider"]["prometheus"]["query"]
        .as_str()
        .unwrap()
        .contains(r#"state="rolled_back""#));
}

#[test]
fn a_fleet_config_renders_the_fleet_cluster_for_every_target_and_envoy_accepts_it() {
    let wasm = wasm_path();
    let (code, out, err) = render(&[
        "--target",
        "envoy",
        "--wasm-file",
        wasm.to_str().unwrap(),
        "--fleet-address",
        "127.0.0.1:8081",
        "config/examples/fleet.yaml",
    ]);
    assert_eq!(code, 0, "{err}");
    let fragment = docs(&out).remove(0);
    assert_eq!(fragment["clusters"][0]["name"], "meshguard-fleet");
    let bootstrap = serde_json::json!({
        "stats_config": fragment["stats_config"],
        "static_resources": {
            "listeners": [listener(fragment["http_filters"].clone())],
            "clusters": fragment["clusters"]
        }
    });
    let text = envoy_validates(&bootstrap);
    assert!(text.contains("configuration loaded: 1 route(s)"), "{text}");
    let (code, out, _) = render(&["--target", "istio", "config/examples/fleet.yaml"]);
    assert_eq!(code, 0);
    let filter = docs(&out)
        .into_iter()
        .find(|d| d["metadata"]["name"] == "meshguard-fleet")
        .expect("the fleet cluster's EnvoyFilter");
    assert_eq!(filter["spec"]["configPatches"][0]["applyTo"], "CLUSTER");
    let (code, out, _) = render(&[
        "--target",
        "envoy-gateway",
        "--native",
        "config/examples/fleet.yaml",
    ]);
    assert_eq!(code, 0);
    let proxy = docs(&out)
        .into_iter()
        .find(|d| d["kind"] == "EnvoyProxy")
        .unwrap();
    assert!(proxy["spec"]["bootstrap"]["value"]
        .as_str()
        .unwrap()
        .contains("name: meshguard-fleet"));
    let (code, _, err) = render(&[
        "--target",
        "envoy",
        "--fleet-address",
        "no-port",
        "config/examples/fleet.yaml",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--fleet-address must be HOST:PORT"), "{err}");
}

#[test]
fn envoy_accepts_the_rendered_filter_and_stats_config() {
    let wasm = wasm_path();
    let (code, out, err) = render(&[
        "--target",
        "envoy",
        "--wasm-file",
        wasm.to_str().unwrap(),
        "config/examples/canary.yaml",
    ]);
    assert_eq!(code, 0, "{err}");
    let fragment = docs(&out).remove(0);
    let bootstrap = serde_json::json!({
        "stats_config": fragment["stats_config"],
        "static_resources": {"listeners": [listener(fragment["http_filters"].clone())]}
    });
    let text = envoy_validates(&bootstrap);
    assert!(
        text.contains("meshguard: configuration loaded: 1 route(s)"),
        "{text}"
    );
}

#[test]
fn an_invalid_config_renders_nothing_and_prints_the_validate_lines() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "schemaVersion: 1\nroutes:\n  - name: web\n    match: { pathPrefix: web }\n",
    )
    .unwrap();
    for target in ["envoy", "istio", "envoy-gateway"] {
        let (code, out, _) = render(&["--target", target, bad.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert_eq!(
            out,
            format!(
                "{}: routes[0].match.pathPrefix: must start with '/'\n",
                bad.display()
            )
        );
    }
    let (code, _, err) = render(&[
        "--target",
        "istio",
        "--sha256",
        "xyz",
        "config/examples/canary.yaml",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--sha256 must be 64 lowercase hex digits"),
        "{err}"
    );
    let (code, _, err) = render(&["--target", "nginx", "config/examples/canary.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown target"), "{err}");
}

#[test]
fn the_envoy_gateway_bootstrap_merge_carries_the_stats_config_envoy_accepts() {
    let (code, out, err) = render(&["--target", "envoy-gateway", "config/examples/canary.yaml"]);
    assert_eq!(code, 0, "{err}");
    let proxy = docs(&out)
        .into_iter()
        .find(|d| d["kind"] == "EnvoyProxy")
        .expect("an EnvoyProxy");
    assert_eq!(proxy["spec"]["bootstrap"]["type"], "Merge");
    let merge: Value =
        serde_yaml_ng::from_str(proxy["spec"]["bootstrap"]["value"].as_str().unwrap()).unwrap();
    // Exactly the tags and buckets the filter's metric names need.
    let tags: Vec<(String, String)> = merge["stats_config"]["stats_tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tag_name"].as_str().unwrap().into(),
                t["regex"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = meshguard_engine::metrics::stats_tags()
        .into_iter()
        .map(|(n, r)| (n.to_string(), r))
        .collect();
    assert_eq!(tags, want);
    // The Gateway shipped beside it references it.
    let gateway = yaml_documents(&repo_root().join("envoy/gateway/gateway.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "Gateway")
        .unwrap();
    assert_eq!(
        gateway["spec"]["infrastructure"]["parametersRef"]["name"],
        proxy["metadata"]["name"]
    );
    assert_eq!(
        gateway["spec"]["infrastructure"]["parametersRef"]["kind"],
        "EnvoyProxy"
    );
    // Merged into a bootstrap (admin and a listener, as Envoy Gateway's own), Envoy
    // accepts it.
    let router = serde_json::json!([{"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]);
    let mut bootstrap = serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [listener(router)]}
    });
    for (k, v) in merge.as_object().unwrap() {
        bootstrap[k] = v.clone();
    }
    envoy_validates(&bootstrap);
}

#[test]
fn envoy_loads_the_rendered_native_filter_and_stats_config() {
    let (code, out, err) = render(&[
        "--target",
        "envoy",
        "--native",
        "config/examples/canary.yaml",
    ]);
    assert_eq!(code, 0, "{err}");
    let fragment = docs(&out).remove(0);
    assert_eq!(
        fragment["http_filters"][0]["typed_config"]["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
    );
    assert!(
        fragment["stats_config"]["stats_tags"].is_null(),
        "real labels need no tags"
    );
    let bootstrap = serde_json::json!({
        "stats_config": fragment["stats_config"],
        "static_resources": {"listeners": [listener(fragment["http_filters"].clone())]}
    });
    let text = envoy_validates_with(&bootstrap, Some(&native_dir()));
    assert!(
        text.contains("meshguard: configuration loaded: 1 route(s)"),
        "{text}"
    );
}

#[test]
fn native_gateway_manifests_pass_the_crd_schemas_and_register_the_module_they_use() {
    let (code, out, err) = render(&[
        "--target",
        "envoy-gateway",
        "--native",
        "config/examples/canary.yaml",
    ]);
    assert_eq!(code, 0, "{err}");
    let rendered = docs(&out);
    let checked = check_all(&rendered);
    assert_eq!(report("envoy-gateway --native", &rendered, &checked), 0);
    for (d, c) in rendered.iter().zip(&checked) {
        assert_eq!(c.errors, Vec::<String>::new(), "{}", d["kind"]);
    }
    let policy = rendered
        .iter()
        .find(|d| d["kind"] == "EnvoyExtensionPolicy")
        .unwrap();
    let proxy = rendered.iter().find(|d| d["kind"] == "EnvoyProxy").unwrap();
    assert!(policy["spec"]["wasm"].is_null());
    assert_eq!(
        policy["spec"]["dynamicModule"][0]["name"],
        proxy["spec"]["dynamicModules"][0]["name"]
    );
    assert_eq!(proxy["spec"]["dynamicModules"][0]["doNotClose"], true);
    let merge: Value =
        serde_yaml_ng::from_str(proxy["spec"]["bootstrap"]["value"].as_str().unwrap()).unwrap();
    let prefixes: Vec<&str> = merge["stats_config"]["histogram_bucket_settings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["match"]["prefix"].as_str())
        .collect();
    let want: Vec<&str> = meshguard_engine::metrics::native_histogram_buckets()
        .iter()
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(prefixes, want);
    // Istio's WasmPlugin cannot load a dynamic module: said, not rendered.
    let (code, out, err) = render(&[
        "--target",
        "istio",
        "--native",
        "config/examples/canary.yaml",
    ]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("Istio's WasmPlugin loads Wasm only"), "{err}");
}

/// Runs `envoy --mode validate` on `bootstrap`, asserts that it passes, and returns
/// Envoy's output.
fn envoy_validates(bootstrap: &Value) -> String {
    envoy_validates_with(bootstrap, None)
}

/// [`envoy_validates`], finding dynamic modules in `modules`.
fn envoy_validates_with(bootstrap: &Value, modules: Option<&std::path::Path>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.json");
    std::fs::write(&path, serde_json::to_vec(bootstrap).unwrap()).unwrap();
    let mut cmd = Command::new(envoy_bin());
    if let Some(m) = modules {
        cmd.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", m);
    }
    let out = cmd
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// A listener on a free port whose HTTP connection manager runs `http_filters`
/// in front of a direct 200.
fn listener(http_filters: Value) -> Value {
    serde_json::json!({
        "name": "main",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "main",
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
                "http_filters": http_filters
            }
        }]}]
    })
}
