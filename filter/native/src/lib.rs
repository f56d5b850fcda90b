//! meshguard native: the core's glue and the engine as an Envoy dynamic module
//! (`libmeshguard.so`, Envoy 1.40, ABI `v0.2.0`). This crate is thin on
//! purpose, and depends on the core only:
//!
//! - `abi`: the Envoy callbacks used (declared here, checked against the 1.40
//!   binary's exports), every one behind a safe handle, and the hooks Envoy
//!   calls, each under one `catch_unwind`: the only `unsafe` code of the crate;
//! - [`host`]: the core's host traits over those handles, one type per scope,
//!   and the configuration's metrics;
//! - `module`: the wiring: each hook hands over to the core's glue, as the
//!   Wasm build's contexts do;
//! - [`ticker`]: ticks, and the main thread's writes, posted by one thread;
//! - [`grpc`]: gRPC calls as HTTP callouts in gRPC's wire format;
//! - [`store`]: the process-wide compare-and-swap store that replaces
//!   Proxy-Wasm shared data.

mod abi;
#[cfg(feature = "panic-drill")]
mod drill;
pub mod grpc;
pub mod host;
mod module;
pub mod shared;
pub mod store;
pub mod ticker;

/// The Envoy callbacks this module binds, for the check against the Envoy
/// binary's exports.
pub use abi::CALLBACKS;
