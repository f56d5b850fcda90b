//! An in-memory host of every scope for unit tests of the glue (of this crate
//! and of the hosts'): builder-style setup, recorded effects, and injectable
//! host failures. It batches [`Metrics::add`] as the Wasm host does.
//!
//! What every worker of one Envoy shares (shared data, metrics) lives in a
//! [`World`] behind an `Rc`; a [`FakeHost`] is one stream's view of it, with its
//! own headers, clock, replies and logs. [`FakeHost::stream`] makes another stream
//! of the same world, so tests of several requests or workers share state without
//! copying it around.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use meshguard_config::tuning::RouteCache;
use meshguard_engine::metrics::Series;
use meshguard_engine::{SharedStore, StoreError};

use super::counts::Counts;
use super::pairs::HeaderPairs;
use super::{
    Calls, Configuration, HostError, HttpStream, Level, MetricKind, Metrics, Process, Timer,
};
use crate::glue::worker::TICK_MS;

/// A local reply: status, headers, body.
pub type Reply = (u16, Vec<(String, String)>, Vec<u8>);

/// A gRPC call: cluster, service, method, message, timeout (ms).
pub type GrpcCall = (String, String, String, Vec<u8>, u64);

/// What every worker shares: shared data and Envoy's (process-wide) metrics.
#[derive(Default)]
pub struct World {
    /// Counts given to [`Metrics::add`], handed to `metrics` on a flush (the
    /// next tick, or a read with [`FakeHost::metric`]).
    pub counts: Counts,
    /// Shared data: value and CAS token.
    pub data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    /// Every shared-data write loses its compare-and-swap (another worker always wins).
    pub lose_every_cas: Cell<bool>,
    /// Every shared-data call fails as a broken host would.
    pub fail_shared_data: Cell<bool>,
    /// Reads work, every write fails (a store that takes nothing more).
    pub refuse_writes: Cell<bool>,
    /// Metrics by name: kind and value (counters and gauges summed, histograms' last value).
    pub metrics: RefCell<Vec<(String, MetricKind, i64)>>,
    /// Values recorded into histograms, by metric id.
    pub recorded: RefCell<Vec<(u32, u64)>>,
}

