//! TEST ONLY: Envoy's side of the handles in memory, recording every call, so
//! unit tests drive the module's hooks without Envoy.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use meshguard_core::host::pairs::HeaderPairs;
use meshguard_core::host::MetricKind;

use super::envoy::{Attribute, CalloutError, Map, MetricOp};

/// A metric write: op, Envoy's family id, label values, value.
pub type Write = (MetricOp, usize, Vec<String>, u64);

/// A callout sent: cluster, headers, body, timeout (ms).
pub type Callout = (String, Vec<(String, String)>, Vec<u8>, u64);

/// A local reply: status, headers, body.
pub type Reply = (u32, Vec<(String, String)>, Vec<u8>);

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// One mock HTTP stream.
#[derive(Debug, Default)]
pub struct MockStream {
    /// Request headers.
    pub request: RefCell<Vec<(String, Vec<u8>)>>,
    /// Response headers (as the upstream sent them, then as written).
    pub response: RefCell<Vec<(String, Vec<u8>)>>,
    /// Response trailers.
    pub trailers: RefCell<Vec<(String, Vec<u8>)>>,
    /// `ip:port` of the downstream peer.
    pub source: RefCell<Option<Vec<u8>>>,
    /// The response code attribute.
    pub code: Cell<Option<u64>>,
    /// Local replies sent.
    pub replies: RefCell<Vec<Reply>>,
    /// Metric writes through the stream.
    pub writes: RefCell<Vec<Write>>,
    /// Callouts sent.
    pub callouts: RefCell<Vec<Callout>>,
    /// Filter state set.
    pub filter_state: RefCell<Vec<(String, Vec<u8>)>>,
    /// Other calls, by name (`clear_route_cache`, `continue_decoding`).
    pub notes: RefCell<Vec<String>>,
    /// Whether Envoy gives a scheduler.
    pub gives_scheduler: Cell<bool>,
    /// The schedulers given.
    pub schedulers: RefCell<Vec<Arc<MockScheduler>>>,
}

impl MockStream {
    /// A stream with these request headers, whose Envoy gives schedulers.
    pub fn with(headers: &[(&str, &str)]) -> Rc<MockStream> {
        let s = MockStream::default();
        s.gives_scheduler.set(true);
        *s.request.borrow_mut() = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect();
        Rc::new(s)
    }

    fn map(&self, map: Map) -> &RefCell<Vec<(String, Vec<u8>)>> {
        match map {
            Map::Request => &self.request,
            Map::Response => &self.response,
            Map::ResponseTrailers => &self.trailers,
        }
    }

    pub(super) fn header(&self, map: Map, name: &str) -> Option<Vec<u8>> {
        self.map(map)
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    pub(super) fn headers(&self, map: Map) -> Option<HeaderPairs> {
        let list = self.map(map).borrow();
        Some(HeaderPairs::from_pairs(
            list.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())),
        ))
    }

    pub(super) fn set_header(&self, map: Map, name: &str, value: Option<&[u8]>) -> bool {
        let mut list = self.map(map).borrow_mut();
        list.retain(|(n, _)| n != name);
        if let Some(v) = value {
            list.push((name.to_owned(), v.to_vec()));
        }
        true
    }

    pub(super) fn add_header(&self, map: Map, name: &str, value: &[u8]) -> bool {
        self.map(map)
            .borrow_mut()
            .push((name.to_owned(), value.to_vec()));
        true
    }

    pub(super) fn send_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.replies
            .borrow_mut()
            .push((status, owned(headers), body.to_vec()));
    }

    pub(super) fn attribute_bytes(&self, id: Attribute) -> Option<Vec<u8>> {
        match id {
            Attribute::SourceAddress => self.source.borrow().clone(),
            _ => None,
        }
    }

    pub(super) fn attribute_int(&self, id: Attribute) -> Option<u64> {
        match id {
            Attribute::ResponseCode => self.code.get(),
            _ => None,
        }
    }

    pub(super) fn note(&self, call: &str) {
        self.notes.borrow_mut().push(call.to_owned());
    }

    pub(super) fn set_filter_state(&self, key: &str, value: &[u8]) -> bool {
        self.filter_state
            .borrow_mut()
            .push((key.to_owned(), value.to_vec()));
        true
    }

    pub(super) fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, CalloutError> {
        if cluster.is_empty() {
            return Err(CalloutError::ClusterNotFound);
        }
        let mut c = self.callouts.borrow_mut();
        c.push((
            cluster.to_owned(),
            owned(headers),
            body.to_vec(),
            timeout_ms,
        ));
        Ok(c.len() as u64)
    }

    pub(super) fn metric(&self, op: MetricOp, id: usize, labels: &[String], value: u64) -> u32 {
        self.writes
            .borrow_mut()
            .push((op, id, labels.to_vec(), value));
        0
    }

    pub(super) fn scheduler(&self) -> Option<Arc<MockScheduler>> {
        if !self.gives_scheduler.get() {
            return None;
        }
        let s = Arc::new(MockScheduler::default());
        self.schedulers.borrow_mut().push(s.clone());
        Some(s)
    }
}

