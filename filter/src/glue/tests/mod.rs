//! Glue tests: the request path through the fake host, as Envoy drives it.

use meshguard_config::load_json;
use meshguard_engine::Rng;

use super::plugin::{build, Plugin};
use crate::host::fake::FakeHost;

mod apply;
mod breaker;
mod budget;
mod global;
mod ratelimit;
mod request;
mod rollout;

/// The plugin of `json`, its metrics defined in `world`.
pub fn plugin(json: &str, world: &FakeHost) -> Plugin {
    build(world, load_json(json.as_bytes()).unwrap()).unwrap()
}

/// A fixed random generator.
pub fn rng(seed: u64) -> Rng {
    Rng::new(seed)
}
