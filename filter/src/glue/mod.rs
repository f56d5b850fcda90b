//! Proxy-Wasm contexts. The callbacks stay a few lines: [`request`] reads a view
//! from the [`Host`](crate::host::Host), asks the engine, and applies the decision
//! in one place per callback. Those steps are plain functions over `Host`, so unit
//! tests drive them with the fake host.

pub mod configure;
pub mod fleet;
#[cfg(feature = "proxy-wasm")]
pub mod http;
pub mod metrics;
pub mod plugin;
pub mod request;
#[cfg(feature = "proxy-wasm")]
pub mod root;
pub mod worker;

#[cfg(test)]
mod tests;
