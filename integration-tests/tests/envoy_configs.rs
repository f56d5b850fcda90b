//! Every Envoy config shipped under `envoy/` is accepted by the real Envoy.

use std::process::Command;

use meshguard_integration_tests::{envoy_bin, repo_root, wasm_path};

/// Envoy bootstraps are the YAML files directly in `envoy/`; Kubernetes manifests
/// and observability files live in subfolders and are tested elsewhere.
fn envoy_configs() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("envoy"))
        .expect("envoy/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_envoy_config_under_envoy_dir_validates() {
    wasm_path(); // the configs load the built wasm, relative to the repo root
    let files = envoy_configs();
    assert!(
        files.iter().any(|f| f.ends_with("demo.yaml")),
        "expected envoy/demo.yaml among {files:?}"
    );
    for file in files {
        let out = Command::new(envoy_bin())
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&file)
            .current_dir(repo_root())
            .output()
            .expect("run envoy --mode validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{} rejected:\n{text}", file.display());
        assert!(text.contains("OK"), "{}:\n{text}", file.display());
        assert!(
            text.contains("meshguard: configuration loaded"),
            "{}: meshguard's config was not loaded:\n{text}",
            file.display()
        );
    }
}
