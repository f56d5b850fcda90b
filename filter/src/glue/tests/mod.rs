//! Glue tests: the request path through the fake host, as Envoy drives it.

use std::rc::Rc;

use meshguard_config::load_json;
use meshguard_engine::Rng;

use super::plugin::{build, Plugin};
use super::worker::Worker;
use crate::host::fake::FakeHost;

mod apply;
mod breaker;
mod budget;
mod explain;
mod global;
mod grpc;
mod properties;
mod ratelimit;
mod request;
mod rollout;
mod tick;

/// The plugin of `json` on a worker of its own, its metrics defined in `world`;
/// the worker's batched counts are handed to `world` before any metric is read.
pub fn plugin(json: &str, world: &FakeHost) -> Plugin {
    let worker: Rc<Worker> = Rc::default();
    let flush = worker.clone();
    world.before_metric_read(Rc::new(move |h: &FakeHost| flush.flush(h)));
    build(world, load_json(json.as_bytes()).unwrap(), worker).unwrap()
}

/// A fixed random generator.
pub fn rng(seed: u64) -> Rng {
    Rng::new(seed)
}
