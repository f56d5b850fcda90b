//! Tells the filter which Proxy-Wasm ABI its SDK targets, read from the workspace's
//! Cargo.lock: the `proxy-wasm` crate 0.2.x exports `proxy_abi_version_0_2_1`.
//! Envoy clears the route cache by itself when a module of that ABI edits request
//! headers, and not for later ABIs; any other SDK version is "unknown", so an SDK
//! upgrade brings the explicit `clear_route_cache` call back until this is updated.
//! (`integration-tests/tests/package.rs` checks the built module's export.)

use std::path::Path;

fn main() {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let version = sdk_version(&text).unwrap_or_default();
    let abi = if version.starts_with("0.2.") {
        "0.2.1"
    } else {
        "unknown"
    };
    println!("cargo:rustc-env=MESHGUARD_PROXY_WASM_SDK={version}");
    println!("cargo:rustc-env=MESHGUARD_PROXY_WASM_ABI={abi}");
}

/// The version of package `proxy-wasm` in a Cargo.lock.
fn sdk_version(lock: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"proxy-wasm\"" {
            let next = lines.next()?.trim();
            let v = next.strip_prefix("version = \"")?.strip_suffix('"')?;
            return Some(v.to_owned());
        }
    }
    None
}
