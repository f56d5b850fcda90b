//! The glue's [`Host`] over Envoy's dynamic-module callbacks.
//!
//! One `NativeHost` lives for one hook call: it carries the stream's Envoy
//! pointer (null while a configuration loads) and the configuration's shared
//! part. Reads copy out of Envoy's header map (its views are valid only until
//! the hook returns or a header is set); shared data is the process-wide
//! [`store`](crate::store); metrics are real labelled Envoy metrics defined
//! while the configuration loads (Envoy freezes definitions afterwards). A
//! stream's counts and histogram values wait in the configuration for Envoy's
//! main thread to write them (`ticker.rs`).

#![allow(unsafe_code)] // every call below crosses into Envoy

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use meshguard::glue::worker::TICK_MS;

use meshguard::host::pairs::HeaderPairs;
use meshguard::host::{parse_status, Host, HostError, Level, MetricKind};

use crate::abi::{self, callout_init, header_type, EnvoyBuffer, HttpHeader, ModuleBuffer};
use crate::grpc;
use crate::names;
use crate::ticker;

/// A metric as Envoy knows it: its kind, Envoy's id and this series' label values.
#[derive(Debug)]
pub struct Metric {
    kind: MetricKind,
    id: usize,
    values: Vec<String>,
}

/// The metrics a configuration defined, by the glue's name.
#[derive(Debug, Default)]
pub struct Metrics {
    by_name: HashMap<String, u32>,
    list: Vec<Metric>,
    /// Envoy's id per `(kind, family, label names)`: one Envoy metric per family.
    families: HashMap<(u8, String, Vec<String>), usize>,
    /// Batched counts not yet written, per metric, summed over every worker
    /// (empty: this configuration keeps none, and workers batch their own).
    pending: Vec<AtomicI64>,
    /// Histogram values not yet recorded, `(metric, value)`, in shards picked
    /// by the recording thread (so workers seldom share one lock); empty like
    /// `pending`.
    held: Vec<Mutex<Vec<(u32, u64)>>>,
    /// Some count or value waits in `pending` or `held` (see `ticker.rs`).
    dirty: AtomicBool,
}

/// Shards of held histogram values.
const HELD_SHARDS: usize = 8;

/// The most values one shard holds between two flushes (50 ms): past it a
/// value is recorded at once, as without a main-thread scheduler, so memory
/// stays bounded however fast requests come (16 bytes a value, 2 MiB at most).
const MAX_HELD: usize = 16 * 1024;

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// This thread's shard of held values.
    static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % HELD_SHARDS;
}

impl Metrics {
    /// The loaded metrics, with room for every metric's batched count: the
    /// configuration's scheduler on Envoy's main thread writes them.
    pub fn keeping_counts(mut self) -> Self {
        self.pending = self.list.iter().map(|_| AtomicI64::new(0)).collect();
        self.held = (0..HELD_SHARDS).map(|_| Mutex::new(Vec::new())).collect();
        self
    }

