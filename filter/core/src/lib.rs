//! meshguard's core: everything between the engine and a proxy that does not
//! depend on which proxy ABI runs it.
//!
//! - the `meshguard-engine` crate **decides** (route, rate limits, variant,
//!   breaker) and returns each decision as a value;
//! - [`glue`] **applies**: one function per hook, each reading a view of the
//!   request, asking the engine once and applying the answer (header edits,
//!   route re-pick, local reply, metrics, logs) in one place;
//! - [`host`] says what the glue needs from the proxy, as traits by scope
//!   (configuration, timer, stream), with the request view and a fake host for
//!   tests.
//!
//! Two thin crates implement the host traits: `meshguard-wasm` (Proxy-Wasm,
//! `meshguard.wasm`) and `meshguard-native` (Envoy's dynamic-module ABI,
//! `libmeshguard.so`). Neither knows the other, and this crate names neither
//! ABI.

pub mod glue;
pub mod host;
