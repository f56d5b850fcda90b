//! The core's host traits over Envoy's safe handles (`abi::envoy`), one type
//! per scope, so a call Envoy does not allow in a scope does not compile:
//!
//! - [`LoadHost`]: a configuration loading on Envoy's main thread: metric
//!   definitions, writes through the configuration;
//! - [`CopyHost`]: a worker building its copy of a loaded configuration (its
//!   first stream): the same metrics, found again, writes through the stream;
//! - [`MainHost`]: the configuration's own main-thread hooks after it loaded
//!   (the fleet sync): writes and callouts through the configuration;
//! - [`StreamHost`]: a stream's hook: headers, replies, callouts, ticks.
//!
//! Every scope shares the process: the clock, randomness, the log, and the
//! process-wide [`store`](crate::store) as shared data.

pub mod metrics;

use std::cell::RefCell;

use meshguard_config::tuning::RouteCache;
use meshguard_core::host::pairs::HeaderPairs;
use meshguard_core::host::{
    parse_status, Calls, Configuration, HostError, HttpStream, Level, MetricKind, Metrics, Process,
    Timer,
};
use meshguard_engine::metrics::Series;
use meshguard_engine::{SharedStore, StoreError};

use crate::abi::envoy::{self, Attribute, Config, LogLevel, Map, MetricOp, Stream};
use crate::grpc;
use crate::shared::Shared;
use crate::ticker::{self, Lender};
use metrics::Metrics as Table;

fn err(call: &str, arg: &str, status: &str) -> HostError {
    HostError {
        call: format!("{call}({arg})"),
        status: status.to_owned(),
    }
}

/// The process-wide store as the engine's shared data. A read of an absent
/// key gives a token that a later write fails with once another worker
/// created the entry: it creates entries atomically.
#[derive(Debug, Clone, Copy)]
pub struct NativeStore;

impl SharedStore for NativeStore {
    fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        Ok(crate::store::get(key))
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        if crate::store::set(key, value, cas) {
            Ok(())
        } else {
            Err(StoreError::CasMismatch)
        }
    }

    fn creates_atomically(&self) -> bool {
        true
    }
}

/// Writes one line to Envoy's log.
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Error => LogLevel::Error,
        Level::Warn => LogLevel::Warn,
        Level::Info => LogLevel::Info,
        Level::Debug => LogLevel::Debug,
    };
    envoy::log(level, message);
}

/// Every scope is in the same process.
macro_rules! process {
    ($($scope:ident),+) => {$(
        impl Process for $scope<'_> {
            type Store<'s>
                = NativeStore
            where
                Self: 's;

            fn store(&self) -> NativeStore {
                NativeStore
            }

            fn now_ns(&self) -> Result<u64, HostError> {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                    .map_err(|e| err("now", "", &e.to_string()))
            }

            fn random_seed(&self) -> Result<u64, HostError> {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).map_err(|e| err("getrandom", "", &e.to_string()))?;
                Ok(u64::from_le_bytes(b))
            }

            fn log(&self, level: Level, message: &str) {
                log(level, message);
            }
        }
    )+};
}

process!(LoadHost, CopyHost, MainHost, StreamHost);

/// `delta` as a write to a counter or gauge.
fn add_op(kind: MetricKind, delta: i64) -> Option<MetricOp> {
    match (kind, delta < 0) {
        (MetricKind::Counter, false) => Some(MetricOp::AddCounter),
        (MetricKind::Gauge, false) => Some(MetricOp::AddGauge),
        (MetricKind::Gauge, true) => Some(MetricOp::SubGauge),
        _ => None,
    }
}

/// A value as a write to a histogram or gauge.
fn record_op(kind: MetricKind) -> Option<MetricOp> {
    match kind {
        MetricKind::Histogram => Some(MetricOp::Record),
        MetricKind::Gauge => Some(MetricOp::SetGauge),
        MetricKind::Counter => None,
    }
}

