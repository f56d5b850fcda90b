//! The house's rules, checked on the source (no Envoy): a host-neutral core,
//! two thin hosts that do not know each other, `unsafe` only at the native
//! ABI, small files. `docs/src/architecture.md` draws the layout these keep.

use std::path::{Path, PathBuf};

use meshguard_integration_tests::repo_root;

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of `text` that are code: comments (`//`, `//!`, `///`) left out.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l))
}

#[test]
fn the_core_names_no_proxy_abi_and_has_no_feature_gates() {
    let core = repo_root().join("filter/core");
    let manifest = read(&core.join("Cargo.toml"));
    assert!(
        !manifest.contains("proxy-wasm"),
        "the core depends on proxy-wasm"
    );
    assert!(!manifest.contains("[features]"), "the core has features");
    for file in rust_files(&core.join("src")) {
        let text = read(&file);
        for (n, line) in code_lines(&text) {
            assert!(
                !line.contains("proxy_wasm") && !line.contains("envoy_dynamic_module"),
                "{}:{n} names a proxy ABI: {line}",
                file.display()
            );
            assert!(
                !line.contains("cfg(feature"),
                "{}:{n} is a feature gate: {line}",
                file.display()
            );
        }
    }
}

#[test]
fn the_two_hosts_depend_on_the_core_and_not_on_each_other() {
    let root = repo_root();
    let wasm = read(&root.join("filter/wasm/Cargo.toml"));
    let native = read(&root.join("filter/native/Cargo.toml"));
    for (name, manifest, other) in [
        ("wasm", &wasm, "meshguard-native"),
        ("native", &native, "meshguard-wasm"),
    ] {
        assert!(
            manifest.contains("meshguard-core"),
            "{name} does not use the core"
        );
        assert!(!manifest.contains(other), "{name} depends on {other}");
    }
    assert!(
        !native.contains("proxy-wasm"),
        "native depends on proxy-wasm"
    );
    for file in rust_files(&root.join("filter/native/src")) {
        let text = read(&file);
        assert!(
            !text.contains("proxy_wasm") && !text.contains("meshguard::"),
            "{} reaches into the Wasm build",
            file.display()
        );
    }
}

#[test]
fn unsafe_code_lives_only_at_the_native_abi() {
    let root = repo_root();
    let abi = root.join("filter/native/src/abi");
    let abi_rs = root.join("filter/native/src/abi.rs");
    let mut at_abi = 0;
    for dir in [
        "filter/core/src",
        "filter/native/src",
        "filter/engine/src",
        "config/src",
    ] {
        for file in rust_files(&root.join(dir)) {
            let text = read(&file);
            let unsafe_lines = code_lines(&text)
                .filter(|(_, l)| {
                    l.contains("unsafe ") || l.contains("unsafe(") || l.contains("unsafe_code")
                })
                .count();
            if file.starts_with(&abi) || file == abi_rs {
                at_abi += unsafe_lines;
            } else {
                assert_eq!(unsafe_lines, 0, "{} has unsafe code", file.display());
            }
        }
    }
    assert!(at_abi > 0, "the ABI module is where the unsafe code is");
}

#[test]
fn no_source_file_of_the_filter_is_over_about_500_lines_outside_tests() {
    let root = repo_root();
    let mut long = Vec::new();
    for dir in ["filter/core/src", "filter/wasm/src", "filter/native/src"] {
        for file in rust_files(&root.join(dir)) {
            let name = file.to_string_lossy();
            // Tests, and the fake host and mocks they drive.
            if name.contains("/tests/")
                || name.ends_with("tests.rs")
                || name.ends_with("fake.rs")
                || name.ends_with("mock.rs")
            {
                continue;
            }
            let text = read(&file);
            // A file's own unit tests at its end do not count.
            let body = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            let lines = body.lines().count();
            if lines > 520 {
                long.push(format!("{name}: {lines}"));
            }
        }
    }
    assert!(long.is_empty(), "files over about 500 lines: {long:?}");
}
