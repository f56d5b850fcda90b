//! Real-Envoy test harness for meshguard.
//!
//! - [`envoy::Envoy`] starts the real Envoy (the `.venv` wheel or `ENVOY_BIN`) with
//!   the built `meshguard.wasm`, on loopback port 0 everywhere, waits until it is
//!   ready, always kills it, and prints its log when the test fails.
//! - [`upstream::Upstream`] is a test upstream that answers with a status, delay and
//!   body chosen per request by headers, counts requests, and echoes the request
//!   headers it saw (bytes included), so tests can prove what the filter changed.
//! - [`bootstrap::Bootstrap`] writes the Envoy config for a test.

pub mod bootstrap;
pub mod envoy;
pub mod load;
pub mod upstream;

use std::path::PathBuf;

/// The repository root (this crate lives in `integration-tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests has a parent directory")
        .to_path_buf()
}

/// The Envoy binary: `ENVOY_BIN`, else `.venv/bin/envoy` (installed by `make setup`).
pub fn envoy_bin() -> PathBuf {
    let path = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/envoy"));
    assert!(
        path.exists(),
        "Envoy not found at {} — run `make setup` (or set ENVOY_BIN)",
        path.display()
    );
    path
}

/// The filter under test: `MESHGUARD_WASM`, else the release build `make build` makes.
pub fn wasm_path() -> PathBuf {
    let path = std::env::var_os("MESHGUARD_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/wasm32-wasip1/release/meshguard.wasm"));
    assert!(
        path.exists(),
        "meshguard.wasm not found at {} — run `make build` (or set MESHGUARD_WASM)",
        path.display()
    );
    path
}