    /// Whether this configuration keeps the batched counts (else its workers do).
    pub fn keeps_counts(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Adds `delta` to counter or gauge `id`'s batched count: `None` when this
    /// configuration keeps no counts or `id` is not one, else whether it was the
    /// first count since the last flush (the tick thread must then run).
    fn add(&self, id: u32, delta: i64) -> Option<bool> {
        let at = id as usize;
        if self.list.get(at)?.kind == MetricKind::Histogram {
            return None;
        }
        self.pending.get(at)?.fetch_add(delta, Ordering::Relaxed);
        Some(self.mark())
    }

    /// Holds histogram `id`'s `value` for the next flush: `None` when this
    /// configuration keeps no counts or the thread's shard is full (the caller
    /// records it at once), else whether it was the first count or value since
    /// the last flush (the tick thread must then run).
    fn hold(&self, id: u32, value: u64) -> Option<bool> {
        let shard = self.held.get(SLOT.with(|s| *s))?;
        let mut held = shard.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() >= MAX_HELD {
            return None;
        }
        held.push((id, value));
        drop(held);
        Some(self.mark())
    }

    /// Marks that some count or value waits: whether it was the first since
    /// the mark was last taken.
    fn mark(&self) -> bool {
        !self.dirty.load(Ordering::Relaxed) && !self.dirty.swap(true, Ordering::AcqRel)
    }

    /// Takes the mark that some count waits.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// Writes every batched count to Envoy through the configuration: on
    /// Envoy's main thread (`on_http_filter_config_scheduled`), or while Envoy
    /// destroys the configuration. Envoy resolves the labels of a
    /// configuration-level update in a pool of that call alone, so this
    /// allocates nothing that outlives it.
    ///
    /// # Safety
    /// `config` is Envoy's live configuration these metrics were defined for.
    pub unsafe fn flush(&self, config: abi::ConfigEnvoyPtr) {
        for (m, slot) in self.list.iter().zip(&self.pending) {
            let delta = slot.swap(0, Ordering::AcqRel);
            let op = match (m.kind, delta) {
                (_, 0) => continue,
                (MetricKind::Counter, 1..) => Op::AddCounter,
                (MetricKind::Gauge, 1..) => Op::AddGauge,
                (MetricKind::Gauge, _) => Op::SubGauge,
                _ => continue,
            };
            // SAFETY: the caller's configuration.
            unsafe { write(config, op, m, delta.unsigned_abs()) };
        }
        for shard in &self.held {
            let mut batch = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            for &(id, value) in &batch {
                if let Some(m) = self.list.get(id as usize) {
                    // SAFETY: the caller's configuration.
                    unsafe { write(config, Op::Record, m, value) };
                }
            }
            // The buffer goes back for the next values, unless the workers
            // began a new one meanwhile.
            batch.clear();
            let mut held = shard.lock().unwrap_or_else(|p| p.into_inner());
            if held.is_empty() {
                *held = batch;
            }
        }
    }
}

/// Applies `op` with `value` to `m`'s series through the configuration.
///
/// # Safety
/// `config` is Envoy's live configuration `m` was defined for.
unsafe fn write(config: abi::ConfigEnvoyPtr, op: Op, m: &Metric, value: u64) {
    let (values, n) = label_values(&m.values);
    // SAFETY: the caller's configuration, a metric Envoy defined for it, `n`
    // buffers that outlive the call.
    let _ = unsafe { op.on_config()(config, m.id, values.as_ptr(), n, value) };
}

/// What every worker shares of one Envoy filter configuration.
#[derive(Debug)]
pub struct Shared {
    /// Distinguishes configurations (a new one may reuse a freed address).
    pub generation: u64,
    /// The filter's name (`filter_name`), the plugin name of shared-data keys.
    pub name: String,
    /// The configuration's JSON bytes.
    pub config: Vec<u8>,
    /// The metrics, fixed once the configuration has loaded.
    pub metrics: Metrics,
    /// Set when Envoy destroyed the configuration: workers drop their copy.
    pub destroyed: AtomicBool,
}

/// Where this host is.
#[derive(Debug, Clone, Copy)]
pub enum Phase<'a> {
    /// Loading a configuration (main thread): metric definitions go to Envoy.
    Loading {
        /// Envoy's configuration pointer.
        config: abi::ConfigEnvoyPtr,
        /// The metrics being defined.
        metrics: &'a RefCell<Metrics>,
    },
    /// A stream's hook (its worker thread).
    Stream {
        /// Envoy's stream pointer.
        filter: abi::FilterEnvoyPtr,
        /// The loaded metrics.
        metrics: &'a Metrics,
    },
    /// A loaded configuration's own hook on Envoy's main thread (the fleet
    /// sync and its answer): no stream; metrics and callouts through the
    /// configuration.
    Main {
        /// Envoy's configuration pointer.
        config: abi::ConfigEnvoyPtr,
        /// The loaded metrics.
        metrics: &'a Metrics,
    },
}

/// The host of one hook call.
#[derive(Debug)]
pub struct NativeHost<'a> {
    /// Where this call is.
    pub phase: Phase<'a>,
    /// The configuration bytes.
    pub config: &'a [u8],
    /// The filter's name.
    pub name: &'a str,
    /// The rate limit service's answer being delivered (`http_callout_done`):
    /// the gRPC message, unframed.
    pub answer: Option<&'a [u8]>,
}

fn err(call: &str, arg: &str, status: &str) -> HostError {
    HostError {
        call: format!("{call}({arg})"),
        status: status.to_owned(),
    }
}

fn buf(s: &str) -> ModuleBuffer {
    ModuleBuffer::of(s.as_bytes())
}

/// The most labels a meshguard metric has room for (its names have at most 4).
const MAX_LABELS: usize = 8;

