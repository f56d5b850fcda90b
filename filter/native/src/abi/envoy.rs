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

#[cfg(not(test))]
use std::ffi::c_void;

use meshguard_core::host::pairs::HeaderPairs;
use meshguard_core::host::MetricKind;

#[cfg(test)]
use super::mock::{MockConfig, MockScheduler, MockStream};
use super::{
    attribute, callout_init, header_type, log_level, metrics_result, HttpHeader, ModuleBuffer,
};
#[cfg(not(test))]
use super::{ConfigEnvoyPtr, EnvoyBuffer, FilterEnvoyPtr};

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

fn buf(s: &str) -> ModuleBuffer {
    ModuleBuffer::of(s.as_bytes())
}

/// Label values as Envoy buffers, on the stack: a metric write on the request
/// path allocates nothing. At most [`MAX_LABELS`] are passed.
fn label_buffers(values: &[String]) -> ([ModuleBuffer; MAX_LABELS], usize) {
    let mut out = [ModuleBuffer::NULL; MAX_LABELS];
    for (b, v) in out.iter_mut().zip(values) {
        *b = buf(v);
    }
    (out, values.len().min(MAX_LABELS))
}

fn header_views<'a>(headers: &'a [(&'a str, &'a str)]) -> Vec<HttpHeader> {
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
pub(super) unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

#[derive(Debug, Clone)]
enum StreamInner {
    #[cfg(not(test))]
    Envoy(FilterEnvoyPtr),
    #[cfg(test)]
    Mock(std::rc::Rc<MockStream>),
}

/// One HTTP stream of Envoy's: valid from `filter_new` until the stream
/// completes (the module drops its copies then).
#[derive(Debug, Clone)]
pub struct Stream(StreamInner);

impl Stream {
    /// The stream behind Envoy's pointer.
    ///
    /// # Safety
    /// `ptr` is a live stream's pointer, handed over by the hook being run.
    #[cfg(not(test))]
    pub(super) unsafe fn from_envoy(ptr: FilterEnvoyPtr) -> Stream {
        Stream(StreamInner::Envoy(ptr))
    }

    /// A mock stream (unit tests).
    #[cfg(test)]
    pub fn mock(mock: std::rc::Rc<MockStream>) -> Stream {
        Stream(StreamInner::Mock(mock))
    }

    /// A header's value (the first), copied; `None` when absent.
    pub fn header(&self, map: Map, name: &str) -> Option<Vec<u8>> {
        match &self.0 {
            #[cfg(not(test))]
            StreamInner::Envoy(filter) => {
                let mut out = EnvoyBuffer::EMPTY;
                let mut count = 0usize;
                // SAFETY: a live stream; Envoy fills `out` with a view into its
                // map that stays valid until this hook returns or a header is
                // set, and it is copied out before either.
                let found = unsafe {
                    super::envoy_dynamic_module_callback_http_get_header(
                        *filter,
                        map.id(),
                        buf(name),
                        &mut out,
                        0,
                        &mut count,
                    )
                };
                // SAFETY: as above.
                found.then(|| unsafe { out.bytes() }.map(<[u8]>::to_vec))?
            }
            #[cfg(test)]
            StreamInner::Mock(m) => m.header(map, name),
        }
    }

    /// Every header of `map`, copied once; `None` when Envoy refused.
    pub fn headers(&self, map: Map) -> Option<HeaderPairs> {
        match &self.0 {
            #[cfg(not(test))]
            StreamInner::Envoy(filter) => {
                // SAFETY: a live stream.
                let n = unsafe {
                    super::envoy_dynamic_module_callback_http_get_headers_size(*filter, map.id())
                };
                let empty = HttpHeader {
                    key_ptr: std::ptr::null(),
                    key_length: 0,
                    value_ptr: std::ptr::null(),
                    value_length: 0,
                };
                let mut raw = vec![empty; n];
                // SAFETY: `raw` has room for the `n` headers Envoy just counted;
                // the views it fills are copied out before this call returns.
                let ok = unsafe {
                    super::envoy_dynamic_module_callback_http_get_headers(
                        *filter,
                        map.id(),
                        raw.as_mut_ptr(),
                    )
                };
                if !ok {
                    return None;
                }
                // SAFETY: Envoy's views of names and values, valid during this hook.
                let view = |ptr: *const u8, len: usize| unsafe { slice(ptr, len) };
                Some(HeaderPairs::from_pairs(raw.iter().map(|h| {
                    (
                        view(h.key_ptr, h.key_length),
                        view(h.value_ptr, h.value_length),
                    )
                })))
            }
            #[cfg(test)]
            StreamInner::Mock(m) => m.headers(map),
        }
    }

    /// Replaces header `name` (`Some`) or removes it (`None`); false when
    /// Envoy refused.
    pub fn set_header(&self, map: Map, name: &str, value: Option<&[u8]>) -> bool {
        match &self.0 {
            #[cfg(not(test))]
            StreamInner::Envoy(filter) => {
                let value = value.map_or(ModuleBuffer::NULL, ModuleBuffer::of);
                // SAFETY: a live stream; Envoy copies both buffers; a null value
                // removes the header.
                unsafe {
                    super::envoy_dynamic_module_callback_http_set_header(
                        *filter,
                        map.id(),
                        buf(name),
                        value,
                    )
                }
            }
            #[cfg(test)]
            StreamInner::Mock(m) => m.set_header(map, name, value),
        }
    }

    /// Adds a copy of header `name`; false when Envoy refused.
    pub fn add_header(&self, map: Map, name: &str, value: &[u8]) -> bool {
        match &self.0 {
            #[cfg(not(test))]
            // SAFETY: a live stream; Envoy copies both buffers.
            StreamInner::Envoy(filter) => unsafe {
                super::envoy_dynamic_module_callback_http_add_header(
                    *filter,
                    map.id(),
                    buf(name),
                    ModuleBuffer::of(value),
                )
            },
            #[cfg(test)]
            StreamInner::Mock(m) => m.add_header(map, name, value),
        }
    }

    /// Answers the stream locally (`details`: `meshguard`).
    pub fn send_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        match &self.0 {
            #[cfg(not(test))]
            StreamInner::Envoy(filter) => {
                let list = header_views(headers);
                // SAFETY: a live stream; every buffer outlives the call (Envoy copies).
                unsafe {
                    super::envoy_dynamic_module_callback_http_send_response(
                        *filter,
                        status,
                        list.as_ptr(),
                        list.len(),
                        ModuleBuffer::of(body),
                        buf("meshguard"),
                    );
                }
            }
            #[cfg(test)]
            StreamInner::Mock(m) => m.send_response(status, headers, body),
        }
    }

    /// A bytes attribute, copied; `None` when absent.
    pub fn attribute_bytes(&self, id: Attribute) -> Option<Vec<u8>> {
        match &self.0 {
            #[cfg(not(test))]
            StreamInner::Envoy(filter) => {
                let mut out = EnvoyBuffer::EMPTY;
                // SAFETY: a live stream; the view is copied out at once.
                let found = unsafe {
                    super::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                        *filter,
                        id.id(),
                        &mut out,
                    )
                };
                // SAFETY: as above.
                found.then(|| unsafe { out.bytes() }.map(<[u8]>::to_vec))?
            }
            #[cfg(test)]
            StreamInner::Mock(m) => m.attribute_bytes(id),
        }
    }

    /// An integer attribute; `None` when absent.
    pub fn attribute_int(&self, id: Attribute) -> Option<u64> {
        match &self.0 {
            #[cfg(not(test))]
            StreamInner::Envoy(filter) => {
                let mut out = 0u64;
                // SAFETY: a live stream.
                let found = unsafe {
                    super::envoy_dynamic_module_callback_http_filter_get_attribute_int(
                        *filter,
                        id.id(),
                        &mut out,
                    )
                };
                found.then_some(out)
            }
            #[cfg(test)]
            StreamInner::Mock(m) => m.attribute_int(id),
        }
    }

    /// Makes Envoy pick the route again.
    pub fn clear_route_cache(&self) {
        match &self.0 {
            #[cfg(not(test))]
            // SAFETY: a live stream.
            StreamInner::Envoy(filter) => unsafe {
                super::envoy_dynamic_module_callback_http_clear_route_cache(*filter)
            },
            #[cfg(test)]
            StreamInner::Mock(m) => m.note("clear_route_cache"),
        }
    }

    /// Lets a stopped request go on.
    pub fn continue_decoding(&self) {
        match &self.0 {
            #[cfg(not(test))]
            // SAFETY: a live stream.
            StreamInner::Envoy(filter) => unsafe {
                super::envoy_dynamic_module_callback_http_filter_continue_decoding(*filter)
            },
            #[cfg(test)]
            StreamInner::Mock(m) => m.note("continue_decoding"),
        }
    }

    /// Sets filter state `key` to `value` (bytes); false when Envoy refused.
    pub fn set_filter_state(&self, key: &str, value: &[u8]) -> bool {
        match &self.0 {
            #[cfg(not(test))]
            // SAFETY: a live stream; Envoy copies both buffers.
            StreamInner::Envoy(filter) => unsafe {
                super::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                    *filter,
                    buf(key),
                    ModuleBuffer::of(value),
                )
            },
            #[cfg(test)]
            StreamInner::Mock(m) => m.set_filter_state(key, value),
        }
    }

    /// Sends `headers` and `body` to `cluster`; the answer comes to the
    /// stream's `http_callout_done` with the returned id.
    pub fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, CalloutError> {
        match &self.0 {
            #[cfg(not(test))]
            StreamInner::Envoy(filter) => {
                let views = header_views(headers);
                let mut id = 0u64;
                // SAFETY: a live stream; every buffer outlives the call (Envoy copies).
                let result = unsafe {
                    super::envoy_dynamic_module_callback_http_filter_http_callout(
                        *filter,
                        &mut id,
                        buf(cluster),
                        views.as_ptr(),
                        views.len(),
                        ModuleBuffer::of(body),
                        timeout_ms,
                    )
                };
                match result {
                    callout_init::SUCCESS => Ok(id),
                    other => Err(CalloutError::of(other)),
                }
            }
            #[cfg(test)]
            StreamInner::Mock(m) => m.callout(cluster, headers, body, timeout_ms),
        }
    }

    /// Writes metric `id` (a family the configuration defined) of series
    /// `labels` through the stream.
    pub fn metric(
        &self,
        op: MetricOp,
        id: usize,
        labels: &[String],
        value: u64,
    ) -> Result<(), MetricError> {
        let result = match &self.0 {
            #[cfg(not(test))]
            StreamInner::Envoy(filter) => {
                let (values, n) = label_buffers(labels);
                let f = match op {
                    MetricOp::AddCounter => {
                        super::envoy_dynamic_module_callback_http_filter_increment_counter
                    }
                    MetricOp::AddGauge => {
                        super::envoy_dynamic_module_callback_http_filter_increment_gauge
                    }
                    MetricOp::SubGauge => {
                        super::envoy_dynamic_module_callback_http_filter_decrement_gauge
                    }
                    MetricOp::SetGauge => {
                        super::envoy_dynamic_module_callback_http_filter_set_gauge
                    }
                    MetricOp::Record => {
                        super::envoy_dynamic_module_callback_http_filter_record_histogram_value
                    }
                };
                // SAFETY: a live stream, a metric Envoy defined for its
                // configuration, `n` buffers that outlive the call.
                unsafe { f(*filter, id, values.as_ptr(), n, value) }
            }
            #[cfg(test)]
            StreamInner::Mock(m) => m.metric(op, id, labels, value),
        };
        match result {
            metrics_result::SUCCESS => Ok(()),
            other => Err(MetricError(other)),
        }
    }

    /// A scheduler that posts events to this stream's worker
    /// (`on_http_filter_scheduled`); `None` when Envoy gave none.
    pub fn scheduler(&self) -> Option<Scheduler> {
        match &self.0 {
            #[cfg(not(test))]
            StreamInner::Envoy(filter) => {
                // SAFETY: a live stream.
                let handle = unsafe {
                    super::envoy_dynamic_module_callback_http_filter_scheduler_new(*filter)
                };
                (!handle.is_null()).then_some(Scheduler(SchedulerInner::Stream(handle)))
            }
            #[cfg(test)]
            StreamInner::Mock(m) => m.scheduler().map(|s| Scheduler(SchedulerInner::Mock(s))),
        }
    }
}

