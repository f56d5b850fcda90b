//! meshguard as a Proxy-Wasm module (`meshguard.wasm`): the core's glue behind
//! the Proxy-Wasm ABI. This crate is thin on purpose:
//!
//! - [`host`]: the core's host traits over `proxy_wasm::hostcalls` (the only
//!   code that calls the proxy), with the counts it batches per worker;
//! - [`root`] and [`http`]: the SDK's root and HTTP contexts, each callback
//!   handing over to the core's glue (`meshguard_core::glue`);
//! - the entry point below.
//!
//! Envoy runs one VM per worker thread; each VM's root context loads the
//! configuration and runs the worker's tick, and each stream gets an HTTP
//! context.

pub mod host;
pub mod http;
pub mod root;

// The module's entry point: Envoy calls `_start` / `proxy_on_vm_start`, and the
// SDK hands each new plugin instance a fresh root context.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // `proxy_wasm::main!` exports `_start` with `#[no_mangle]`.
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| Box::new(crate::root::Root::default()));
    }}
}
