//! The core's host traits over `proxy_wasm::hostcalls`: the only code of the
//! Wasm build that calls the proxy.
//!
//! Only the `_bytes` map calls are used: the string variants panic on a
//! non-UTF-8 header value, which would trap the VM. Every `Status` becomes a
//! [`HostError`]; the glue decides the fallback. Every scope is the same host
//! here (Proxy-Wasm answers each call for the context that runs), so one
//! [`ProxyHost`] implements them all.
//!
//! **Counts.** With `metrics.counters: batched` (the default) a counter or the
//! in-flight gauge is added up in the root context's [`Counts`] and handed to
//! Envoy on the worker's next tick (`root.rs`), one call per metric that
//! changed: each host call costs, and a busy route's counter then costs one
//! call per tick instead of one per request.

use meshguard_config::tuning::RouteCache;
use meshguard_core::glue::worker::TICK_MS;
use meshguard_core::host::counts::Counts;
use meshguard_core::host::pairs::HeaderPairs;
use meshguard_core::host::{
    parse_status, Calls, Configuration, HostError, HttpStream, Level, MetricKind, Metrics, Process,
    Timer,
};
use meshguard_engine::metrics::Series;
use meshguard_engine::{SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, GrpcStatusCode, LogLevel, MapType, MetricType, Status};

/// The Proxy-Wasm ABI this module targets: what the SDK in Cargo.lock exports
/// (`build.rs`), `unknown` for an SDK this code does not know.
pub const PROXY_WASM_ABI: &str = env!("MESHGUARD_PROXY_WASM_ABI");

/// Whether Envoy clears the route cache by itself when this module edits request
/// headers: it does for modules of ABI 0.2.1 and, since Envoy 1.30, not for later
/// ABIs. When false, `routeCache: auto` calls `clear_route_cache` after routing
/// headers change.
pub fn host_clears_route_cache() -> bool {
    PROXY_WASM_ABI == "0.2.1"
}

/// The real proxy, reached through the Proxy-Wasm ABI, for one callback of a
/// root or HTTP context: `counts` are its root context's.
#[derive(Debug, Clone, Copy)]
pub struct ProxyHost<'c> {
    counts: &'c Counts,
}

impl<'c> ProxyHost<'c> {
    /// The host of a callback whose root context batches into `counts`.
    pub fn new(counts: &'c Counts) -> Self {
        ProxyHost { counts }
    }

    /// Hands every batched count to Envoy (the root context's tick).
    pub fn flush_counts(&self) {
        self.counts.flush(increment);
    }

    /// After a tick: the timer stops when neither the core wants ticks
    /// (`ticking`) nor counts wait for one.
    pub fn idle_timer(&self, ticking: bool) {
        if self.counts.timer() && !ticking && !self.counts.holds() {
            let _ = self.set_tick_period(0);
        }
    }

    /// No tick of this root context runs again: counts go to Envoy now, and
    /// from now on at once.
    pub fn write_counts_at_once(&self) {
        self.counts.write_at_once(increment);
    }
}

fn increment(id: u32, delta: i64) {
    let _ = hostcalls::increment_metric(id, delta);
}

fn err(call: &str, arg: &str, status: Status) -> HostError {
    HostError {
        call: format!("{call}({arg})"),
        status: format!("{status:?}"),
    }
}

/// Proxy-Wasm shared data as the engine's store. An absent entry reads no CAS
/// token, so it does not create entries atomically (the default).
#[derive(Debug, Clone, Copy)]
pub struct ProxyStore;

impl SharedStore for ProxyStore {
    fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        hostcalls::get_shared_data(key)
            .map_err(|s| StoreError::Host(err("get_shared_data", key, s).to_string()))
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(s) => Err(StoreError::Host(err("set_shared_data", key, s).to_string())),
        }
    }
}

impl Process for ProxyHost<'_> {
    type Store<'s>
        = ProxyStore
    where
        Self: 's;

    fn store(&self) -> ProxyStore {
        ProxyStore
    }

    fn now_ns(&self) -> Result<u64, HostError> {
        let t = hostcalls::get_current_time().map_err(|s| err("get_current_time", "", s))?;
        Ok(t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }

    fn random_seed(&self) -> Result<u64, HostError> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| HostError {
            call: "random_get".into(),
            status: e.to_string(),
        })?;
        Ok(u64::from_le_bytes(b))
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Error => LogLevel::Error,
            Level::Warn => LogLevel::Warn,
            Level::Info => LogLevel::Info,
            Level::Debug => LogLevel::Debug,
        };
        // Nothing sensible remains to be done if logging itself fails.
        let _ = hostcalls::log(level, message);
    }
}

