//! meshguard, the Proxy-Wasm filter.
//!
//! Three zones (see DESIGN.md): the pure `meshguard-engine` crate decides;
//! [`host`] is the only place that talks to the proxy (traits, the proxy-wasm
//! adapter, a fake host for tests); [`glue`] holds the root and HTTP contexts,
//! each callback a few lines: read a view, ask the engine, apply the decision.

pub mod glue;
pub mod host;

// The module's entry point: Envoy calls `_start` / `proxy_on_vm_start`, and the
// SDK hands each new plugin instance a fresh root context.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // `proxy_wasm::main!` exports `_start` with `#[no_mangle]`.
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| Box::new(crate::glue::root::Root::default()));
    }}
}
