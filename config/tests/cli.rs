//! The `meshguard` CLI as an operator uses it: exit codes and one precise line per problem.
#![cfg(not(target_arch = "wasm32"))] // runs the native CLI binary
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use std::process::Command;

fn meshguard(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .args(args)
        .output()
        .expect("run meshguard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_config_is_valid() {
    let files = examples();
    assert!(
        files.len() >= 2,
        "expected example configs, found {files:?}"
    );
    for f in files {
        let (code, out, err) = meshguard(&["validate", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {out}{err}", f.display());
        assert_eq!(out, "");
    }
}

#[test]
fn each_bad_config_gets_one_precise_line() {
    let dir = tempfile_dir();
    let cases = [
        (
            "unknown.json",
            r#"{"schemaVersion":1,"routes":[{"name":"a","match":{"pathPrefx":"/"}}]}"#,
            "routes[0].match.pathPrefx: unknown field `pathPrefx`, expected one of",
        ),
        (
            "type.json",
            r#"{"schemaVersion":1,"routes":{"name":"a"}}"#,
            "routes: invalid type: map, expected a sequence",
        ),
        (
            "regex.json",
            r#"{"schemaVersion":1,"routes":[{"name":"a","match":{"headers":[{"name":"x","regex":"a(b"}]}}]}"#,
            "routes[0].match.headers[0].regex: invalid regex:",
        ),
        (
            "dup.json",
            r#"{"schemaVersion":1,"routes":[{"name":"a"},{"name":"a"}]}"#,
            "routes[1].name: duplicate route name \"a\"",
        ),
        (
            "empty-name.json",
            r#"{"schemaVersion":1,"routes":[{"name":""}]}"#,
            "routes[0].name: must not be empty",
        ),
        (
            "prefix.yaml",
            "schemaVersion: 1\nroutes:\n  - name: a\n  - name: b\n    match: { pathPrefix: api }\n",
            "routes[1].match.pathPrefix: must start with '/'",
        ),
        (
            "yaml-unknown.yaml",
            "schemaVersion: 1\nroutes:\n  - name: a\n    mach: {}\n",
            "routes[0].mach: unknown field `mach`",
        ),
        (
            "canary-weights.yaml",
            "schemaVersion: 1\nroutes:\n  - name: web\n    canary:\n      variants:\n        - { name: stable, weight: 9000 }\n        - { name: canary, weight: 500 }\n",
            "routes[0].canary.variants: weights must sum to 10000 basis points, got 9500",
        ),
        (
            "canary-rule.json",
            r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{"variants":[{"name":"stable","weight":10000},{"name":"canary"}],"rules":[{"variant":"beta","header":{"name":"x","present":true}}]}}]}"#,
            "routes[0].canary.rules[0].variant: unknown variant \"beta\"",
        ),
        (
            "canary-dup.json",
            r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{"variants":[{"name":"a","weight":5000},{"name":"a","weight":5000}]}}]}"#,
            "routes[0].canary.variants[1].name: duplicate variant \"a\"",
        ),
        (
            "canary-key.json",
            r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{"variants":[{"name":"a","weight":5000},{"name":"b","weight":5000}],"sticky":{"header":""}}}]}"#,
            "routes[0].canary.sticky.header: must not be empty",
        ),
        (
            "breaker.yaml",
            "schemaVersion: 1\nroutes:\n  - name: web\n    breaker: { failureRateThreshold: 0 }\n",
            "routes[0].breaker.failureRateThreshold: must be a percentage from 1 to 100, got 0",
        ),
        (
            "ramp-steps.yaml",
            "schemaVersion: 1\nroutes:\n  - name: web\n    canary:\n      variants: [{ name: stable }, { name: canary }]\n      revision: r1\n      ramp: { steps: [2500, 500] }\n",
            "routes[0].canary.ramp.steps[1]: steps must increase: 500 does not exceed the step before (2500)",
        ),
        (
            "alpha.yaml",
            "schemaVersion: 1\nroutes:\n  - name: web\n    canary:\n      variants: [{ name: stable, weight: 9500 }, { name: canary, weight: 500 }]\n      revision: r1\n      analysis: { alpha: 0.5 }\n",
            "routes[0].canary.analysis.alpha: must be above 0 and below 0.5, got 0.5",
        ),
        (
            "gate-window.json",
            r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{"variants":[{"name":"stable","weight":9500},{"name":"canary","weight":500}],"revision":"r1","analysis":{"zTest":{"z":2}}}}]}"#,
            "routes[0].canary.analysis.zTest.intervalSeconds: required: the gate's interval, in seconds",
        ),
        (
            "version.json",
            r#"{"schemaVersion":7}"#,
            "schemaVersion: unsupported schema version 7",
        ),
    ];
    for (name, text, want) in cases {
        let file = write(dir.path(), name, text);
        let (code, out, _) = meshguard(&["validate", &file]);
        assert_eq!(code, 1, "{name}: {out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: {out}");
        let expected = format!("{file}: {want}");
        assert!(
            lines[0].starts_with(&expected),
            "{name}: got {:?}, want {expected:?}",
            lines[0]
        );
    }
}

