//! meshguard native: the same engine, glue and configuration as the Wasm filter,
//! as an Envoy dynamic module (`libmeshguard.so`, Envoy 1.40, ABI `v0.2.0`).
//!
//! Its parts, each small:
//!
//! - [`abi`]: the declarations of the Envoy callbacks used, written here and
//!   checked against the 1.40 binary's exports;
//! - [`host`]: the glue's `Host` trait over those callbacks;
//! - `module`: the hooks Envoy calls, each handing over to the glue functions
//!   the Wasm contexts call, under `catch_unwind` (all but the version string
//!   and the empty hooks of what meshguard does not use);
//! - [`grpc`]: rate limit service calls as HTTP callouts in gRPC's wire format;
//! - [`store`]: the process-wide compare-and-swap store that replaces
//!   proxy-wasm shared data, and [`names`]: metric names split into labels;
//! - `ticker`: the thread that posts every worker's and configuration's tick.

pub mod abi;
#[cfg(feature = "panic-drill")]
mod drill;
pub mod grpc;
pub mod host;
mod module;
pub mod names;
pub mod store;
mod ticker;
