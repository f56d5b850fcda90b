//! Envoy's callbacks behind safe handles: [`Stream`] (one HTTP stream, during
//! its hooks and until it completes), [`Config`] (one filter configuration,
//! while it loads and on its main-thread hooks) and [`Scheduler`] (posting an
//! event to a stream's worker or to the main thread, from any thread).
//!
//! Only `abi::exports` makes a handle from Envoy's pointer, for the hook that
//! handed it over, so every call here runs on a pointer Envoy says is live.
//! Views into Envoy's memory (a header's value) are copied out before a call
//! returns. In unit tests a handle can be a mock instead ([`super::mock`]):
//! the module's hooks then run without Envoy.

use meshguard_core::host::MetricKind;

mod config;
mod stream;

use config::SchedulerInner;
pub use config::{Config, Scheduler};
pub use stream::Stream;

use super::{attribute, callout_init, header_type, log_level, HttpHeader, ModuleBuffer};

/// Which of a stream's header maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    /// The request headers.
    Request,
    /// The response headers.
    Response,
    /// The response trailers.
    ResponseTrailers,
}

impl Map {
    fn id(self) -> u32 {
        match self {
            Map::Request => header_type::REQUEST_HEADER,
            Map::Response => header_type::RESPONSE_HEADER,
            Map::ResponseTrailers => header_type::RESPONSE_TRAILER,
        }
    }
}

/// A stream attribute this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    /// The response code (an integer).
    ResponseCode,
    /// Envoy's response flags (an integer).
    ResponseFlags,
    /// The downstream peer, `ip:port` (bytes).
    SourceAddress,
}

impl Attribute {
    fn id(self) -> u32 {
        match self {
            Attribute::ResponseCode => attribute::RESPONSE_CODE,
            Attribute::ResponseFlags => attribute::RESPONSE_FLAGS,
            Attribute::SourceAddress => attribute::SOURCE_ADDRESS,
        }
    }
}

/// A metric write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricOp {
    /// Adds to a counter.
    AddCounter,
    /// Adds to a gauge.
    AddGauge,
    /// Subtracts from a gauge.
    SubGauge,
    /// Sets a gauge.
    SetGauge,
    /// Records a histogram value.
    Record,
}

impl MetricOp {
    /// Whether this write applies to a metric of `kind`.
    pub fn fits(self, kind: MetricKind) -> bool {
        matches!(
            (self, kind),
            (MetricOp::AddCounter, MetricKind::Counter)
                | (
                    MetricOp::AddGauge | MetricOp::SubGauge | MetricOp::SetGauge,
                    MetricKind::Gauge
                )
                | (MetricOp::Record, MetricKind::Histogram)
        )
    }
}

/// Why a metric call failed: Envoy's `metrics_result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricError(pub u32);

/// Why Envoy did not start a callout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalloutError {
    /// A required header (`:method`, `:path`, `host`) is missing.
    MissingHeaders,
    /// No such cluster.
    ClusterNotFound,
    /// The callout id is already in use.
    DuplicateId,
    /// Envoy could not create the request.
    CannotCreate,
    /// Any other result.
    Unknown(u32),
}

impl CalloutError {
    /// The reason, for a log line.
    pub fn reason(self) -> &'static str {
        match self {
            CalloutError::MissingHeaders => "missing required headers",
            CalloutError::ClusterNotFound => "cluster not found",
            CalloutError::DuplicateId => "duplicate callout id",
            CalloutError::CannotCreate => "cannot create request",
            CalloutError::Unknown(_) => "unknown result",
        }
    }

    fn of(result: u32) -> CalloutError {
        match result {
            callout_init::MISSING_REQUIRED_HEADERS => CalloutError::MissingHeaders,
            callout_init::CLUSTER_NOT_FOUND => CalloutError::ClusterNotFound,
            callout_init::DUPLICATE_CALLOUT_ID => CalloutError::DuplicateId,
            callout_init::CANNOT_CREATE_REQUEST => CalloutError::CannotCreate,
            other => CalloutError::Unknown(other),
        }
    }
}

/// A callout's answer, copied out of Envoy's memory: whether it completed,
/// its headers and its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The callout completed (false: reset, or too large).
    pub ok: bool,
    /// Response headers.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The body, its chunks joined.
    pub body: Vec<u8>,
}

/// The most labels a meshguard metric has room for (its series have at most 4).
pub const MAX_LABELS: usize = 8;

pub(super) fn buf(s: &str) -> ModuleBuffer {
    ModuleBuffer::of(s.as_bytes())
}

/// Label values as Envoy buffers, on the stack: a metric write on the request
/// path allocates nothing. At most [`MAX_LABELS`] are passed.
pub(super) fn label_buffers(values: &[String]) -> ([ModuleBuffer; MAX_LABELS], usize) {
    let mut out = [ModuleBuffer::NULL; MAX_LABELS];
    for (b, v) in out.iter_mut().zip(values) {
        *b = buf(v);
    }
    (out, values.len().min(MAX_LABELS))
}

pub(super) fn header_views<'a>(headers: &'a [(&'a str, &'a str)]) -> Vec<HttpHeader> {
    headers
        .iter()
        .map(|(k, v)| HttpHeader {
            key_ptr: k.as_ptr(),
            key_length: k.len(),
            value_ptr: v.as_ptr(),
            value_length: v.len(),
        })
        .collect()
}

/// `len` items at `ptr`, or none when `ptr` is null.
///
/// # Safety
/// `ptr` is null or valid for `len` items while the slice lives.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// Log severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
}

/// Writes one line to Envoy's log (`dynamic_modules` logger), when that level
/// is enabled. Without Envoy (unit tests) the line goes nowhere.
pub fn log(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Error => log_level::ERROR,
        LogLevel::Warn => log_level::WARN,
        LogLevel::Info => log_level::INFO,
        LogLevel::Debug => log_level::DEBUG,
    };
    #[cfg(not(test))]
    // SAFETY: plain values and buffers that outlive the call.
    unsafe {
        if super::envoy_dynamic_module_callback_log_enabled(level) {
            super::envoy_dynamic_module_callback_log_v2(level, buf(message), buf("meshguard"), 0);
        }
    }
    #[cfg(test)]
    super::mock::log(level, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_buffers_point_at_each_value_in_order_and_count_them() {
        let values = vec!["web".to_owned(), "canary".to_owned(), "5xx".to_owned()];
        let (bufs, n) = label_buffers(&values);
        assert_eq!(n, 3);
        for (b, v) in bufs.iter().zip(&values) {
            assert_eq!((b.ptr, b.length), (v.as_ptr(), v.len()));
        }
        assert!(bufs[n..].iter().all(|b| b.ptr.is_null() && b.length == 0));
        assert_eq!(label_buffers(&[]).1, 0);
    }

    #[test]
    fn metric_ops_fit_only_their_kind() {
        use MetricKind::*;
        assert!(MetricOp::AddCounter.fits(Counter));
        assert!(!MetricOp::AddCounter.fits(Gauge));
        assert!(MetricOp::SubGauge.fits(Gauge) && MetricOp::SetGauge.fits(Gauge));
        assert!(MetricOp::Record.fits(Histogram) && !MetricOp::Record.fits(Gauge));
    }

    #[test]
    fn callout_results_name_their_reason() {
        assert_eq!(CalloutError::of(2).reason(), "cluster not found");
        assert_eq!(CalloutError::of(9), CalloutError::Unknown(9));
    }
}