impl Metrics for ProxyHost<'_> {
    fn add(&self, id: u32, delta: i64) {
        // The first count held starts the root context's timer, which hands
        // the counts over (`root.rs`).
        self.counts.add(id, delta, increment, || {
            hostcalls::set_tick_period(std::time::Duration::from_millis(TICK_MS)).is_ok()
        });
    }

    fn increment(&self, id: u32, delta: i64) -> Result<(), HostError> {
        hostcalls::increment_metric(id, delta)
            .map_err(|s| err("increment_metric", &id.to_string(), s))
    }

    fn record(&self, id: u32, value: u64) -> Result<(), HostError> {
        hostcalls::record_metric(id, value).map_err(|s| err("record_metric", &id.to_string(), s))
    }

    fn holds_counts(&self) -> bool {
        self.counts.holds()
    }
}

impl Calls for ProxyHost<'_> {
    fn dispatch_grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        // An empty cluster name would reach a host path that answers BadArgument,
        // which the SDK turns into a panic; config validation forbids it, and so
        // does this.
        if cluster.is_empty() {
            return Err(err("dispatch_grpc_call", cluster, Status::BadArgument));
        }
        hostcalls::dispatch_grpc_call(
            cluster,
            service,
            method,
            Vec::new(),
            Some(message),
            std::time::Duration::from_millis(timeout_ms),
        )
        .map_err(|s| err("dispatch_grpc_call", cluster, s))
    }

    fn grpc_response(&self, size: usize) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
            .map_err(|s| err("get_buffer", "grpc_receive", s))
    }
}

impl Configuration for ProxyHost<'_> {
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .map_err(|s| err("get_buffer", "plugin_configuration", s))
    }

    fn plugin_name(&self) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_property(vec!["plugin_name"])
            .map_err(|s| err("get_property", "plugin_name", s))
    }

    fn node_name(&self) -> Option<String> {
        // Envoy's `xds.node` attribute (the Wasm-only `node` reads nothing in 1.40).
        let id = hostcalls::get_property(vec!["xds", "node", "id"]).ok()??;
        Some(String::from_utf8_lossy(&id).into_owned()).filter(|s| !s.is_empty())
    }

    fn define_metric(&self, kind: MetricKind, series: &Series) -> Result<u32, HostError> {
        let t = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        // Proxy-Wasm metrics have no labels: the flat name, which Envoy's
        // `stats_tags` cut back into labels.
        let name = series.flat_name();
        hostcalls::define_metric(t, &name).map_err(|s| err("define_metric", &name, s))
    }
}

impl Timer for ProxyHost<'_> {
    fn set_tick_period(&self, period_ms: u64) -> Result<(), HostError> {
        match hostcalls::set_tick_period(std::time::Duration::from_millis(period_ms)) {
            Ok(()) => {
                self.counts.set_timer(period_ms > 0);
                Ok(())
            }
            Err(s) => {
                // No tick will hand batched counts over: they go at once.
                self.write_counts_at_once();
                Err(err("set_tick_period", &period_ms.to_string(), s))
            }
        }
    }
}