#[derive(Debug, Clone)]
enum ConfigInner {
    #[cfg(not(test))]
    Envoy(ConfigEnvoyPtr),
    #[cfg(test)]
    Mock(std::sync::Arc<MockConfig>),
}

/// One filter configuration of Envoy's: valid from `config_new` until its
/// `config_destroy` returns; used on Envoy's main thread only.
#[derive(Debug, Clone)]
pub struct Config(ConfigInner);

// SAFETY: the pointer is only used on Envoy's main thread (the module hands
// it from `config_new` to the tick thread's list, which gives it back to the
// main thread's `config_destroy`; the tick thread never calls through it).
unsafe impl Send for Config {}
// SAFETY: as above.
unsafe impl Sync for Config {}

impl Config {
    /// The configuration behind Envoy's pointer.
    ///
    /// # Safety
    /// `ptr` is a live configuration's pointer, handed over by the hook being run.
    #[cfg(not(test))]
    pub(super) unsafe fn from_envoy(ptr: ConfigEnvoyPtr) -> Config {
        Config(ConfigInner::Envoy(ptr))
    }

    /// A mock configuration (unit tests).
    #[cfg(test)]
    pub fn mock(mock: std::sync::Arc<MockConfig>) -> Config {
        Config(ConfigInner::Mock(mock))
    }