/// A series' label values as Envoy buffers, on the stack: a metric update on
/// the request path allocates nothing. `values` has at most [`MAX_LABELS`]
/// entries (`define_metric` refuses more).
fn label_values(values: &[String]) -> ([ModuleBuffer; MAX_LABELS], usize) {
    let mut out = [ModuleBuffer::NULL; MAX_LABELS];
    for (b, v) in out.iter_mut().zip(values) {
        *b = buf(v);
    }
    (out, values.len().min(MAX_LABELS))
}

impl NativeHost<'_> {
    fn filter(&self, call: &str) -> Result<abi::FilterEnvoyPtr, HostError> {
        match self.phase {
            Phase::Stream { filter, .. } if !filter.is_null() => Ok(filter),
            _ => Err(err(call, "", "no stream")),
        }
    }

    fn header(&self, kind: u32, name: &str, call: &str) -> Result<Option<Vec<u8>>, HostError> {
        let filter = self.filter(call)?;
        let mut out = EnvoyBuffer::EMPTY;
        let mut count = 0usize;
        // SAFETY: `filter` is the live stream of this hook; Envoy fills `out`
        // with a view into its map that stays valid until this hook returns
        // or a header is set, and it is copied out before either.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                filter,
                kind,
                buf(name),
                &mut out,
                0,
                &mut count,
            )
        };
        if !found {
            return Ok(None);
        }
        // SAFETY: as above.
        Ok(unsafe { out.bytes() }.map(<[u8]>::to_vec))
    }

    /// Applies `op` to series `id`: through the stream while a stream runs,
    /// through the configuration while it loads (a rollout's gauges are set
    /// before any stream arrives, as each Wasm VM sets them when it configures).
    fn update(&self, id: u32, op: Op, value: u64) -> Result<(), HostError> {
        let call = op.name();
        let missing = || err(call, &id.to_string(), "no such metric");
        let result = match self.phase {
            Phase::Stream { filter, metrics } => {
                let m = metrics.list.get(id as usize).ok_or_else(missing)?;
                op.check(m.kind)
                    .ok_or_else(|| err(call, &id.to_string(), "wrong kind"))?;
                if let (Op::Record, Some(first)) = (op, metrics.hold(id, value)) {
                    if first {
                        ticker::wake(Duration::from_millis(TICK_MS));
                    }
                    return Ok(());
                }
                let (values, n) = label_values(&m.values);
                let f = op.on_stream();
                // SAFETY: a live stream, a metric Envoy defined for this
                // configuration, `n` buffers that outlive the call.
                unsafe { f(filter, m.id, values.as_ptr(), n, value) }
            }
            Phase::Loading { config, metrics } => {
                let metrics = metrics.borrow();
                on_config(config, &metrics, id, op, value)?
            }
            Phase::Main { config, metrics } => on_config(config, metrics, id, op, value)?,
        };
        if result == abi::metrics_result::SUCCESS {
            Ok(())
        } else {
            Err(err(
                call,
                &id.to_string(),
                &format!("metrics result {result}"),
            ))
        }
    }

    fn kind(&self, id: u32) -> Option<MetricKind> {
        match self.phase {
            Phase::Stream { metrics, .. } | Phase::Main { metrics, .. } => {
                metrics.list.get(id as usize).map(|m| m.kind)
            }
            Phase::Loading { metrics, .. } => {
                metrics.borrow().list.get(id as usize).map(|m| m.kind)
            }
        }
    }
}

/// Applies `op` to series `id` through the configuration `config` (while it
/// loads, or on Envoy's main thread afterwards).
fn on_config(
    config: abi::ConfigEnvoyPtr,
    metrics: &Metrics,
    id: u32,
    op: Op,
    value: u64,
) -> Result<u32, HostError> {
    let call = op.name();
    let m = metrics
        .list
        .get(id as usize)
        .ok_or_else(|| err(call, &id.to_string(), "no such metric"))?;
    op.check(m.kind)
        .ok_or_else(|| err(call, &id.to_string(), "wrong kind"))?;
    let (values, n) = label_values(&m.values);
    let f = op.on_config();
    // SAFETY: Envoy's configuration pointer, on its main thread (during
    // `config_new` or one of the configuration's own hooks).
    Ok(unsafe { f(config, m.id, values.as_ptr(), n, value) })
}

/// A metric update.
#[derive(Debug, Clone, Copy)]
enum Op {
    AddCounter,
    AddGauge,
    SubGauge,
    SetGauge,
    Record,
}

