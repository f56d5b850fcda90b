//! Deciding a request: the request view the engine reads through (headers
//! read lazily, once each), the engine's decision, and its application.

use meshguard_engine::Rng;

use super::apply::apply_request;
use super::plugin::Plugin;
use super::record::Writes;
use super::stream::Stream;
use crate::host::view::{CachedRequest, ReadPlan};
use crate::host::HttpStream;

/// Decides the request and applies the decision, with `earlier` writes (a
/// failed fleet read's) applied alongside.
pub fn decide(host: &impl HttpStream, plugin: &Plugin, rng: &Rng, earlier: Writes) -> Stream {
    // A clock failure is reported by the engine, with what it skips.
    let now = host.now_ns().ok();
    let tuning = &plugin.runtime.tuning;
    let mut view = CachedRequest::planned(
        host,
        ReadPlan {
            all_at_once: tuning.read_all_headers,
            client_address_header: tuning.client_address_header.as_deref(),
        },
    );
    let (state, effects) = plugin
        .runtime
        .decide(&mut view, &mut host.store(), rng, now);
    let mut stream = Stream {
        state,
        ..Stream::default()
    };
    apply_request(host, plugin, &mut stream, effects, earlier, true);
    stream
}
