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
pub mod grpc;
pub mod load;
pub mod prometheus;
pub mod rls;
pub mod schemas;
pub mod upstream;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

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

/// Which build of meshguard the tests load: the Wasm filter (default), or the
/// native dynamic module when `MESHGUARD_HOST=native` (`make test` runs the
/// suite both ways; the tests that cannot apply to one build say why and skip).
pub fn native() -> bool {
    std::env::var("MESHGUARD_HOST").is_ok_and(|h| h == "native")
}

/// The line Envoy logs when it refuses meshguard's configuration: its own words
/// differ between the two builds (meshguard's lines before it do not).
pub fn refused_config_line() -> &'static str {
    if native() {
        "Failed to create filter config: Failed to initialize dynamic module"
    } else {
        "Unable to create Wasm plugin meshguard"
    }
}

/// The folder holding the native build's `libmeshguard.so`: `MESHGUARD_NATIVE_DIR`,
/// else `target/native` (`make build`).
pub fn native_dir() -> PathBuf {
    let dir = std::env::var_os("MESHGUARD_NATIVE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/native"));
    assert!(
        dir.join("libmeshguard.so").exists(),
        "libmeshguard.so not found in {} — run `make build` (or set MESHGUARD_NATIVE_DIR)",
        dir.display()
    );
    dir
}

/// A blocking `GET path` on `addr` (HTTP/1.1, connection closed after): status
/// code and body, chunked bodies decoded.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        code,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

/// Decodes an HTTP/1.1 chunked body (the admin API streams its answers).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The TEST-ONLY wasm that traps on `x-meshguard-trap: 1` (`make build-trap`).
pub fn trap_wasm_path() -> PathBuf {
    let path = repo_root().join("target/trap-drill/wasm32-wasip1/release/meshguard.wasm");
    assert!(
        path.exists(),
        "trap-drill wasm not found at {} — run `make build-trap`",
        path.display()
    );
    path
}

/// Every metric family the filter defines, as Prometheus names them (the
/// observability test checks it against a real scrape; the docs test checks the
/// book names no other and documents each).
pub const METRIC_FAMILIES: [&str; 26] = [
    "meshguard_requests_total",
    "meshguard_request_failures_total",
    "meshguard_request_duration_milliseconds",
    "meshguard_requests_in_flight",
    "meshguard_grpc_requests_total",
    "meshguard_ratelimit_requests_total",
    "meshguard_breaker_state",
    "meshguard_breaker_transitions_total",
    "meshguard_breaker_rejected_total",
    "meshguard_ratelimit_rpc_duration_milliseconds",
    "meshguard_ratelimit_leases_total",
    "meshguard_ratelimit_cached_rejections_total",
    "meshguard_ratelimit_overflow_total",
    "meshguard_ratelimit_table_keys",
    "meshguard_ratelimit_store_conflicts_total",
    "meshguard_ratelimit_cost_total",
    "meshguard_canary_weight",
    "meshguard_canary_state",
    "meshguard_canary_transitions_total",
    "meshguard_canary_evidence_permille",
    "meshguard_canary_analysis",
    "meshguard_canary_shadow_verdict",
    "meshguard_fleet_state",
    "meshguard_fleet_syncs_total",
    "meshguard_fleet_sync_duration_milliseconds",
    "meshguard_fleet_last_sync_seconds",
];