type StreamUpdate =
    unsafe extern "C" fn(abi::FilterEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::AddCounter => "increment_counter",
            Op::AddGauge => "increment_gauge",
            Op::SubGauge => "decrement_gauge",
            Op::SetGauge => "set_gauge",
            Op::Record => "record_histogram_value",
        }
    }

    fn check(self, kind: MetricKind) -> Option<()> {
        let want = match self {
            Op::AddCounter => MetricKind::Counter,
            Op::AddGauge | Op::SubGauge | Op::SetGauge => MetricKind::Gauge,
            Op::Record => MetricKind::Histogram,
        };
        (kind == want).then_some(())
    }

    fn on_stream(self) -> StreamUpdate {
        match self {
            Op::AddCounter => abi::envoy_dynamic_module_callback_http_filter_increment_counter,
            Op::AddGauge => abi::envoy_dynamic_module_callback_http_filter_increment_gauge,
            Op::SubGauge => abi::envoy_dynamic_module_callback_http_filter_decrement_gauge,
            Op::SetGauge => abi::envoy_dynamic_module_callback_http_filter_set_gauge,
            Op::Record => abi::envoy_dynamic_module_callback_http_filter_record_histogram_value,
        }
    }

    fn on_config(self) -> Touch {
        match self {
            Op::AddCounter => {
                abi::envoy_dynamic_module_callback_http_filter_config_increment_counter
            }
            Op::AddGauge => abi::envoy_dynamic_module_callback_http_filter_config_increment_gauge,
            Op::SubGauge => abi::envoy_dynamic_module_callback_http_filter_config_decrement_gauge,
            Op::SetGauge => abi::envoy_dynamic_module_callback_http_filter_config_set_gauge,
            Op::Record => {
                abi::envoy_dynamic_module_callback_http_filter_config_record_histogram_value
            }
        }
    }
}