    /// Defines metric family `name` of `kind` with `labels` (while the
    /// configuration loads): Envoy's id of it.
    pub fn define(&self, kind: MetricKind, name: &str, labels: &[&str]) -> Result<usize, u32> {
        match &self.0 {
            #[cfg(not(test))]
            ConfigInner::Envoy(config) => {
                let label_bufs: Vec<ModuleBuffer> = labels.iter().map(|l| buf(l)).collect();
                let define = match kind {
                    MetricKind::Counter => {
                        super::envoy_dynamic_module_callback_http_filter_config_define_counter
                    }
                    MetricKind::Gauge => {
                        super::envoy_dynamic_module_callback_http_filter_config_define_gauge
                    }
                    MetricKind::Histogram => {
                        super::envoy_dynamic_module_callback_http_filter_config_define_histogram
                    }
                };
                let mut id = 0usize;
                // SAFETY: a configuration being loaded; the buffers outlive the call.
                let result = unsafe {
                    define(
                        *config,
                        buf(name),
                        label_bufs.as_ptr(),
                        label_bufs.len(),
                        &mut id,
                    )
                };
                if result == metrics_result::SUCCESS {
                    Ok(id)
                } else {
                    Err(result)
                }
            }
            #[cfg(test)]
            ConfigInner::Mock(m) => m.define(kind, name, labels),
        }
    }

