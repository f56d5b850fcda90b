//! A stream's hook ([`StreamHost`]): headers, replies, callouts, ticks.

use meshguard_config::tuning::RouteCache;
use meshguard_core::host::pairs::HeaderPairs;
use meshguard_core::host::{
    parse_status, Calls, HostError, HttpStream, MetricKind, Metrics, Timer,
};

use super::{add_op, err, grpc_call, record_op, recorded, write, Through};
use crate::abi::envoy::{Attribute, Map, MetricOp, Stream};
use crate::shared::Shared;
use crate::ticker::{self, Lender};

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