/// A fake proxy stream: request headers in a list, effects and reads recorded.
#[derive(Debug, Default)]
pub struct FakeHost {
    world: Rc<World>,
    config: Option<Vec<u8>>,
    headers: RefCell<Vec<(String, Vec<u8>)>>,
    failing_reads: Vec<String>,
    source: Option<Vec<u8>>,
    /// Response headers written.
    pub response_headers: RefCell<Vec<(String, Vec<u8>)>>,
    /// Response trailers (as the upstream sent them).
    pub response_trailers: RefCell<Vec<(String, Vec<u8>)>>,
    /// How often the route cache was cleared.
    pub route_cache_clears: Cell<u32>,
    /// Envoy does not re-pick the route by itself (as for a dynamic module).
    pub no_auto_route_cache: Cell<bool>,
    /// Properties set (Envoy's filter state), in order.
    pub filter_state: RefCell<Vec<(String, Vec<u8>)>>,
    /// The clock, in nanoseconds.
    pub now: Cell<u64>,
    /// The clock fails.
    pub clock_fails: Cell<bool>,
    /// Local replies sent: status, headers, body.
    pub replies: RefCell<Vec<Reply>>,
    /// Integer properties by dotted path (`response.code`).
    pub properties: RefCell<Vec<(String, u64)>>,
    /// Every log line written, with its level.
    pub logs: RefCell<Vec<(Level, String)>>,
    /// Every header name read, in order.
    pub reads: RefCell<Vec<String>>,
    /// Every request-path host call, in order, as `call(argument)`: what a request
    /// costs (configure-time calls and logging are left out).
    pub calls: RefCell<Vec<String>>,
    /// The tick period asked for, ms.
    pub tick_period_ms: Cell<Option<u64>>,
    /// Setting the tick period fails.
    pub tick_fails: Cell<bool>,
    /// gRPC calls dispatched: cluster, service, method, message, timeout (ms).
    pub grpc_calls: RefCell<Vec<GrpcCall>>,
    /// Clusters that exist for gRPC calls (others fail at dispatch).
    pub grpc_clusters: RefCell<Vec<String>>,
    /// The body of the gRPC answer being delivered.
    pub grpc_body: RefCell<Option<Vec<u8>>>,
    /// gRPC calls cancelled.
    pub grpc_cancelled: RefCell<Vec<u32>>,
    /// How often the paused request was resumed.
    pub resumed: Cell<u32>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("data", &self.data)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl FakeHost {
    /// An empty fake host in a world of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands the counts [`Metrics::add`] holds to the metrics, as the Wasm
    /// host does on its tick.
    pub fn flush_counts(&self) {
        self.world
            .counts
            .flush(|id, delta| self.write_count(id, delta));
    }

    /// Hands the held counts over and writes later ones at once, as the Wasm
    /// host does when its root context is done (and the native host always).
    pub fn write_counts_at_once(&self) {
        self.world
            .counts
            .write_at_once(|id, delta| self.write_count(id, delta));
    }

    fn write_count(&self, id: u32, delta: i64) {
        self.call("increment_metric", id);
        if let Some(e) = self.world.metrics.borrow_mut().get_mut(id as usize) {
            e.2 += delta;
        }
    }

    /// Another stream (or worker) of the same world: shared data and metrics are
    /// the same, everything else is fresh; the clock starts where this one is.
    pub fn stream(&self) -> FakeHost {
        FakeHost {
            world: Rc::clone(&self.world),
            config: self.config.clone(),
            now: Cell::new(self.now.get()),
            ..FakeHost::default()
        }
    }

    /// What every stream of this world shares.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// Sets the plugin configuration.
    pub fn with_config(mut self, json: &str) -> Self {
        self.config = Some(json.as_bytes().to_vec());
        self
    }

    /// Adds a request header.
    pub fn with_header(self, name: &str, value: &[u8]) -> Self {
        self.headers
            .borrow_mut()
            .push((name.to_owned(), value.to_vec()));
        self
    }

    /// Sets the clock.
    pub fn at(self, now: u64) -> Self {
        self.now.set(now);
        self
    }

    /// Sets the caller's address (`source.address`).
    pub fn from_address(mut self, addr: &str) -> Self {
        self.source = Some(addr.as_bytes().to_vec());
        self
    }

    /// Values of response header `name` written so far.
    pub fn response_values(&self, name: &str) -> Vec<Vec<u8>> {
        self.response_headers
            .borrow()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The value of metric `name` (its flat name; 0 when undefined) after the
    /// next tick: counts held are handed over first.
    pub fn metric(&self, name: &str) -> i64 {
        self.flush_counts();
        self.metric_now(name)
    }

    /// A metric's value as Envoy has it now (counts a worker still holds left out).
    pub fn metric_now(&self, name: &str) -> i64 {
        self.world
            .metrics
            .borrow()
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or(0, |(_, _, v)| *v)
    }

    /// Makes reads of `name` fail as a broken host would (`*`: the read of every
    /// request header in one call).
    pub fn failing_read(mut self, name: &str) -> Self {
        self.failing_reads.push(name.to_owned());
        self
    }

    /// Current values of request header `name`.
    pub fn header_values(&self, name: &str) -> Vec<Vec<u8>> {
        self.headers
            .borrow()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn call(&self, name: &str, arg: impl std::fmt::Display) {
        self.calls.borrow_mut().push(format!("{name}({arg})"));
    }

    fn broken(&self, call: &str) -> Result<(), HostError> {
        if self.world.fail_shared_data.get() {
            return Err(HostError {
                call: call.into(),
                status: "InternalFailure".into(),
            });
        }
        Ok(())
    }
}

/// The fake's shared data, as the engine's store.
#[derive(Debug)]
pub struct FakeStore<'h>(&'h FakeHost);

impl SharedStore for FakeStore<'_> {
    fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        let host = self.0;
        host.call("shared_get", key);
        host.broken("get_shared_data")
            .map_err(|e| StoreError::Host(e.to_string()))?;
        Ok(match host.world.data.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let host = self.0;
        host.call("shared_set", key);
        host.broken("set_shared_data")
            .map_err(|e| StoreError::Host(e.to_string()))?;
        if host.world.refuse_writes.get() {
            return Err(StoreError::Host(
                "host call set_shared_data failed: InternalFailure".into(),
            ));
        }
        if host.world.lose_every_cas.get() {
            return Err(StoreError::CasMismatch);
        }
        let mut map = host.world.data.borrow_mut();
        match (map.get_mut(key), cas) {
            (Some(e), Some(c)) if e.1 != c => Err(StoreError::CasMismatch),
            (Some(e), _) => {
                e.0 = value.to_vec();
                e.1 += 1;
                Ok(())
            }
            (None, _) => {
                map.insert(key.to_owned(), (value.to_vec(), 1));
                Ok(())
            }
        }
    }
}

impl Process for FakeHost {
    type Store<'s> = FakeStore<'s>;

