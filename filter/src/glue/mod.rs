//! Proxy-Wasm contexts. The callbacks stay a few lines: they build a view from
//! the [`Host`](crate::host::Host), ask the engine, and apply the decision. The
//! decision-applying steps are plain functions over `Host`, so unit tests drive
//! them with the fake host.

pub mod breaker;
#[cfg(test)]
mod budget;
pub mod configure;
pub mod http;
pub mod plugin;
pub mod ratelimit;
pub mod request;
pub mod rng;
pub mod root;
