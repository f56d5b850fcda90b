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

mod config;
pub mod metrics;
mod stream;

pub use config::{CopyHost, LoadHost, MainHost};
pub use stream::StreamHost;

use meshguard_core::host::{HostError, Level, MetricKind, Process};
use meshguard_engine::{SharedStore, StoreError};

use crate::abi::envoy::{self, Config, LogLevel, MetricOp, Stream};
use crate::grpc;
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