/// One mock filter configuration.
#[derive(Debug, Default)]
pub struct MockConfig {
    /// Families defined: kind, name, label names.
    pub families: Mutex<Vec<(MetricKind, String, Vec<String>)>>,
    /// Metric writes through the configuration.
    pub writes: Mutex<Vec<Write>>,
    /// Callouts sent.
    pub callouts: Mutex<Vec<Callout>>,
    /// Whether Envoy gives a scheduler.
    pub gives_scheduler: AtomicBool,
    /// The schedulers given.
    pub schedulers: Mutex<Vec<Arc<MockScheduler>>>,
}

impl MockConfig {
    /// A configuration whose Envoy gives a scheduler.
    pub fn new() -> Arc<MockConfig> {
        let c = MockConfig::default();
        c.gives_scheduler.store(true, Ordering::Relaxed);
        Arc::new(c)
    }

    pub(super) fn define(
        &self,
        kind: MetricKind,
        name: &str,
        labels: &[&str],
    ) -> Result<usize, u32> {
        let mut f = self.families.lock().map_err(|_| 1u32)?;
        f.push((
            kind,
            name.to_owned(),
            labels.iter().map(|l| (*l).to_owned()).collect(),
        ));
        Ok(f.len() - 1)
    }

    pub(super) fn metric(&self, op: MetricOp, id: usize, labels: &[String], value: u64) -> u32 {
        if let Ok(mut w) = self.writes.lock() {
            w.push((op, id, labels.to_vec(), value));
        }
        0
    }

    pub(super) fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, CalloutError> {
        let mut c = self
            .callouts
            .lock()
            .map_err(|_| CalloutError::CannotCreate)?;
        c.push((
            cluster.to_owned(),
            owned(headers),
            body.to_vec(),
            timeout_ms,
        ));
        Ok(c.len() as u64)
    }

    pub(super) fn scheduler(&self) -> Option<Arc<MockScheduler>> {
        if !self.gives_scheduler.load(Ordering::Relaxed) {
            return None;
        }
        let s = Arc::new(MockScheduler::default());
        if let Ok(mut list) = self.schedulers.lock() {
            list.push(s.clone());
        }
        Some(s)
    }
}

/// A mock scheduler: counts what was posted, and whether it was deleted.
#[derive(Debug, Default)]
pub struct MockScheduler {
    /// Events posted, in order.
    pub posted: Mutex<Vec<u64>>,
    /// Deleted by its owner.
    pub deleted: AtomicBool,
    /// Commits after the delete (must stay 0).
    pub late: AtomicU64,
}

impl MockScheduler {
    pub(super) fn commit(&self, event: u64) {
        if self.deleted.load(Ordering::Acquire) {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut p) = self.posted.lock() {
            p.push(event);
        }
    }

    pub(super) fn delete(&self) {
        self.deleted.store(true, Ordering::Release);
    }
}

thread_local! {
    /// Log lines written on this thread: Envoy's level and the message.
    pub static LOGS: RefCell<Vec<(u32, String)>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn log(level: u32, message: &str) {
    LOGS.with(|l| l.borrow_mut().push((level, message.to_owned())));
}

/// The log lines written on this thread so far, taken.
pub fn take_logs() -> Vec<(u32, String)> {
    LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
}
