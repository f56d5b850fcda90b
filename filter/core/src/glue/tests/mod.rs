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
mod fleet;
mod global;
mod grpc;
mod hostile;
mod properties;
mod ratelimit;
mod request;
mod rollout;
mod tick;

/// The plugin of `json` on a worker of its own, its metrics defined in `world`
/// (whose batched counts are handed over before any metric is read).
pub fn plugin(json: &str, world: &FakeHost) -> Plugin {
    let worker: Rc<Worker> = Rc::default();
    build(world, load_json(json.as_bytes()).unwrap(), worker).unwrap()
}

/// A fixed random generator.
pub fn rng(seed: u64) -> Rng {
    Rng::new(seed)
}

/// One request through the glue at `now` from `addr` with `headers`, answered with
/// `status` unless meshguard answered it: the stream, to inspect.
pub fn send_at(
    p: &Plugin,
    world: &FakeHost,
    now: u64,
    addr: &str,
    headers: &[(&str, &str)],
    status: u64,
) -> FakeHost {
    use super::request::{on_log, on_request_headers, on_response_headers};
    let mut h = world.stream().at(now).from_address(addr);
    for (k, v) in headers {
        h = h.with_header(k, v.as_bytes());
    }
    let mut stream = on_request_headers(&h, p, &rng(7));
    if !stream.state.rejected {
        h.response_headers
            .borrow_mut()
            .push((":status".into(), status.to_string().into_bytes()));
        on_response_headers(&h, p, &mut stream.state, true);
    }
    on_log(&h, p, &stream.state);
    h
}
