//! One HTTP stream of Envoy's behind a safe handle ([`Stream`]).

use meshguard_core::host::pairs::HeaderPairs;

use super::super::metrics_result;
#[cfg(test)]
use super::super::mock::MockStream;
#[cfg(not(test))]
use super::super::{callout_init, HttpHeader, ModuleBuffer};
#[cfg(not(test))]
use super::super::{EnvoyBuffer, FilterEnvoyPtr};
#[cfg(not(test))]
use super::{buf, header_views, label_buffers, slice};
use super::{Attribute, CalloutError, Map, MetricError, MetricOp, Scheduler, SchedulerInner};

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
    pub(in crate::abi) unsafe fn from_envoy(ptr: FilterEnvoyPtr) -> Stream {
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
                    super::super::envoy_dynamic_module_callback_http_get_header(
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
                    super::super::envoy_dynamic_module_callback_http_get_headers_size(
                        *filter,
                        map.id(),
                    )
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
                    super::super::envoy_dynamic_module_callback_http_get_headers(
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
                    super::super::envoy_dynamic_module_callback_http_set_header(
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
                super::super::envoy_dynamic_module_callback_http_add_header(
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
                    super::super::envoy_dynamic_module_callback_http_send_response(
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
                    super::super::envoy_dynamic_module_callback_http_filter_get_attribute_string(
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
                    super::super::envoy_dynamic_module_callback_http_filter_get_attribute_int(
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
                super::super::envoy_dynamic_module_callback_http_clear_route_cache(*filter)
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
                super::super::envoy_dynamic_module_callback_http_filter_continue_decoding(*filter)
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
                super::super::envoy_dynamic_module_callback_http_set_filter_state_bytes(
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
                    super::super::envoy_dynamic_module_callback_http_filter_http_callout(
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
                        super::super::envoy_dynamic_module_callback_http_filter_increment_counter
                    }
                    MetricOp::AddGauge => {
                        super::super::envoy_dynamic_module_callback_http_filter_increment_gauge
                    }
                    MetricOp::SubGauge => {
                        super::super::envoy_dynamic_module_callback_http_filter_decrement_gauge
                    }
                    MetricOp::SetGauge => {
                        super::super::envoy_dynamic_module_callback_http_filter_set_gauge
                    }
                    MetricOp::Record => {
                        super::super::envoy_dynamic_module_callback_http_filter_record_histogram_value
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
                    super::super::envoy_dynamic_module_callback_http_filter_scheduler_new(*filter)
                };
                (!handle.is_null()).then_some(Scheduler(SchedulerInner::Stream(handle)))
            }
            #[cfg(test)]
            StreamInner::Mock(m) => m.scheduler().map(|s| Scheduler(SchedulerInner::Mock(s))),
        }
    }
}
