//! One filter configuration of Envoy's ([`Config`]) and the schedulers that
//! post to Envoy's threads ([`Scheduler`]), behind safe handles.

#[cfg(not(test))]
use std::ffi::c_void;

use meshguard_core::host::MetricKind;

use super::super::metrics_result;
#[cfg(test)]
use super::super::mock::{MockConfig, MockScheduler};
#[cfg(not(test))]
use super::super::ConfigEnvoyPtr;
#[cfg(not(test))]
use super::super::{callout_init, ModuleBuffer};
#[cfg(not(test))]
use super::{buf, header_views, label_buffers};
use super::{CalloutError, MetricError, MetricOp};

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
    pub(in crate::abi) unsafe fn from_envoy(ptr: ConfigEnvoyPtr) -> Config {
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
                        super::super::envoy_dynamic_module_callback_http_filter_config_define_counter
                    }
                    MetricKind::Gauge => {
                        super::super::envoy_dynamic_module_callback_http_filter_config_define_gauge
                    }
                    MetricKind::Histogram => {
                        super::super::envoy_dynamic_module_callback_http_filter_config_define_histogram
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
                        super::super::envoy_dynamic_module_callback_http_filter_config_increment_counter
                    }
                    MetricOp::AddGauge => {
                        super::super::envoy_dynamic_module_callback_http_filter_config_increment_gauge
                    }
                    MetricOp::SubGauge => {
                        super::super::envoy_dynamic_module_callback_http_filter_config_decrement_gauge
                    }
                    MetricOp::SetGauge => {
                        super::super::envoy_dynamic_module_callback_http_filter_config_set_gauge
                    }
                    MetricOp::Record => {
                        super::super::envoy_dynamic_module_callback_http_filter_config_record_histogram_value
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
                    super::super::envoy_dynamic_module_callback_http_filter_config_http_callout(
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
                    super::super::envoy_dynamic_module_callback_http_filter_config_scheduler_new(
                        *config,
                    )
                };
                (!handle.is_null()).then_some(Scheduler(SchedulerInner::Config(handle)))
            }
            #[cfg(test)]
            ConfigInner::Mock(m) => m.scheduler().map(|s| Scheduler(SchedulerInner::Mock(s))),
        }
    }
}

#[derive(Debug)]
pub(super) enum SchedulerInner {
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
pub struct Scheduler(pub(super) SchedulerInner);

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
                super::super::envoy_dynamic_module_callback_http_filter_scheduler_commit(*h, event)
            },
            #[cfg(not(test))]
            // SAFETY: as above.
            SchedulerInner::Config(h) => unsafe {
                super::super::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                    *h, event,
                )
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
                super::super::envoy_dynamic_module_callback_http_filter_scheduler_delete(*h)
            },
            #[cfg(not(test))]
            // SAFETY: as above.
            SchedulerInner::Config(h) => unsafe {
                super::super::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(*h)
            },
            #[cfg(test)]
            SchedulerInner::Mock(m) => m.delete(),
        }
    }
}
