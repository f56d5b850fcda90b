//! What the glue needs from the proxy, as traits by scope, each call returning
//! `Result`. Two crates implement them: `meshguard-wasm` over Proxy-Wasm and
//! `meshguard-native` over Envoy's dynamic-module ABI; [`fake::FakeHost`]
//! implements them in memory for the glue's tests.
//!
//! **Scopes.** A proxy lets a plugin do different things at different times,
//! so the calls are grouped by when they may be made, and each glue function
//! asks for the scope it runs in; a call made in the wrong scope does not
//! compile:
//!
//! - [`Process`]: anywhere: the clock, randomness, the log, and the shared
//!   data every worker sees ([`Process::Store`]);
//! - [`Metrics`]: writing the metrics defined while the configuration loaded;
//! - [`Calls`]: gRPC calls and their answers;
//! - [`Configuration`]: while a configuration loads: its bytes, its name, and
//!   metric definitions;
//! - [`Timer`]: a worker's tick: asking for ticks (each host delivers them its
//!   own way and calls [`crate::glue::tick::on_tick`]);
//! - [`HttpStream`]: one HTTP stream's hooks: its headers, replies and properties.
//!
//! [`view`] adapts an [`HttpStream`] to the request view the engine reads.

pub mod counts;
pub mod fake;
pub mod pairs;
pub mod view;

use std::fmt;

use meshguard_config::tuning::RouteCache;
use meshguard_engine::metrics::Series;
use meshguard_engine::SharedStore;

use pairs::HeaderPairs;

/// A host call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    /// Which call failed, such as `get_map_value_bytes(x-user-id)`.
    pub call: String,
    /// The status the host returned.
    pub status: String,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host call {} failed: {}", self.call, self.status)
    }
}

/// Log severity, as the glue uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something an operator must fix (bad config).
    Error,
    /// Unexpected but handled (a failed host call with a fallback).
    Warn,
    /// Notable events.
    Info,
    /// Per-request detail (the decision log, `explain.log`).
    Debug,
}

/// Kinds of metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution.
    Histogram,
}

/// What any scope may do: the clock, randomness, the log, shared data.
pub trait Process {
    /// The shared data every worker of this Envoy sees, as the engine's
    /// compare-and-swap store (whether it creates entries atomically is the
    /// store's own property, [`SharedStore::creates_atomically`]).
    type Store<'s>: SharedStore
    where
        Self: 's;
    /// The shared data, for one engine call.
    fn store(&self) -> Self::Store<'_>;
    /// Wall-clock time in nanoseconds since the Unix epoch.
    fn now_ns(&self) -> Result<u64, HostError>;
    /// 64 random bits from the host, to seed a generator.
    fn random_seed(&self) -> Result<u64, HostError>;
    /// Writes one line to the proxy's log.
    fn log(&self, level: Level, message: &str);
}

/// Writing metrics defined while the configuration loaded (by the ids
/// [`Configuration::define_metric`] gave).
pub trait Metrics {
    /// Adds `delta` to counter or gauge `id`, handed to the proxy on the host's
    /// own schedule: within one tick (`metrics.counters: batched`).
    fn add(&self, id: u32, delta: i64);
    /// Adds `delta` to counter or gauge `id` now.
    fn increment(&self, id: u32, delta: i64) -> Result<(), HostError>;
    /// Records a histogram value, or sets a gauge.
    fn record(&self, id: u32, value: u64) -> Result<(), HostError>;
    /// Whether counts given to [`Metrics::add`] still wait for a tick (the
    /// worker's tick then keeps running until they are handed over).
    fn holds_counts(&self) -> bool;
}

/// gRPC calls: the rate limit service's and the fleet service's.
pub trait Calls {
    /// Calls `service`/`method` on gRPC cluster `cluster` with `message`, giving up
    /// after `timeout_ms`; the answer comes back with the returned token. An
    /// error (an unknown cluster, say) means no answer will come.
    fn dispatch_grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError>;
    /// The body of the gRPC answer being delivered (`size` bytes).
    fn grpc_response(&self, size: usize) -> Result<Option<Vec<u8>>, HostError>;
}

/// While a configuration loads (or a worker builds its copy of one).
pub trait Configuration: Process + Metrics {
    /// The plugin configuration bytes (`None` when empty).
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError>;
    /// The plugin's name, to keep shared-data keys apart.
    fn plugin_name(&self) -> Result<Option<Vec<u8>>, HostError>;
    /// A name for this Envoy in the fleet service's logs: its node id when the
    /// host knows one.
    fn node_name(&self) -> Option<String>;
    /// Defines (or finds) metric `series` of `kind`; returns its id.
    fn define_metric(&self, kind: MetricKind, series: &Series) -> Result<u32, HostError>;
}

/// A worker's tick: the core asks for ticks, the host delivers them its own
/// way (a Proxy-Wasm root context's timer; a scheduler a dynamic module's
/// stream lends) and calls [`crate::glue::tick::on_tick`] for each.
pub trait Timer: Process + Metrics + Calls {
    /// Asks for a tick every `period_ms` (0: no more ticks).
    fn set_tick_period(&self, period_ms: u64) -> Result<(), HostError>;
}

/// One HTTP stream's hooks.
pub trait HttpStream: Timer {
    /// A request header's raw value (no UTF-8 assumption); `None` when absent.
    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// Every request header, in one call.
    fn request_headers(&self) -> Result<HeaderPairs, HostError>;
    /// Replaces a request header (`Some`) or removes every copy of it (`None`).
    fn set_request_header(&self, name: &str, value: Option<&[u8]>) -> Result<(), HostError>;
    /// Envoy's `source.address` property (`ip:port`).
    fn source_address(&self) -> Result<Option<Vec<u8>>, HostError>;
    /// Sets the stream's property `name` (Envoy keeps it as filter state
    /// `wasm.<name>`, readable by access logs).
    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Routing headers changed: makes Envoy pick the route again as `mode`
    /// says (`clear`: always ask; `auto`: ask unless Envoy does it by itself
    /// after this host's header edits). True when it asked.
    fn repick_route(&self, mode: RouteCache) -> Result<bool, HostError>;
    /// The response's `:status`; `None` when absent or not a number.
    fn response_status(&self) -> Result<Option<u64>, HostError>;
    /// A response header's raw value.
    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// A response trailer's raw value.
    fn response_trailer(&self, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// Replaces a response header.
    fn set_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Adds a response header (keeps existing copies, as `set-cookie` needs).
    fn add_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// An integer property such as `response.code` or `response.flags`; `None`
    /// when absent.
    fn property_u64(&self, path: &[&str]) -> Result<Option<u64>, HostError>;
    /// Answers the request locally (the stream must then pause).
    fn send_local_reply(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError>;
    /// Answers a gRPC request locally: HTTP 200, trailers-only, with gRPC status
    /// `status` (1 to 16) and `message` as `grpc-message`.
    fn send_grpc_reply(
        &self,
        status: u32,
        message: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), HostError>;
    /// Cancels a gRPC call of this stream that has not been answered.
    fn cancel_grpc_call(&self, token: u32) -> Result<(), HostError>;
    /// Lets a paused request go on.
    fn resume_request(&self) -> Result<(), HostError>;
}

/// A `:status` value as a number: one to three ASCII digits, nothing else.
pub fn parse_status(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 3 {
        return None;
    }
    value.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}