    /// Writes metric `id` of series `labels` through the configuration (while
    /// it loads, on its main-thread hooks, or while Envoy destroys it).
    pub fn metric(
        &self,
        op: MetricOp,
        id: usize,
        labels: &[String],
        value: u64,
    ) -> Result<(), MetricError> {
        let result = match &self.0 {
            #[cfg(not(test))]
            ConfigInner::Envoy(config) => {
                let (values, n) = label_buffers(labels);
                let f = match op {
                    MetricOp::AddCounter => {
                        super::envoy_dynamic_module_callback_http_filter_config_increment_counter
                    }
                    MetricOp::AddGauge => {
                        super::envoy_dynamic_module_callback_http_filter_config_increment_gauge
                    }
                    MetricOp::SubGauge => {
                        super::envoy_dynamic_module_callback_http_filter_config_decrement_gauge
                    }
                    MetricOp::SetGauge => {
                        super::envoy_dynamic_module_callback_http_filter_config_set_gauge
                    }
                    MetricOp::Record => {
                        super::envoy_dynamic_module_callback_http_filter_config_record_histogram_value
                    }
                };
                // SAFETY: the live configuration on its main thread, a metric
                // Envoy defined for it, `n` buffers that outlive the call.
                // Envoy resolves the labels in a pool of this call alone.
                unsafe { f(*config, id, values.as_ptr(), n, value) }
            }
            #[cfg(test)]
            ConfigInner::Mock(m) => m.metric(op, id, labels, value),
        };
        match result {
            metrics_result::SUCCESS => Ok(()),
            other => Err(MetricError(other)),
        }
    }

