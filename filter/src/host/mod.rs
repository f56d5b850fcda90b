//! What the filter needs from the proxy, as traits returning `Result`: the only
//! code that names proxy-wasm is [`proxy`].
//!
//! The glue is written against [`Host`]; [`proxy::ProxyHost`] implements it with
//! `proxy_wasm::hostcalls` (bytes variants only, `Status` mapped to [`HostError`]),
//! and `fake::FakeHost` (tests only) implements it in memory. [`view`] and
//! [`store`] adapt a `Host` to what the engine asks for: the request, and shared
//! data with compare-and-swap.

#[cfg(test)]
pub mod fake;
pub mod pairs;
#[cfg(feature = "proxy-wasm")]
pub mod proxy;
pub mod store;
pub mod view;

use std::fmt;

use pairs::HeaderPairs;

/// The Proxy-Wasm ABI this module targets: what the SDK in Cargo.lock exports
/// (`build.rs`), `unknown` for an SDK this code does not know.
pub const PROXY_WASM_ABI: &str = env!("MESHGUARD_PROXY_WASM_ABI");

/// Whether Envoy clears the route cache by itself when this module edits request
/// headers: it does for modules of ABI 0.2.1 and, since Envoy 1.30, not for later
/// ABIs. When false, the glue calls `clear_route_cache` after routing headers.
pub fn host_clears_route_cache() -> bool {
    PROXY_WASM_ABI == "0.2.1"
}

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

/// The proxy, as the glue sees it.
pub trait Host {
    /// The plugin configuration bytes handed to `on_configure` (`None` when empty).
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError>;
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
    /// Makes Envoy pick the route again after a routing header changed (Envoy's
    /// `clear_route_cache` foreign function; header edits alone do not always do it).
    fn clear_route_cache(&self) -> Result<(), HostError>;
    /// The response's `:status` (in `on_http_response_headers`); `None` when absent
    /// or not a number.
    fn response_status(&self) -> Result<Option<u64>, HostError>;
    /// A response header's raw value (in `on_http_response_headers`).
    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// A response trailer's raw value (in `on_http_response_trailers`).
    fn response_trailer(&self, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// Replaces a response header.
    fn set_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Adds a response header (keeps existing copies, as `set-cookie` needs).
    fn add_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// 64 random bits from the host (WASI `random_get`), to seed the per-VM generator.
    fn random_seed(&self) -> Result<u64, HostError>;
    /// An integer property such as `response.code` or `response.flags` (Envoy passes
    /// integers as 8 little-endian bytes); `None` when absent.
    fn property_u64(&self, path: &[&str]) -> Result<Option<u64>, HostError>;
    /// Wall-clock time in nanoseconds since the Unix epoch.
    fn now_ns(&self) -> Result<u64, HostError>;
    /// The plugin's name (`plugin_name` property), to keep shared-data keys apart.
    fn plugin_name(&self) -> Result<Option<Vec<u8>>, HostError>;
    /// Reads a shared-data entry and its CAS token; `(None, None)` when absent.
    fn shared_get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError>;
    /// Writes a shared-data entry if its CAS token still equals `cas`;
    /// `Ok(false)` on a CAS mismatch.
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, HostError>;
    /// True when `shared_get` of an absent entry gives a token that makes a
    /// later `shared_set` fail once the entry exists (create-if-absent);
    /// proxy-wasm's shared data does not.
    fn shared_creates_atomically(&self) -> bool {
        false
    }
    /// Takes `delta` for batched counter or gauge `id` into counts the host
    /// keeps itself and hands to Envoy on its own schedule; false (the worker
    /// keeps it for its tick) when the host keeps none, as proxy-wasm does.
    /// The native build sums every worker's counts per metric in the process
    /// and writes them from Envoy's main thread on each tick, so a worker
    /// whose streams end one by one does not write them per request.
    fn add_batched(&self, _id: u32, _delta: i64) -> bool {
        false
    }
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
    /// Defines (or finds) a metric by name; returns its id.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError>;
    /// Adds `delta` to a counter or gauge.
    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError>;
    /// Records a histogram value (or sets a gauge).
    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError>;
    /// Calls `service`/`method` on gRPC cluster `cluster` with `message`, giving up
    /// after `timeout_ms`; the answer comes to this stream's context with the
    /// returned token. An error (an unknown cluster, say) means no answer will come.
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
    /// Cancels a gRPC call that has not been answered.
    fn cancel_grpc_call(&self, token: u32) -> Result<(), HostError>;
    /// Lets a paused request go on.
    fn resume_request(&self) -> Result<(), HostError>;
    /// Asks for the root context's tick every `period_ms` (0: no tick).
    fn set_tick_period(&self, period_ms: u64) -> Result<(), HostError>;
    /// Writes one line to the proxy's log.
    fn log(&self, level: Level, message: &str);

    /// A name for this Envoy in the fleet service's logs: its node id when the
    /// host knows one.
    fn node_name(&self) -> Option<String> {
        None
    }

    /// Whether Envoy picks the route again by itself after this host's
    /// request-header edits: so it does for a Proxy-Wasm module of ABI 0.2.1
    /// ([`host_clears_route_cache`]); a dynamic module must ask.
    fn clears_route_cache_itself(&self) -> bool {
        host_clears_route_cache()
    }
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
