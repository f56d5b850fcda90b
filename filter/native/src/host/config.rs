//! The configuration's scopes: loading on Envoy's main thread
//! ([`LoadHost`]), a worker building its copy ([`CopyHost`]), and the loaded
//! configuration's own main-thread hooks ([`MainHost`]).

use std::cell::RefCell;

use meshguard_core::host::{Calls, Configuration, HostError, MetricKind, Metrics};
use meshguard_engine::metrics::Series;

use super::metrics::Metrics as Table;
use super::{add_op, grpc_call, record_op, recorded, write, Through};
use crate::abi::envoy::{Config, Stream};
use crate::shared::Shared;

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