#[test]
fn all_problems_of_all_files_are_printed_and_exit_is_one() {
    let dir = tempfile_dir();
    let good = write(dir.path(), "good.json", r#"{"schemaVersion":1}"#);
    let bad = write(
        dir.path(),
        "bad.json",
        r#"{"schemaVersion":1,"routes":[{"name":"-x"},{"name":"ok","match":{"pathExact":"x","methods":[]}}]}"#,
    );
    let missing = dir.path().join("missing.json").display().to_string();
    let (code, out, _) = meshguard(&["validate", &good, &bad, &missing]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with(&format!(
        "{bad}: routes[0].name: must start with a letter or digit"
    )));
    assert!(lines[1].starts_with(&format!(
        "{bad}: routes[1].match.pathExact: must start with '/'"
    )));
    assert!(lines[2].starts_with(&format!(
        "{bad}: routes[1].match.methods: must list at least one method"
    )));
    assert!(lines[3].starts_with(&format!("{missing}: (root): cannot read file:")));
}

#[test]
fn schema_is_json_naming_every_top_level_field() {
    let (code, out, _) = meshguard(&["schema"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    let props = schema["properties"].as_object().unwrap();
    for field in ["schemaVersion", "routes", "routeHeader"] {
        assert!(props.contains_key(field), "schema lacks {field}: {out}");
    }
    assert_eq!(schema["required"], serde_json::json!(["schemaVersion"]));
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
}

#[test]
fn the_decision_and_status_schemas_describe_their_documents() {
    let (code, out, _) = meshguard(&["schema", "decision"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    for field in [
        "route", "variant", "reason", "limits", "breaker", "analysis", "reply",
    ] {
        assert!(schema["properties"].get(field).is_some(), "{field}: {out}");
    }
    let (code, out, _) = meshguard(&["schema", "status"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    for field in ["schema", "plugin", "revision", "routes", "policies"] {
        assert!(schema["properties"].get(field).is_some(), "{field}: {out}");
    }
    assert_eq!(meshguard(&["schema", "nope"]).0, 2);
}

#[test]
fn status_needs_one_http_url_and_fails_when_nothing_answers() {
    assert_eq!(meshguard(&["status"]).0, 2);
    assert_eq!(meshguard(&["status", "https://example.test/s"]).0, 2);
    assert_eq!(meshguard(&["status", "http://a/", "http://b/"]).0, 2);
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, err) = meshguard(&["status", &format!("http://127.0.0.1:{port}/s")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("meshguard status: http://127.0.0.1:"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(meshguard(&[]).0, 2);
    assert_eq!(meshguard(&["validate"]).0, 2);
    assert_eq!(meshguard(&["frobnicate"]).0, 2);
    let (code, out, _) = meshguard(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("meshguard validate FILE..."));
}

fn tempfile_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn help_and_each_problem_point_to_the_page_that_explains_it() {
    let (code, out, _) = meshguard(&["help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("docs/src/configuration.md") && out.contains("docs/src/cli.md"),
        "{out}"
    );
    let dir = tempfile_dir();
    let bad = write(
        dir.path(),
        "bad.yaml",
        "schemaVersion: 1\nroutes:\n  - name: web\n    canary:\n      variants: [{ name: a, weight: 5000 }, { name: b, weight: 5000 }]\n      revision: r1\n      analysis: { alpha: 2 }\n    breaker: { consecutiveFailures: 0 }\n",
    );
    let (code, out, err) = meshguard(&["validate", &bad]);
    assert_eq!(code, 1);
    assert_eq!(
        out.lines().count(),
        2,
        "one line per problem on stdout: {out}"
    );
    assert!(
        err.contains("meshguard: see docs/src/canary-analysis.md"),
        "{err}"
    );
    assert!(
        err.contains("meshguard: see docs/src/circuit-breaking.md"),
        "{err}"
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for line in err.lines() {
        let page = line.trim_start_matches("meshguard: see ");
        assert!(root.join(page).exists(), "{page}");
    }
}