/// Where a scope's metric writes go: the configuration or the stream.
enum Through<'a> {
    Config(&'a Config),
    Stream(&'a Stream),
}

/// Writes series `id` of `table` through `to`.
fn write(
    to: Through<'_>,
    table: &Table,
    id: u32,
    value: i64,
    op: fn(MetricKind, i64) -> Option<MetricOp>,
) -> Result<(), HostError> {
    let call = "metric";
    let m = table
        .get(id)
        .ok_or_else(|| err(call, &id.to_string(), "no such metric"))?;
    let op = op(m.kind, value).ok_or_else(|| err(call, &id.to_string(), "wrong kind"))?;
    let result = match to {
        Through::Config(c) => c.metric(op, m.family, &m.values, value.unsigned_abs()),
        Through::Stream(s) => s.metric(op, m.family, &m.values, value.unsigned_abs()),
    };
    result.map_err(|e| err(call, &id.to_string(), &format!("metrics result {}", e.0)))
}

fn recorded(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A configuration loading on Envoy's main thread.
#[derive(Debug)]
pub struct LoadHost<'a> {
    /// Envoy's configuration.
    pub envoy: &'a Config,
    /// The metrics being defined.
    pub metrics: &'a RefCell<Table>,
    /// The configuration's bytes.
    pub config: &'a [u8],
    /// The filter's name.
    pub name: &'a str,
}

impl Metrics for LoadHost<'_> {
    fn add(&self, id: u32, delta: i64) {
        let _ = self.increment(id, delta);
    }

    fn increment(&self, id: u32, delta: i64) -> Result<(), HostError> {
        let table = self.metrics.borrow();
        write(Through::Config(self.envoy), &table, id, delta, add_op)
    }

    fn record(&self, id: u32, value: u64) -> Result<(), HostError> {
        let table = self.metrics.borrow();
        write(
            Through::Config(self.envoy),
            &table,
            id,
            recorded(value),
            |k, _| record_op(k),
        )
    }

    fn holds_counts(&self) -> bool {
        false
    }
}

impl Configuration for LoadHost<'_> {
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError> {
        Ok((!self.config.is_empty()).then(|| self.config.to_vec()))
    }

    fn plugin_name(&self) -> Result<Option<Vec<u8>>, HostError> {
        Ok(Some(self.name.as_bytes().to_vec()))
    }

    fn node_name(&self) -> Option<String> {
        node_name()
    }

    fn define_metric(&self, kind: MetricKind, series: &Series) -> Result<u32, HostError> {
        self.metrics.borrow_mut().define(self.envoy, kind, series)
    }
}

/// The 1.40 ABI gives a filter no node id: the host's name and this process's
/// id name the Envoy in the fleet service's logs.
fn node_name() -> Option<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    Some(format!("{}/{}", host.trim(), std::process::id()))
}

/// A worker building its copy of a loaded configuration, on its first stream.
#[derive(Debug)]
pub struct CopyHost<'a> {
    /// The stream whose hook runs.
    pub envoy: &'a Stream,
    /// The loaded configuration.
    pub shared: &'a Shared,
}

impl Metrics for CopyHost<'_> {
    fn add(&self, id: u32, delta: i64) {
        let _ = self.increment(id, delta);
    }

    fn increment(&self, id: u32, delta: i64) -> Result<(), HostError> {
        write(
            Through::Stream(self.envoy),
            &self.shared.metrics,
            id,
            delta,
            add_op,
        )
    }

    fn record(&self, id: u32, value: u64) -> Result<(), HostError> {
        write(
            Through::Stream(self.envoy),
            &self.shared.metrics,
            id,
            recorded(value),
            |k, _| record_op(k),
        )
    }

    fn holds_counts(&self) -> bool {
        false
    }
}

impl Configuration for CopyHost<'_> {
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError> {
        let c = &self.shared.config;
        Ok((!c.is_empty()).then(|| c.clone()))
    }

    fn plugin_name(&self) -> Result<Option<Vec<u8>>, HostError> {
        Ok(Some(self.shared.name.as_bytes().to_vec()))
    }

    fn node_name(&self) -> Option<String> {
        node_name()
    }

    fn define_metric(&self, _kind: MetricKind, series: &Series) -> Result<u32, HostError> {
        self.shared.metrics.find(series)
    }
}

