//! meshguard's decision logic, free of the proxy.
//!
//! Nothing here names `proxy_wasm`, reads a clock or draws a random number: the
//! glue passes in what the host knows (headers through [`RequestView`], and, as
//! features arrive, time and random rolls as plain numbers). That keeps every
//! decision unit-testable, natively and on wasm32 under `wasm-bindgen-test`.

pub mod breaker;
pub mod canary;
pub mod hash;
pub mod le;
pub mod metrics;
pub mod params;
pub mod ratelimit;
pub mod route;
pub mod store;

pub use route::{select_route, RequestView};