    fn store(&self) -> FakeStore<'_> {
        FakeStore(self)
    }

    fn now_ns(&self) -> Result<u64, HostError> {
        self.call("now", "");
        if self.clock_fails.get() {
            return Err(HostError {
                call: "get_current_time".into(),
                status: "InternalFailure".into(),
            });
        }
        Ok(self.now.get())
    }

    fn random_seed(&self) -> Result<u64, HostError> {
        Ok(0x5eed)
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }
}

impl Metrics for FakeHost {
    fn add(&self, id: u32, delta: i64) {
        // As the Wasm host: the first count held starts its timer.
        self.world.counts.add(
            id,
            delta,
            |id, delta| self.write_count(id, delta),
            || self.set_tick_period(TICK_MS).is_ok(),
        );
    }

    fn increment(&self, id: u32, delta: i64) -> Result<(), HostError> {
        self.write_count(id, delta);
        Ok(())
    }

    fn record(&self, id: u32, value: u64) -> Result<(), HostError> {
        self.call("record_metric", id);
        self.world.recorded.borrow_mut().push((id, value));
        if let Some(e) = self.world.metrics.borrow_mut().get_mut(id as usize) {
            e.2 = value as i64;
        }
        Ok(())
    }

    fn holds_counts(&self) -> bool {
        self.world.counts.holds()
    }
}

impl Calls for FakeHost {
    fn dispatch_grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        self.call("dispatch_grpc_call", cluster);
        if !self.grpc_clusters.borrow().iter().any(|c| c == cluster) {
            return Err(HostError {
                call: format!("dispatch_grpc_call({cluster})"),
                status: "ParseFailure".into(),
            });
        }
        let mut calls = self.grpc_calls.borrow_mut();
        calls.push((
            cluster.into(),
            service.into(),
            method.into(),
            message.to_vec(),
            timeout_ms,
        ));
        Ok(calls.len() as u32)
    }

    fn grpc_response(&self, _size: usize) -> Result<Option<Vec<u8>>, HostError> {
        self.call("grpc_response", "");
        Ok(self.grpc_body.borrow().clone())
    }
}

impl Configuration for FakeHost {
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.config.clone())
    }

    fn plugin_name(&self) -> Result<Option<Vec<u8>>, HostError> {
        Ok(Some(b"meshguard".to_vec()))
    }

    fn node_name(&self) -> Option<String> {
        None
    }

    fn define_metric(&self, kind: MetricKind, series: &Series) -> Result<u32, HostError> {
        let name = series.flat_name();
        let mut m = self.world.metrics.borrow_mut();
        if let Some(i) = m.iter().position(|(n, _, _)| *n == name) {
            return Ok(i as u32);
        }
        m.push((name, kind, 0));
        Ok((m.len() - 1) as u32)
    }
}

impl Timer for FakeHost {
    fn set_tick_period(&self, period_ms: u64) -> Result<(), HostError> {
        self.call("set_tick_period", period_ms);
        if self.tick_fails.get() {
            // As the Wasm host: without a tick, counts go to Envoy at once.
            self.world
                .counts
                .write_at_once(|id, delta| self.write_count(id, delta));
            return Err(HostError {
                call: "set_tick_period".into(),
                status: "InternalFailure".into(),
            });
        }
        self.tick_period_ms.set(Some(period_ms));
        self.world.counts.set_timer(period_ms > 0);
        Ok(())
    }
}