/// gRPC's unary call as an HTTP callout (the 1.40 ABI has no gRPC client):
/// the frame, the headers, and the callout's id as the call's token.
fn grpc_call(
    callout: impl FnOnce(&[(&str, &str)], &[u8]) -> Result<u64, envoy::CalloutError>,
    cluster: &str,
    service: &str,
    method: &str,
    message: &[u8],
) -> Result<u32, HostError> {
    let call = "http_callout";
    let body = grpc::frame(message).ok_or_else(|| err(call, cluster, "message too large"))?;
    let path = format!("/{service}/{method}");
    let headers = grpc::request_headers(cluster, &path);
    match callout(&headers, &body) {
        Ok(id) => u32::try_from(id).map_err(|_| err(call, cluster, "callout id out of range")),
        Err(e) => Err(err(call, cluster, e.reason())),
    }
}

/// A loaded configuration's own hook on Envoy's main thread (the fleet sync
/// and its answer).
#[derive(Debug)]
pub struct MainHost<'a> {
    /// Envoy's configuration.
    pub envoy: &'a Config,
    /// The loaded configuration.
    pub shared: &'a Shared,
    /// The answer being delivered: the gRPC message, unframed.
    pub answer: Option<&'a [u8]>,
}

impl Metrics for MainHost<'_> {
    fn add(&self, id: u32, delta: i64) {
        let _ = self.increment(id, delta);
    }

    fn increment(&self, id: u32, delta: i64) -> Result<(), HostError> {
        write(
            Through::Config(self.envoy),
            &self.shared.metrics,
            id,
            delta,
            add_op,
        )
    }

    fn record(&self, id: u32, value: u64) -> Result<(), HostError> {
        write(
            Through::Config(self.envoy),
            &self.shared.metrics,
            id,
            recorded(value),
            |k, _| record_op(k),
        )
    }

    fn holds_counts(&self) -> bool {
        false
    }
}

impl Calls for MainHost<'_> {
    fn dispatch_grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        grpc_call(
            |headers, body| self.envoy.callout(cluster, headers, body, timeout_ms),
            cluster,
            service,
            method,
            message,
        )
    }

    fn grpc_response(&self, _size: usize) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.answer.map(<[u8]>::to_vec))
    }
}

/// A stream's hook.
#[derive(Debug)]
pub struct StreamHost<'a> {
    /// The stream whose hook runs.
    pub envoy: &'a Stream,
    /// Its id (its address) among the worker's live streams.
    pub id: usize,
    /// The loaded configuration.
    pub shared: &'a Shared,
    /// The worker's ticks for this configuration.
    pub lender: &'a Lender,
    /// The answer being delivered (`http_callout_done`): the gRPC message, unframed.
    pub answer: Option<&'a [u8]>,
}

impl StreamHost<'_> {
    fn write(
        &self,
        id: u32,
        value: i64,
        op: fn(MetricKind, i64) -> Option<MetricOp>,
    ) -> Result<(), HostError> {
        write(
            Through::Stream(self.envoy),
            &self.shared.metrics,
            id,
            value,
            op,
        )
    }
}

impl Metrics for StreamHost<'_> {
    fn add(&self, id: u32, delta: i64) {
        // Summed for the main thread when the configuration keeps counts
        // (`metrics.rs`), else written now.
        match self.shared.metrics.add(id, delta) {
            Some(first) => {
                if first {
                    ticker::wake();
                }
            }
            None => {
                let _ = self.increment(id, delta);
            }
        }
    }

    fn increment(&self, id: u32, delta: i64) -> Result<(), HostError> {
        self.write(id, delta, add_op)
    }

    fn record(&self, id: u32, value: u64) -> Result<(), HostError> {
        let histogram = self
            .shared
            .metrics
            .get(id)
            .is_some_and(|m| m.kind == MetricKind::Histogram);
        if histogram {
            if let Some(first) = self.shared.metrics.hold(id, value) {
                if first {
                    ticker::wake();
                }
                return Ok(());
            }
        }
        self.write(id, recorded(value), |k, _| record_op(k))
    }

    fn holds_counts(&self) -> bool {
        false
    }
}

