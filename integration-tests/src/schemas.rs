//! Validating Kubernetes manifests against their CRD schemas, with every
//! validator this machine has, and saying which ran:
//!
//! - the real CRDs in `../shared/schemas/` (or `MESHGUARD_SCHEMAS`), when that
//!   folder exists: structural validation of
//!   `spec.versions[*].schema.openAPIV3Schema` for the manifest's apiVersion;
//! - the same CRD schemas as kubernetes-models publishes them on npm (Istio,
//!   Gateway API, Envoy Gateway, Argo Rollouts), installed by `make setup` into
//!   `integration-tests/js/node_modules` and run by `integration-tests/js/validate.mjs`.
//!
//! A fresh clone has only the second; Flagger has no npm package, so its kinds are
//! checked only where the raw CRDs are, and [`report`] prints that they were not.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::Value;

use crate::repo_root;

/// The raw CRD folder, when there is one.
pub fn schemas_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MESHGUARD_SCHEMAS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/schemas"));
    dir.join("istio").is_dir().then_some(dir)
}

/// Which validators checked a document, and what they found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// The validators that ran (`CRD <file folder>`, `npm <package>@<version>`).
    pub by: Vec<String>,
    /// Problems, prefixed with the validator that found them.
    pub errors: Vec<String>,
}

/// Checks every document with every validator available (see the module docs).
/// Panics when the npm validators are not installed: `make setup` installs them.
pub fn check_all(docs: &[Value]) -> Vec<Checked> {
    let mut out: Vec<Checked> = docs.iter().map(|_| Checked::default()).collect();
    if let Some(dir) = schemas_dir() {
        for (doc, c) in docs.iter().zip(&mut out) {
            let api = doc["apiVersion"].as_str().unwrap_or_default();
            let kind = doc["kind"].as_str().unwrap_or_default();
            if let Some(schema) = crd_schema(&dir, api, kind) {
                let by = format!("CRD {}", dir.display());
                let validator = jsonschema::validator_for(&schema)
                    .unwrap_or_else(|e| panic!("{api} {kind}: bad schema: {e}"));
                c.errors.extend(
                    validator
                        .iter_errors(doc)
                        .map(|e| format!("{by}: {}: {}", e.instance_path(), e)),
                );
                c.by.push(by);
            }
        }
    }
    for (c, npm) in out.iter_mut().zip(npm_check(docs)) {
        if let Some(by) = npm.validator {
            c.errors
                .extend(npm.errors.into_iter().map(|e| format!("{by}: {e}")));
            c.by.push(by);
        }
    }
    out
}

/// Problems of one document (empty: valid), by every validator available.
pub fn validate(doc: &Value) -> Vec<String> {
    check_all(std::slice::from_ref(doc))
        .pop()
        .map(|c| c.errors)
        .unwrap_or_default()
}

/// Prints, per document, which validators checked it (to stderr: shown with the
/// test's output), and says loudly which documents none could check.
pub fn report(label: &str, docs: &[Value], checked: &[Checked]) -> usize {
    let mut unchecked = 0;
    for (d, c) in docs.iter().zip(checked) {
        let what = format!(
            "{} {}",
            d["kind"].as_str().unwrap_or("?"),
            d["metadata"]["name"].as_str().unwrap_or("?")
        );
        if c.by.is_empty() {
            unchecked += 1;
            eprintln!(
                "schema checks: {label}: {what}: NOT CHECKED (no npm model for {}; the raw CRDs in ../shared/schemas or MESHGUARD_SCHEMAS check it)",
                d["apiVersion"].as_str().unwrap_or("?")
            );
        } else {
            eprintln!("schema checks: {label}: {what}: {}", c.by.join(", "));
        }
    }
    unchecked
}

#[derive(Deserialize)]
struct NpmResult {
    validator: Option<String>,
    errors: Vec<String>,
}

fn npm_check(docs: &[Value]) -> Vec<NpmResult> {
    let js = repo_root().join("integration-tests/js");
    assert!(
        js.join("node_modules/@kubernetes-models/istio").is_dir(),
        "the npm manifest validators are not installed in {}: run `make setup`",
        js.display()
    );
    let mut child = Command::new("node")
        .arg(js.join("validate.mjs"))
        .current_dir(&js)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (make setup installs it)");
    let input = serde_json::to_vec(docs).expect("documents as JSON");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write documents to node");
    let out = child.wait_with_output().expect("node validate.mjs");
    assert!(out.status.success(), "validate.mjs failed");
    serde_json::from_slice(&out.stdout).expect("validate.mjs output")
}

/// Every YAML document in a file.
pub fn yaml_documents(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// The openAPIV3Schema for `apiVersion` + `kind`, from any CRD under the folder.
pub fn crd_schema(dir: &std::path::Path, api_version: &str, kind: &str) -> Option<Value> {
    let (group, version) = api_version.split_once('/')?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            for crd in yaml_documents(&path) {
                if crd["spec"]["group"] != group || crd["spec"]["names"]["kind"] != kind {
                    continue;
                }
                let versions = crd["spec"]["versions"].as_array()?;
                if let Some(v) = versions.iter().find(|v| v["name"] == version) {
                    return Some(v["schema"]["openAPIV3Schema"].clone());
                }
            }
        }
    }
    None
}