impl HttpStream for ProxyHost<'_> {
    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .map_err(|s| err("get_map_value_bytes", name, s))
    }

    #[cfg(target_arch = "wasm32")]
    fn request_headers(&self) -> Result<HeaderPairs, HostError> {
        let buf = raw::request_pairs().map_err(|s| err("get_header_map_pairs", "request", s))?;
        HeaderPairs::parse(buf).ok_or_else(|| HostError {
            call: "get_header_map_pairs(request)".into(),
            status: "malformed map".into(),
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn request_headers(&self) -> Result<HeaderPairs, HostError> {
        Err(err(
            "get_header_map_pairs",
            "request",
            Status::InternalFailure,
        ))
    }

    fn set_request_header(&self, name: &str, value: Option<&[u8]>) -> Result<(), HostError> {
        hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value)
            .map_err(|s| err("set_map_value_bytes", name, s))
    }

    fn source_address(&self) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_property(vec!["source", "address"])
            .map_err(|s| err("get_property", "source.address", s))
    }

    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        hostcalls::set_property(vec![name], Some(value)).map_err(|s| err("set_property", name, s))
    }

    fn repick_route(&self, mode: RouteCache) -> Result<bool, HostError> {
        if mode != RouteCache::Clear && host_clears_route_cache() {
            return Ok(false);
        }
        hostcalls::call_foreign_function("clear_route_cache", None)
            .map(|_| true)
            .map_err(|s| err("call_foreign_function", "clear_route_cache", s))
    }

    fn response_status(&self) -> Result<Option<u64>, HostError> {
        let value = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
            .map_err(|s| err("get_map_value_bytes(response)", ":status", s))?;
        Ok(value.as_deref().and_then(parse_status))
    }

    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
            .map_err(|s| err("get_map_value_bytes(response)", name, s))
    }

    fn response_trailer(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseTrailers, name)
            .map_err(|s| err("get_map_value_bytes(trailers)", name, s))
    }

    fn set_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, name, Some(value))
            .map_err(|s| err("set_map_value_bytes(response)", name, s))
    }

    fn add_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        hostcalls::add_map_value_bytes(MapType::HttpResponseHeaders, name, value)
            .map_err(|s| err("add_map_value_bytes(response)", name, s))
    }

    fn property_u64(&self, path: &[&str]) -> Result<Option<u64>, HostError> {
        let bytes = hostcalls::get_property(path.to_vec())
            .map_err(|s| err("get_property", &path.join("."), s))?;
        Ok(bytes
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_le_bytes))
    }

    fn send_local_reply(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body))
            .map_err(|s| err("send_http_response", &status.to_string(), s))
    }

    fn send_grpc_reply(
        &self,
        status: u32,
        message: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), HostError> {
        let code = grpc_code(status).ok_or_else(|| HostError {
            call: "send_grpc_response".into(),
            status: format!("no gRPC status {status}"),
        })?;
        let metadata: Vec<(&str, &[u8])> =
            headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        hostcalls::send_grpc_response(code, Some(message), metadata)
            .map_err(|s| err("send_grpc_response", &status.to_string(), s))
    }

    fn cancel_grpc_call(&self, token: u32) -> Result<(), HostError> {
        hostcalls::cancel_grpc_call(token)
            .map_err(|s| err("cancel_grpc_call", &token.to_string(), s))
    }

    fn resume_request(&self) -> Result<(), HostError> {
        hostcalls::resume_http_request().map_err(|s| err("resume_http_request", "", s))
    }
}

/// The SDK's code for a rejection status (config validation allows 1 to 16).
fn grpc_code(status: u32) -> Option<GrpcStatusCode> {
    use GrpcStatusCode as G;
    Some(match status {
        1 => G::Cancelled,
        2 => G::Unknown,
        3 => G::InvalidArgument,
        4 => G::DeadlineExceeded,
        5 => G::NotFound,
        6 => G::AlreadyExists,
        7 => G::PermissionDenied,
        8 => G::ResourceExhausted,
        9 => G::FailedPrecondition,
        10 => G::Aborted,
        11 => G::OutOfRange,
        12 => G::Unimplemented,
        13 => G::Internal,
        14 => G::Unavailable,
        15 => G::DataLoss,
        16 => G::Unauthenticated,
        _ => return None,
    })
}

/// Every request header in one call (`proxy_get_header_map_pairs`), read here
/// rather than through the SDK, whose `get_map_bytes` panics on a status other
/// than `Ok` and on a header name that is not UTF-8.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // one ABI import; the SDK's wrapper panics (see the module docs)
mod raw {
    use proxy_wasm::types::{MapType, Status};

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_header_map_pairs(
            map_type: MapType,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> Status;
    }

    /// The serialised request headers, or the status the host answered.
    pub fn request_pairs() -> Result<Vec<u8>, Status> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: the host writes a pointer to `size` bytes it allocated in this
        // module's memory through `proxy_on_memory_allocate` (the SDK's allocator,
        // with capacity `size`), which this Vec then owns, exactly as the SDK does.
        unsafe {
            match proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) {
                Status::Ok if data.is_null() => Ok(Vec::new()),
                Status::Ok => Ok(Vec::from_raw_parts(data, size, size)),
                status => Err(status),
            }
        }
    }
}