impl HttpStream for FakeHost {
    fn request_headers(&self) -> Result<HeaderPairs, HostError> {
        self.call("request_headers", "");
        if self.failing_reads.iter().any(|n| n == "*") {
            return Err(HostError {
                call: "get_header_map_pairs(request)".into(),
                status: "InternalFailure".into(),
            });
        }
        let headers = self.headers.borrow();
        let pairs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        Ok(HeaderPairs::parse(HeaderPairs::encode(&pairs)).unwrap_or_default())
    }

    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.call("request_header", name);
        self.reads.borrow_mut().push(name.to_owned());
        if self.failing_reads.iter().any(|n| n == name) {
            return Err(HostError {
                call: format!("get_map_value_bytes({name})"),
                status: "InternalFailure".into(),
            });
        }
        Ok(self
            .headers
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone()))
    }

    fn set_request_header(&self, name: &str, value: Option<&[u8]>) -> Result<(), HostError> {
        self.call("set_request_header", name);
        let mut h = self.headers.borrow_mut();
        h.retain(|(n, _)| n != name);
        if let Some(v) = value {
            h.push((name.to_owned(), v.to_vec()));
        }
        Ok(())
    }

    fn source_address(&self) -> Result<Option<Vec<u8>>, HostError> {
        self.call("property", "source.address");
        Ok(self.source.clone())
    }

    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.call("set_property", name);
        self.filter_state
            .borrow_mut()
            .push((name.to_owned(), value.to_vec()));
        Ok(())
    }

    fn repick_route(&self, mode: RouteCache) -> Result<bool, HostError> {
        // As a Proxy-Wasm module of ABI 0.2.1, whose header edits Envoy
        // follows by itself, unless `no_auto_route_cache` (a dynamic module).
        if mode != RouteCache::Clear && !self.no_auto_route_cache.get() {
            return Ok(false);
        }
        self.call("clear_route_cache", "");
        self.route_cache_clears
            .set(self.route_cache_clears.get() + 1);
        Ok(true)
    }

    fn response_status(&self) -> Result<Option<u64>, HostError> {
        self.call("response_header", ":status");
        Ok(self
            .response_headers
            .borrow()
            .iter()
            .find(|(n, _)| n == ":status")
            .and_then(|(_, v)| super::parse_status(v)))
    }

    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.call("response_header", name);
        Ok(self
            .response_headers
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone()))
    }

    fn response_trailer(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.call("response_trailer", name);
        Ok(self
            .response_trailers
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone()))
    }

    fn set_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.call("set_response_header", name);
        let mut h = self.response_headers.borrow_mut();
        h.retain(|(n, _)| n != name);
        h.push((name.to_owned(), value.to_vec()));
        Ok(())
    }

    fn add_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.call("add_response_header", name);
        self.response_headers
            .borrow_mut()
            .push((name.to_owned(), value.to_vec()));
        Ok(())
    }

    fn property_u64(&self, path: &[&str]) -> Result<Option<u64>, HostError> {
        self.call("property", path.join("."));
        let key = path.join(".");
        Ok(self
            .properties
            .borrow()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v))
    }

    fn send_local_reply(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        self.call("send_local_reply", status);
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.replies
            .borrow_mut()
            .push((status, headers, body.to_vec()));
        Ok(())
    }

    fn send_grpc_reply(
        &self,
        status: u32,
        message: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), HostError> {
        self.call("send_grpc_reply", status);
        let mut headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        headers.push(("grpc-status".into(), status.to_string()));
        headers.push(("grpc-message".into(), message.to_string()));
        self.replies.borrow_mut().push((200, headers, Vec::new()));
        Ok(())
    }

    fn cancel_grpc_call(&self, token: u32) -> Result<(), HostError> {
        self.grpc_cancelled.borrow_mut().push(token);
        Ok(())
    }

    fn resume_request(&self) -> Result<(), HostError> {
        self.resumed.set(self.resumed.get() + 1);
        Ok(())
    }
}
