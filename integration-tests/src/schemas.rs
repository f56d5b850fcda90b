//! Validating Kubernetes manifests against the real CRD schemas in
//! `../shared/schemas/` (or `MESHGUARD_SCHEMAS`): structural validation of
//! `spec.versions[*].schema.openAPIV3Schema` for the manifest's apiVersion.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::repo_root;

/// The schema folder; panics with what to do when it is missing.
pub fn schemas_dir() -> PathBuf {
    let dir = std::env::var_os("MESHGUARD_SCHEMAS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/schemas"));
    assert!(
        dir.join("istio").is_dir(),
        "CRD schemas not found at {} (set MESHGUARD_SCHEMAS to the shared/schemas folder)",
        dir.display()
    );
    dir
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
pub fn crd_schema(api_version: &str, kind: &str) -> Option<Value> {
    let (group, version) = api_version.split_once('/')?;
    let mut stack = vec![schemas_dir()];
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

/// Problems of `doc` against its CRD schema (empty: valid). Panics when no CRD
/// for its kind is available.
pub fn validate(doc: &Value) -> Vec<String> {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let schema = crd_schema(api, kind).unwrap_or_else(|| panic!("no CRD schema for {api} {kind}"));
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{api} {kind}: bad schema: {e}"));
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect()
}