impl Host for NativeHost<'_> {
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError> {
        Ok((!self.config.is_empty()).then(|| self.config.to_vec()))
    }

    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.header(header_type::REQUEST_HEADER, name, "get_header")
    }

    fn request_headers(&self) -> Result<HeaderPairs, HostError> {
        let filter = self.filter("get_headers")?;
        // SAFETY: a live stream.
        let n = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers_size(
                filter,
                header_type::REQUEST_HEADER,
            )
        };
        let empty = HttpHeader {
            key_ptr: std::ptr::null(),
            key_length: 0,
            value_ptr: std::ptr::null(),
            value_length: 0,
        };
        let mut raw = vec![empty; n];
        // SAFETY: `raw` has room for the `n` headers Envoy just counted; the
        // views it fills are copied out before this hook returns.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers(
                filter,
                header_type::REQUEST_HEADER,
                raw.as_mut_ptr(),
            )
        };
        if !ok {
            return Err(err("get_headers", "request", "failed"));
        }
        let view = |ptr: *const u8, len: usize| -> &[u8] {
            if ptr.is_null() {
                &[]
            } else {
                // SAFETY: Envoy's view of a name or value, valid during this hook.
                unsafe { std::slice::from_raw_parts(ptr, len) }
            }
        };
        Ok(HeaderPairs::from_pairs(raw.iter().map(|h| {
            (
                view(h.key_ptr, h.key_length),
                view(h.value_ptr, h.value_length),
            )
        })))
    }

    fn set_request_header(&self, name: &str, value: Option<&[u8]>) -> Result<(), HostError> {
        let filter = self.filter("set_header")?;
        let value = value.map_or(ModuleBuffer::NULL, ModuleBuffer::of);
        // SAFETY: a live stream; a null value removes the header.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                filter,
                header_type::REQUEST_HEADER,
                buf(name),
                value,
            )
        };
        ok.then_some(())
            .ok_or_else(|| err("set_header", name, "failed"))
    }

    fn source_address(&self) -> Result<Option<Vec<u8>>, HostError> {
        let filter = self.filter("get_attribute_string")?;
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: a live stream; the view is copied out at once.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                filter,
                abi::attribute::SOURCE_ADDRESS,
                &mut out,
            )
        };
        // SAFETY: as above.
        Ok(found
            .then(|| unsafe { out.bytes() }.map(<[u8]>::to_vec))
            .flatten())
    }

    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        let filter = self.filter("set_filter_state_bytes")?;
        // The Wasm build's property `name` is filter state `wasm.<name>`: the same
        // key here, so one access-log format reads both builds.
        let key = format!("wasm.{name}");
        // SAFETY: a live stream; Envoy copies both buffers.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                filter,
                buf(&key),
                ModuleBuffer::of(value),
            )
        };
        ok.then_some(())
            .ok_or_else(|| err("set_filter_state_bytes", &key, "failed"))
    }

    fn clear_route_cache(&self) -> Result<(), HostError> {
        let filter = self.filter("clear_route_cache")?;
        // SAFETY: a live stream.
        unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(filter) };
        Ok(())
    }

    fn response_status(&self) -> Result<Option<u64>, HostError> {
        let v = self.header(header_type::RESPONSE_HEADER, ":status", "get_header")?;
        Ok(v.as_deref().and_then(parse_status))
    }

    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.header(header_type::RESPONSE_HEADER, name, "get_header")
    }

    fn response_trailer(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.header(header_type::RESPONSE_TRAILER, name, "get_header")
    }

    fn set_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        let filter = self.filter("set_header")?;
        // SAFETY: a live stream; Envoy copies both buffers.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                filter,
                header_type::RESPONSE_HEADER,
                buf(name),
                ModuleBuffer::of(value),
            )
        };
        ok.then_some(())
            .ok_or_else(|| err("set_header", name, "failed"))
    }

    fn add_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        let filter = self.filter("add_header")?;
        // SAFETY: as above.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                filter,
                header_type::RESPONSE_HEADER,
                buf(name),
                ModuleBuffer::of(value),
            )
        };
        ok.then_some(())
            .ok_or_else(|| err("add_header", name, "failed"))
    }

    fn random_seed(&self) -> Result<u64, HostError> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| err("getrandom", "", &e.to_string()))?;
        Ok(u64::from_le_bytes(b))
    }

    fn property_u64(&self, path: &[&str]) -> Result<Option<u64>, HostError> {
        let id = match path {
            ["response", "code"] => abi::attribute::RESPONSE_CODE,
            ["response", "flags"] => abi::attribute::RESPONSE_FLAGS,
            _ => return Err(err("get_attribute_int", &path.join("."), "not mapped")),
        };
        let filter = self.filter("get_attribute_int")?;
        let mut out = 0u64;
        // SAFETY: a live stream.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(filter, id, &mut out)
        };
        Ok(found.then_some(out))
    }

    fn now_ns(&self) -> Result<u64, HostError> {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .map_err(|e| err("now", "", &e.to_string()))
    }

    fn plugin_name(&self) -> Result<Option<Vec<u8>>, HostError> {
        Ok(Some(self.name.as_bytes().to_vec()))
    }

    fn shared_get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        Ok(crate::store::get(key))
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, HostError> {
        Ok(crate::store::set(key, value, cas))
    }

    fn shared_creates_atomically(&self) -> bool {
        true
    }

    fn add_batched(&self, id: u32, delta: i64) -> bool {
        let Phase::Stream { metrics, .. } = self.phase else {
            return false;
        };
        match metrics.add(id, delta) {
            Some(first) => {
                if first {
                    ticker::wake(Duration::from_millis(TICK_MS));
                }
                true
            }
            None => false,
        }
    }

    fn send_local_reply(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        self.send(u32::from(status), headers, &[], body)
    }

    fn send_grpc_reply(
        &self,
        status: u32,
        message: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), HostError> {
        if !(1..=16).contains(&status) {
            return Err(err(
                "send_response",
                &status.to_string(),
                "no such gRPC status",
            ));
        }
        // This ABI's local reply takes no gRPC status: Envoy keeps a `grpc-status`
        // the reply carries (and turns the body into `grpc-message`) when it
        // answers a gRPC request trailers-only, as it does for Wasm's call.
        let code = status.to_string();
        self.send(200, headers, &[("grpc-status", &code)], message.as_bytes())
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        match self.phase {
            Phase::Loading { config, metrics } => {
                define(config, &mut metrics.borrow_mut(), kind, name)
            }
            // A worker builds the same configuration: the same names, defined
            // while it loaded.
            Phase::Stream { metrics, .. } | Phase::Main { metrics, .. } => metrics
                .by_name
                .get(name)
                .copied()
                .ok_or_else(|| err("define_metric", name, "not defined while loading")),
        }
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError> {
        let op = match (self.kind(id), delta < 0) {
            (Some(MetricKind::Counter), false) => Op::AddCounter,
            (Some(MetricKind::Gauge), false) => Op::AddGauge,
            (Some(MetricKind::Gauge), true) => Op::SubGauge,
            _ => {
                return Err(err(
                    "increment_metric",
                    &id.to_string(),
                    "not a counter or gauge",
                ))
            }
        };
        self.update(id, op, delta.unsigned_abs())
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        let op = match self.kind(id) {
            Some(MetricKind::Histogram) => Op::Record,
            Some(MetricKind::Gauge) => Op::SetGauge,
            _ => {
                return Err(err(
                    "record_metric",
                    &id.to_string(),
                    "not a histogram or gauge",
                ))
            }
        };
        self.update(id, op, value)
    }

    fn dispatch_grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        // The 1.40 ABI has no gRPC client: the call goes as an HTTP callout in
        // gRPC's wire format (`grpc.rs`), to the same HTTP/2 cluster: the
        // stream's, or on the main thread the configuration's own.
        let call = "http_callout";
        let main = match self.phase {
            Phase::Main { config, .. } => Some(config),
            _ => None,
        };
        let filter = if main.is_some() {
            std::ptr::null_mut()
        } else {
            self.filter(call)?
        };
        let body = grpc::frame(message).ok_or_else(|| err(call, cluster, "message too large"))?;
        let path = format!("/{service}/{method}");
        let views = grpc::request_headers(cluster, &path).map(|(k, v)| HttpHeader {
            key_ptr: k.as_ptr(),
            key_length: k.len(),
            value_ptr: v.as_ptr(),
            value_length: v.len(),
        });
        let mut id = 0u64;
        let result = match main {
            // SAFETY: the configuration on its main thread; every buffer
            // outlives the call (Envoy copies).
            Some(config) => unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                    config,
                    &mut id,
                    buf(cluster),
                    views.as_ptr(),
                    views.len(),
                    ModuleBuffer::of(&body),
                    timeout_ms,
                )
            },
            // SAFETY: a live stream; every buffer outlives the call (Envoy copies).
            None => unsafe {
                abi::envoy_dynamic_module_callback_http_filter_http_callout(
                    filter,
                    &mut id,
                    buf(cluster),
                    views.as_ptr(),
                    views.len(),
                    ModuleBuffer::of(&body),
                    timeout_ms,
                )
            },
        };
        let why = match result {
            callout_init::SUCCESS => {
                return u32::try_from(id).map_err(|_| err(call, cluster, "callout id out of range"))
            }
            callout_init::MISSING_REQUIRED_HEADERS => "missing required headers",
            callout_init::CLUSTER_NOT_FOUND => "cluster not found",
            callout_init::DUPLICATE_CALLOUT_ID => "duplicate callout id",
            callout_init::CANNOT_CREATE_REQUEST => "cannot create request",
            _ => "unknown result",
        };
        Err(err(call, cluster, why))
    }

    fn grpc_response(&self, _size: usize) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.answer.map(<[u8]>::to_vec))
    }

    fn cancel_grpc_call(&self, _token: u32) -> Result<(), HostError> {
        // The ABI cannot cancel a callout; Envoy cancels a stream's callouts
        // when the stream is destroyed, and an answer to a completed stream is
        // dropped (`http_callout_done`).
        Ok(())
    }

    fn resume_request(&self) -> Result<(), HostError> {
        let filter = self.filter("continue_decoding")?;
        // SAFETY: a live stream.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(filter) };
        Ok(())
    }

    fn set_tick_period(&self, _period_ms: u64) -> Result<(), HostError> {
        // The ABI has no per-worker timer: the module runs a due tick on the
        // worker's own hooks, and writes everything held when a configuration's
        // last stream on the worker ends (`module.rs`).
        Ok(())
    }

    fn log(&self, level: Level, message: &str) {
        log(level, message);
    }

    fn node_name(&self) -> Option<String> {
        // The 1.40 ABI gives a filter no node id: the host's name and this
        // process's id name the Envoy in the fleet service's logs.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        Some(format!("{}/{}", host.trim(), std::process::id()))
    }

    fn clears_route_cache_itself(&self) -> bool {
        // Envoy does not re-pick the route after a dynamic module's header edits.
        false
    }
}

