//! meshguard, the Proxy-Wasm filter.
//!
//! Three zones:
//!
//! - the `meshguard-engine` crate **decides** (a crate of its own, so it cannot name
//!   proxy-wasm): route, rate limits, variant, breaker; it returns each decision
//!   as a value;
//! - [`glue`] **applies**: `glue::request` holds one function per callback, each
//!   reading a view of the request, asking the engine once and applying the answer
//!   (header edits, route re-pick, local reply, metrics, logs) in one place;
//! - [`host`] is the only code that **talks to the proxy**: the `Host` trait, its
//!   proxy-wasm adapter, the request view and shared-data store the engine reads
//!   through, and a fake host for tests.
//!
//! A request: `on_http_request_headers` → `glue::request::on_request_headers` →
//! `Runtime::decide` (route, rate limits, variant, breaker gate) →
//! `apply_request`; `on_http_response_headers` → `Runtime::respond` →
//! `apply_response`; `on_log` → `Runtime::finish` → `apply_log`.

pub mod glue;
pub mod host;

// The module's entry point: Envoy calls `_start` / `proxy_on_vm_start`, and the
// SDK hands each new plugin instance a fresh root context.
#[cfg(all(target_arch = "wasm32", feature = "proxy-wasm"))]
#[allow(unsafe_code)] // `proxy_wasm::main!` exports `_start` with `#[no_mangle]`.
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| Box::new(crate::glue::root::Root::default()));
    }}
}
