//! The [`Host`] adapter over `proxy_wasm::hostcalls`.
//!
//! Only the `_bytes` map calls are used: the string variants panic on a
//! non-UTF-8 header value, which would trap the VM. Every `Status` becomes a
//! [`HostError`]; the glue decides the fallback.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, GrpcStatusCode, LogLevel, MapType, MetricType, Status};

use super::pairs::HeaderPairs;
use super::{Host, HostError, Level, MetricKind};

/// The real proxy, reached through the Proxy-Wasm ABI.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyHost;

fn err(call: &str, arg: &str, status: Status) -> HostError {
    HostError {
        call: format!("{call}({arg})"),
        status: format!("{status:?}"),
    }
}

impl Host for ProxyHost {
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .map_err(|s| err("get_buffer", "plugin_configuration", s))
    }

    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .map_err(|s| err("get_map_value_bytes", name, s))
    }

    #[cfg(target_arch = "wasm32")]
    fn request_headers(&self) -> Result<HeaderPairs, HostError> {
        let buf = super::pairs::raw::request_pairs()
            .map_err(|s| err("get_header_map_pairs", "request", s))?;
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

    fn clear_route_cache(&self) -> Result<(), HostError> {
        hostcalls::call_foreign_function("clear_route_cache", None)
            .map(|_| ())
            .map_err(|s| err("call_foreign_function", "clear_route_cache", s))
    }

    fn response_status(&self) -> Result<Option<u64>, HostError> {
        let value = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
            .map_err(|s| err("get_map_value_bytes(response)", ":status", s))?;
        Ok(value.as_deref().and_then(super::parse_status))
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

    fn random_seed(&self) -> Result<u64, HostError> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| HostError {
            call: "random_get".into(),
            status: e.to_string(),
        })?;
        Ok(u64::from_le_bytes(b))
    }

    fn property_u64(&self, path: &[&str]) -> Result<Option<u64>, HostError> {
        let bytes = hostcalls::get_property(path.to_vec())
            .map_err(|s| err("get_property", &path.join("."), s))?;
        Ok(bytes
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_le_bytes))
    }

    fn now_ns(&self) -> Result<u64, HostError> {
        let t = hostcalls::get_current_time().map_err(|s| err("get_current_time", "", s))?;
        Ok(t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }

    fn plugin_name(&self) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_property(vec!["plugin_name"])
            .map_err(|s| err("get_property", "plugin_name", s))
    }

    fn shared_get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        hostcalls::get_shared_data(key).map_err(|s| err("get_shared_data", key, s))
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, HostError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(true),
            Err(Status::CasMismatch) => Ok(false),
            Err(s) => Err(err("set_shared_data", key, s)),
        }
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

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let t = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        hostcalls::define_metric(t, name).map_err(|s| err("define_metric", name, s))
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError> {
        hostcalls::increment_metric(id, delta)
            .map_err(|s| err("increment_metric", &id.to_string(), s))
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        hostcalls::record_metric(id, value).map_err(|s| err("record_metric", &id.to_string(), s))
    }

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

    fn cancel_grpc_call(&self, token: u32) -> Result<(), HostError> {
        hostcalls::cancel_grpc_call(token)
            .map_err(|s| err("cancel_grpc_call", &token.to_string(), s))
    }

    fn resume_request(&self) -> Result<(), HostError> {
        hostcalls::resume_http_request().map_err(|s| err("resume_http_request", "", s))
    }

    fn set_tick_period(&self, period_ms: u64) -> Result<(), HostError> {
        hostcalls::set_tick_period(std::time::Duration::from_millis(period_ms))
            .map_err(|s| err("set_tick_period", &period_ms.to_string(), s))
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

    fn node_name(&self) -> Option<String> {
        // Envoy's `xds.node` attribute (the Wasm-only `node` reads nothing in 1.40).
        let id = hostcalls::get_property(vec!["xds", "node", "id"]).ok()??;
        Some(String::from_utf8_lossy(&id).into_owned()).filter(|s| !s.is_empty())
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