impl NativeHost<'_> {
    fn send(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        let filter = self.filter("send_response")?;
        let list: Vec<HttpHeader> = headers
            .iter()
            .chain(extra)
            .map(|(k, v)| HttpHeader {
                key_ptr: k.as_ptr(),
                key_length: k.len(),
                value_ptr: v.as_ptr(),
                value_length: v.len(),
            })
            .collect();
        // SAFETY: a live stream; every buffer outlives the call (Envoy copies).
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                filter,
                status,
                list.as_ptr(),
                list.len(),
                ModuleBuffer::of(body),
                buf("meshguard"),
            );
        }
        Ok(())
    }
}

/// A configuration-level metric update.
type Touch =
    unsafe extern "C" fn(abi::ConfigEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;

/// Defines `name` (the glue's `meshguard.<metric>.<label>.<value>…`) as a series
/// of a labelled Envoy metric, defining the family on its first series.
fn define(
    config: abi::ConfigEnvoyPtr,
    metrics: &mut Metrics,
    kind: MetricKind,
    name: &str,
) -> Result<u32, HostError> {
    if let Some(id) = metrics.by_name.get(name) {
        return Ok(*id);
    }
    let split =
        names::split(name).ok_or_else(|| err("define_metric", name, "not a meshguard name"))?;
    if split.labels.len() > MAX_LABELS {
        return Err(err("define_metric", name, "too many labels"));
    }
    let kind_key = match kind {
        MetricKind::Counter => 0u8,
        MetricKind::Gauge => 1,
        MetricKind::Histogram => 2,
    };
    let labels: Vec<String> = split.labels.iter().map(|l| (*l).to_owned()).collect();
    let family_key = (kind_key, split.family.clone(), labels);
    let envoy_id = match metrics.families.get(&family_key) {
        Some(id) => *id,
        None => {
            let label_bufs: Vec<ModuleBuffer> = split.labels.iter().map(|l| buf(l)).collect();
            let define = match kind {
                MetricKind::Counter => {
                    abi::envoy_dynamic_module_callback_http_filter_config_define_counter
                }
                MetricKind::Gauge => {
                    abi::envoy_dynamic_module_callback_http_filter_config_define_gauge
                }
                MetricKind::Histogram => {
                    abi::envoy_dynamic_module_callback_http_filter_config_define_histogram
                }
            };
            let mut id = 0usize;
            // SAFETY: Envoy's configuration pointer during `config_new`; the
            // buffers outlive the call.
            let result = unsafe {
                define(
                    config,
                    buf(&split.family),
                    label_bufs.as_ptr(),
                    label_bufs.len(),
                    &mut id,
                )
            };
            if result != abi::metrics_result::SUCCESS {
                return Err(err(
                    "define_metric",
                    name,
                    &format!("metrics result {result}"),
                ));
            }
            metrics.families.insert(family_key, id);
            id
        }
    };
    let index =
        u32::try_from(metrics.list.len()).map_err(|_| err("define_metric", name, "too many"))?;
    // A labelled series exists once it is first touched: adding 0 now gives
    // every series from the start, as the Wasm build's defined names do (a
    // dashboard sees `0`, not "no data"). A histogram's buckets appear with its
    // first value.
    let values: Vec<ModuleBuffer> = split.values.iter().map(|v| buf(v)).collect();
    let touch = match kind {
        MetricKind::Counter => {
            Some(abi::envoy_dynamic_module_callback_http_filter_config_increment_counter as Touch)
        }
        MetricKind::Gauge => {
            Some(abi::envoy_dynamic_module_callback_http_filter_config_increment_gauge as Touch)
        }
        MetricKind::Histogram => None,
    };
    if let Some(touch) = touch {
        // SAFETY: Envoy's configuration pointer during `config_new`, a metric it
        // just defined, buffers that outlive the call.
        let _ = unsafe { touch(config, envoy_id, values.as_ptr(), values.len(), 0) };
    }
    metrics.list.push(Metric {
        kind,
        id: envoy_id,
        values: split.values.iter().map(|v| (*v).to_owned()).collect(),
    });
    metrics.by_name.insert(name.to_owned(), index);
    Ok(index)
}

/// Writes one line to Envoy's log (`dynamic_modules` logger).
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Error => abi::log_level::ERROR,
        Level::Warn => abi::log_level::WARN,
        Level::Info => abi::log_level::INFO,
        Level::Debug => abi::log_level::DEBUG,
    };
    // SAFETY: plain values and buffers that outlive the call.
    unsafe {
        if abi::envoy_dynamic_module_callback_log_enabled(level) {
            abi::envoy_dynamic_module_callback_log_v2(level, buf(message), buf("meshguard"), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(kind: MetricKind) -> Metric {
        Metric {
            kind,
            id: 0,
            values: Vec::new(),
        }
    }

    #[test]
    fn batched_counts_sum_per_metric_and_mark_the_first_since_the_mark_was_taken() {
        let mut m = Metrics::default();
        m.list.push(metric(MetricKind::Counter));
        m.list.push(metric(MetricKind::Histogram));
        m.list.push(metric(MetricKind::Gauge));
        assert_eq!(m.add(0, 1), None, "not loaded yet: keeps no counts");
        let m = m.keeping_counts();
        assert_eq!(m.add(0, 1), Some(true));
        assert_eq!(m.add(0, 2), Some(false));
        assert_eq!(m.add(2, 1), Some(false));
        assert_eq!(m.add(2, -2), Some(false));
        assert_eq!(m.add(1, 5), None, "a histogram is recorded per request");
        assert_eq!(m.add(3, 1), None, "no such metric");
        let load = |i: usize| m.pending.get(i).map(|p| p.load(Ordering::Relaxed));
        assert_eq!((load(0), load(1), load(2)), (Some(3), Some(0), Some(-1)));
        assert!(m.take_dirty());
        assert!(!m.take_dirty(), "taken");
        assert_eq!(m.add(0, 1), Some(true), "the first count since");
    }

    fn held(m: &Metrics) -> Vec<(u32, u64)> {
        m.held
            .iter()
            .flat_map(|s| s.lock().map(|v| v.clone()).unwrap_or_default())
            .collect()
    }

    #[test]
    fn histogram_values_are_held_for_the_flush_and_mark_the_first_since_the_mark_was_taken() {
        let mut m = Metrics::default();
        m.list.push(metric(MetricKind::Histogram));
        assert_eq!(m.hold(0, 7), None, "not loaded yet: recorded at once");
        let m = m.keeping_counts();
        assert_eq!(m.hold(0, 7), Some(true));
        assert_eq!(m.hold(0, 9), Some(false));
        assert_eq!(
            held(&m),
            vec![(0, 7), (0, 9)],
            "in order, in this thread's shard"
        );
        assert!(m.take_dirty());
        assert_eq!(m.hold(0, 1), Some(true), "the first value since");
        // A full shard hands the value back to be recorded at once.
        let mut full = Metrics::default();
        full.list.push(metric(MetricKind::Histogram));
        let full = full.keeping_counts();
        for v in 0..MAX_HELD as u64 {
            assert!(full.hold(0, v).is_some());
        }
        assert_eq!(full.hold(0, 1), None, "bounded");
        assert_eq!(held(&full).len(), MAX_HELD);
    }

    #[test]
    fn a_stream_hands_batched_counts_to_its_configuration_and_a_load_keeps_its_own() {
        let mut m = Metrics::default();
        m.list.push(metric(MetricKind::Counter));
        let none = RefCell::new(Metrics::default());
        let keeping = m.keeping_counts();
        let on = |phase| NativeHost {
            phase,
            config: &[],
            name: "meshguard",
            answer: None,
        };
        let stream = on(Phase::Stream {
            filter: std::ptr::null_mut(),
            metrics: &keeping,
        });
        assert!(stream.add_batched(0, 2));
        assert_eq!(
            keeping.pending.first().map(|p| p.load(Ordering::Relaxed)),
            Some(2)
        );
        assert!(
            !stream.add_batched(1, 1),
            "no such metric: the worker keeps it"
        );
        let loading = on(Phase::Loading {
            config: std::ptr::null_mut(),
            metrics: &none,
        });
        assert!(!loading.add_batched(0, 1));
        let plain = Metrics::default();
        let without = on(Phase::Stream {
            filter: std::ptr::null_mut(),
            metrics: &plain,
        });
        assert!(
            !without.add_batched(0, 1),
            "a configuration that keeps no counts"
        );
    }

    #[test]
    fn workers_adding_at_once_lose_no_count() {
        let mut m = Metrics::default();
        m.list.push(metric(MetricKind::Counter));
        let m = std::sync::Arc::new(m.keeping_counts());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = std::sync::Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let _ = m.add(0, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        assert_eq!(
            m.pending.first().map(|p| p.load(Ordering::Relaxed)),
            Some(40_000)
        );
    }

    #[test]
    fn label_values_point_at_each_value_in_order_and_count_them() {
        let values = vec!["web".to_owned(), "canary".to_owned(), "5xx".to_owned()];
        let (bufs, n) = label_values(&values);
        assert_eq!(n, 3);
        for (b, v) in bufs.iter().zip(&values) {
            assert_eq!((b.ptr, b.length), (v.as_ptr(), v.len()));
        }
        assert!(bufs[n..].iter().all(|b| b.ptr.is_null() && b.length == 0));
        assert_eq!(label_values(&[]).1, 0);
    }
}