impl Calls for StreamHost<'_> {
    fn dispatch_grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        grpc_call(
            |headers, body| self.envoy.callout(cluster, headers, body, timeout_ms),
            cluster,
            service,
            method,
            message,
        )
    }

    fn grpc_response(&self, _size: usize) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.answer.map(<[u8]>::to_vec))
    }
}

impl Timer for StreamHost<'_> {
    fn set_tick_period(&self, period_ms: u64) -> Result<(), HostError> {
        if period_ms == 0 {
            self.lender.stop();
            return Ok(());
        }
        if self.lender.start(self.id, self.envoy) {
            Ok(())
        } else {
            Err(err("scheduler_new", "", "Envoy gave no scheduler"))
        }
    }
}

impl HttpStream for StreamHost<'_> {
    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.envoy.header(Map::Request, name))
    }

    fn request_headers(&self) -> Result<HeaderPairs, HostError> {
        self.envoy
            .headers(Map::Request)
            .ok_or_else(|| err("get_headers", "request", "failed"))
    }

    fn set_request_header(&self, name: &str, value: Option<&[u8]>) -> Result<(), HostError> {
        self.envoy
            .set_header(Map::Request, name, value)
            .then_some(())
            .ok_or_else(|| err("set_header", name, "failed"))
    }

    fn source_address(&self) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.envoy.attribute_bytes(Attribute::SourceAddress))
    }

    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        // The Wasm build's property `name` is filter state `wasm.<name>`: the same
        // key here, so one access-log format reads both builds.
        let key = format!("wasm.{name}");
        self.envoy
            .set_filter_state(&key, value)
            .then_some(())
            .ok_or_else(|| err("set_filter_state_bytes", &key, "failed"))
    }

    fn repick_route(&self, _mode: RouteCache) -> Result<bool, HostError> {
        // Envoy does not re-pick the route after a dynamic module's header
        // edits: asked in either mode.
        self.envoy.clear_route_cache();
        Ok(true)
    }

    fn response_status(&self) -> Result<Option<u64>, HostError> {
        Ok(self
            .envoy
            .header(Map::Response, ":status")
            .as_deref()
            .and_then(parse_status))
    }

    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.envoy.header(Map::Response, name))
    }

    fn response_trailer(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.envoy.header(Map::ResponseTrailers, name))
    }

    fn set_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.envoy
            .set_header(Map::Response, name, Some(value))
            .then_some(())
            .ok_or_else(|| err("set_header", name, "failed"))
    }

    fn add_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.envoy
            .add_header(Map::Response, name, value)
            .then_some(())
            .ok_or_else(|| err("add_header", name, "failed"))
    }

    fn property_u64(&self, path: &[&str]) -> Result<Option<u64>, HostError> {
        let id = match path {
            ["response", "code"] => Attribute::ResponseCode,
            ["response", "flags"] => Attribute::ResponseFlags,
            _ => return Err(err("get_attribute_int", &path.join("."), "not mapped")),
        };
        Ok(self.envoy.attribute_int(id))
    }

    fn send_local_reply(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        self.envoy.send_response(u32::from(status), headers, body);
        Ok(())
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
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        all.push(("grpc-status", &code));
        self.envoy.send_response(200, &all, message.as_bytes());
        Ok(())
    }

    fn cancel_grpc_call(&self, _token: u32) -> Result<(), HostError> {
        // The ABI cannot cancel a callout; Envoy cancels a stream's callouts
        // when the stream is destroyed, and an answer to a completed stream is
        // dropped (`module.rs`).
        Ok(())
    }

    fn resume_request(&self) -> Result<(), HostError> {
        self.envoy.continue_decoding();
        Ok(())
    }
}