    /// The configuration's own callout (on the main thread); the answer comes
    /// to `config_http_callout_done` with the returned id.
    pub fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, CalloutError> {
        match &self.0 {
            #[cfg(not(test))]
            ConfigInner::Envoy(config) => {
                let views = header_views(headers);
                let mut id = 0u64;
                // SAFETY: the configuration on its main thread; every buffer
                // outlives the call (Envoy copies).
                let result = unsafe {
                    super::envoy_dynamic_module_callback_http_filter_config_http_callout(
                        *config,
                        &mut id,
                        buf(cluster),
                        views.as_ptr(),
                        views.len(),
                        ModuleBuffer::of(body),
                        timeout_ms,
                    )
                };
                match result {
                    callout_init::SUCCESS => Ok(id),
                    other => Err(CalloutError::of(other)),
                }
            }
            #[cfg(test)]
            ConfigInner::Mock(m) => m.callout(cluster, headers, body, timeout_ms),
        }
    }

    /// A scheduler that posts events to Envoy's main thread
    /// (`on_http_filter_config_scheduled`); `None` when Envoy gave none.
    pub fn scheduler(&self) -> Option<Scheduler> {
        match &self.0 {
            #[cfg(not(test))]
            ConfigInner::Envoy(config) => {
                // SAFETY: a configuration being loaded.
                let handle = unsafe {
                    super::envoy_dynamic_module_callback_http_filter_config_scheduler_new(*config)
                };
                (!handle.is_null()).then_some(Scheduler(SchedulerInner::Config(handle)))
            }
            #[cfg(test)]
            ConfigInner::Mock(m) => m.scheduler().map(|s| Scheduler(SchedulerInner::Mock(s))),
        }
    }
}

#[derive(Debug)]
enum SchedulerInner {
    #[cfg(not(test))]
    Stream(*mut c_void),
    #[cfg(not(test))]
    Config(*mut c_void),
    #[cfg(test)]
    Mock(std::sync::Arc<MockScheduler>),
}

/// Posts events to one of Envoy's threads, from any thread; deleted when
/// dropped (the module drops it before what it posts to is gone).
#[derive(Debug)]
pub struct Scheduler(SchedulerInner);

// SAFETY: Envoy's scheduler commit may be called from any thread (abi.h);
// the module uses a scheduler under one lock at a time and deletes it once.
unsafe impl Send for Scheduler {}

impl Scheduler {
    /// Posts `event`.
    pub fn commit(&self, event: u64) {
        match &self.0 {
            #[cfg(not(test))]
            // SAFETY: a handle Envoy created and this owner has not deleted.
            SchedulerInner::Stream(h) => unsafe {
                super::envoy_dynamic_module_callback_http_filter_scheduler_commit(*h, event)
            },
            #[cfg(not(test))]
            // SAFETY: as above.
            SchedulerInner::Config(h) => unsafe {
                super::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(*h, event)
            },
            #[cfg(test)]
            SchedulerInner::Mock(m) => m.commit(event),
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        match &self.0 {
            #[cfg(not(test))]
            // SAFETY: created by Envoy for this owner, deleted once, here.
            SchedulerInner::Stream(h) => unsafe {
                super::envoy_dynamic_module_callback_http_filter_scheduler_delete(*h)
            },
            #[cfg(not(test))]
            // SAFETY: as above.
            SchedulerInner::Config(h) => unsafe {
                super::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(*h)
            },
            #[cfg(test)]
            SchedulerInner::Mock(m) => m.delete(),
        }
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
