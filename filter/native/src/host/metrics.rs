//! A configuration's metrics: real labelled Envoy metrics, one Envoy family per
//! meshguard family and label names, defined while the configuration loads
//! (Envoy freezes definitions afterwards), and every series of it by id.
//!
//! **Counts wait for the main thread.** With a scheduler on Envoy's main
//! thread, a stream's batched counts are summed here over every worker
//! ([`Metrics::add`]) and its histogram values held here ([`Metrics::hold`]),
//! and the tick thread has the main thread write them ([`Metrics::flush`],
//! `ticker.rs`), so a worker's streams never write counts or record durations
//! themselves (measured on `metrics-native`: recording the duration on the
//! main thread instead saved about as much of Envoy's CPU per request as not
//! recording it at all, 2.3 and 2.2 µs). Both reach Envoy within a tick or two.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;

use meshguard_core::host::{HostError, MetricKind};
use meshguard_engine::metrics::Series;

use crate::abi::envoy::{Config, MetricOp, MAX_LABELS};

/// One series: its kind, Envoy's family id and its label values.
#[derive(Debug)]
pub struct Metric {
    /// The family's kind.
    pub kind: MetricKind,
    /// Envoy's id of the family.
    pub family: usize,
    /// This series' label values, in the family's label order.
    pub values: Vec<String>,
}

/// The metrics a configuration defined.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Series ids by family and label values.
    by_series: HashMap<(&'static str, Vec<String>), u32>,
    /// Every series, by id.
    list: Vec<Metric>,
    /// Envoy's id per `(kind, family, label names)`.
    families: HashMap<(u8, &'static str, Vec<&'static str>), usize>,
    /// Batched counts not yet written, per series, summed over every worker
    /// (empty: this configuration has no main-thread scheduler).
    pending: Vec<AtomicI64>,
    /// Histogram values not yet recorded, `(series, value)`, in shards picked
    /// by the recording thread (so workers seldom share one lock).
    held: Vec<Mutex<Vec<(u32, u64)>>>,
    /// Some count or value waits in `pending` or `held`.
    dirty: AtomicBool,
}

/// Shards of held histogram values.
const HELD_SHARDS: usize = 8;

/// The most values one shard holds between two flushes (50 ms): past it a
/// value is recorded at once, so memory stays bounded however fast requests
/// come (16 bytes a value, 2 MiB at most).
pub const MAX_HELD: usize = 16 * 1024;

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// This thread's shard of held values.
    static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % HELD_SHARDS;
}

fn err(call: &str, arg: &str, status: &str) -> HostError {
    HostError {
        call: format!("{call}({arg})"),
        status: status.to_owned(),
    }
}

fn kind_key(kind: MetricKind) -> u8 {
    match kind {
        MetricKind::Counter => 0,
        MetricKind::Gauge => 1,
        MetricKind::Histogram => 2,
    }
}

impl Metrics {
    /// Defines `series` of `kind` through the loading configuration `envoy`:
    /// its family on its first series, then the series itself, touched with 0
    /// (a labelled series exists once first written: every series shows from
    /// the start, as the Wasm build's defined names do; a histogram's buckets
    /// appear with its first value). Its id.
    pub fn define(
        &mut self,
        envoy: &Config,
        kind: MetricKind,
        series: &Series,
    ) -> Result<u32, HostError> {
        let values: Vec<String> = series.labels.iter().map(|(_, v)| v.clone()).collect();
        let key = (series.family, values);
        if let Some(id) = self.by_series.get(&key) {
            return Ok(*id);
        }
        let family = series.family_name();
        if series.labels.len() > MAX_LABELS {
            return Err(err("define_metric", &family, "too many labels"));
        }
        let names: Vec<&'static str> = series.labels.iter().map(|(k, _)| *k).collect();
        let family_key = (kind_key(kind), series.family, names);
        let envoy_id = match self.families.get(&family_key) {
            Some(id) => *id,
            None => {
                let id = envoy
                    .define(kind, &family, &family_key.2)
                    .map_err(|r| err("define_metric", &family, &format!("metrics result {r}")))?;
                self.families.insert(family_key, id);
                id
            }
        };
        let index = u32::try_from(self.list.len())
            .map_err(|_| err("define_metric", &family, "too many"))?;
        let touch = match kind {
            MetricKind::Counter => Some(MetricOp::AddCounter),
            MetricKind::Gauge => Some(MetricOp::AddGauge),
            MetricKind::Histogram => None,
        };
        if let Some(op) = touch {
            let _ = envoy.metric(op, envoy_id, &key.1, 0);
        }
        self.list.push(Metric {
            kind,
            family: envoy_id,
            values: key.1.clone(),
        });
        self.by_series.insert(key, index);
        Ok(index)
    }

    /// The id of `series` as it was defined while the configuration loaded (a
    /// worker builds the same configuration: the same series).
    pub fn find(&self, series: &Series) -> Result<u32, HostError> {
        let values: Vec<String> = series.labels.iter().map(|(_, v)| v.clone()).collect();
        self.by_series
            .get(&(series.family, values))
            .copied()
            .ok_or_else(|| {
                err(
                    "define_metric",
                    &series.family_name(),
                    "not defined while loading",
                )
            })
    }

    /// Series `id`.
    pub fn get(&self, id: u32) -> Option<&Metric> {
        self.list.get(id as usize)
    }

    /// The loaded metrics, with room for every series' batched count: the
    /// configuration's scheduler on Envoy's main thread writes them.
    pub fn keeping_counts(mut self) -> Self {
        self.pending = self.list.iter().map(|_| AtomicI64::new(0)).collect();
        self.held = (0..HELD_SHARDS).map(|_| Mutex::new(Vec::new())).collect();
        self
    }

    /// Whether this configuration keeps the batched counts for the main thread.
    pub fn keeps_counts(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Adds `delta` to counter or gauge `id`'s batched count: `None` when this
    /// configuration keeps no counts or `id` is not one, else whether it was the
    /// first count since the last flush (the tick thread must then run).
    pub fn add(&self, id: u32, delta: i64) -> Option<bool> {
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
    pub fn hold(&self, id: u32, value: u64) -> Option<bool> {
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

    /// Writes every batched count and held value to Envoy through the
    /// configuration: on Envoy's main thread, or while Envoy destroys it.
    pub fn flush(&self, envoy: &Config) {
        for (m, slot) in self.list.iter().zip(&self.pending) {
            let delta = slot.swap(0, Ordering::AcqRel);
            let op = match (m.kind, delta) {
                (_, 0) => continue,
                (MetricKind::Counter, 1..) => MetricOp::AddCounter,
                (MetricKind::Gauge, 1..) => MetricOp::AddGauge,
                (MetricKind::Gauge, _) => MetricOp::SubGauge,
                _ => continue,
            };
            let _ = envoy.metric(op, m.family, &m.values, delta.unsigned_abs());
        }
        for shard in &self.held {
            let mut batch = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            for &(id, value) in &batch {
                if let Some(m) = self.get(id) {
                    let _ = envoy.metric(MetricOp::Record, m.family, &m.values, value);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meshguard_engine::metrics::{
        request_duration, requests_in_flight, requests_total, CodeClass,
    };

    use super::*;
    use crate::abi::mock::MockConfig;

    fn loaded() -> (Arc<MockConfig>, Metrics, [u32; 3]) {
        let mock = MockConfig::new();
        let envoy = Config::mock(mock.clone());
        let mut m = Metrics::default();
        let a = m
            .define(
                &envoy,
                MetricKind::Counter,
                &requests_total("web", "stable", CodeClass::of(200)),
            )
            .unwrap();
        let b = m
            .define(
                &envoy,
                MetricKind::Histogram,
                &request_duration("web", "stable"),
            )
            .unwrap();
        let c = m
            .define(&envoy, MetricKind::Gauge, &requests_in_flight("web"))
            .unwrap();
        (mock, m, [a, b, c])
    }

    #[test]
    fn a_family_is_defined_once_with_its_label_names_and_each_series_touched_at_zero() {
        let (mock, mut m, ids) = loaded();
        let envoy = Config::mock(mock.clone());
        let again = m
            .define(
                &envoy,
                MetricKind::Counter,
                &requests_total("web", "canary", CodeClass::of(503)),
            )
            .unwrap();
        let same = m
            .define(
                &envoy,
                MetricKind::Counter,
                &requests_total("web", "stable", CodeClass::of(200)),
            )
            .unwrap();
        assert_eq!(same, ids[0], "a series is defined once");
        assert_eq!(again, 3);
        let families = mock.families.lock().unwrap().clone();
        assert_eq!(
            families,
            vec![
                (
                    MetricKind::Counter,
                    "meshguard_requests_total".to_owned(),
                    vec!["route".into(), "variant".into(), "code_class".into()]
                ),
                (
                    MetricKind::Histogram,
                    "meshguard_request_duration_milliseconds".to_owned(),
                    vec!["route".into(), "variant".into()]
                ),
                (
                    MetricKind::Gauge,
                    "meshguard_requests_in_flight".to_owned(),
                    vec!["route".into()]
                ),
            ]
        );
        let writes = mock.writes.lock().unwrap().clone();
        // Counters and gauges are touched with 0; histograms are not.
        assert_eq!(
            writes,
            vec![
                (
                    MetricOp::AddCounter,
                    0,
                    vec!["web".into(), "stable".into(), "2xx".into()],
                    0
                ),
                (MetricOp::AddGauge, 2, vec!["web".into()], 0),
                (
                    MetricOp::AddCounter,
                    0,
                    vec!["web".into(), "canary".into(), "5xx".into()],
                    0
                ),
            ]
        );
        assert_eq!(
            m.find(&requests_total("web", "canary", CodeClass::of(503))),
            Ok(3)
        );
        assert!(m
            .find(&requests_total("api", "canary", CodeClass::of(503)))
            .is_err());
    }

    #[test]
    fn batched_counts_sum_per_series_and_mark_the_first_since_the_mark_was_taken() {
        let (_, m, [counter, histogram, gauge]) = loaded();
        assert_eq!(m.add(counter, 1), None, "not kept yet");
        let m = m.keeping_counts();
        assert_eq!(m.add(counter, 1), Some(true));
        assert_eq!(m.add(counter, 2), Some(false));
        assert_eq!(m.add(gauge, 1), Some(false));
        assert_eq!(m.add(gauge, -2), Some(false));
        assert_eq!(
            m.add(histogram, 5),
            None,
            "a histogram value is held, not summed"
        );
        assert_eq!(m.add(9, 1), None, "no such series");
        assert!(m.take_dirty());
        assert!(!m.take_dirty(), "taken");
        assert_eq!(m.add(counter, 1), Some(true), "the first count since");
    }

    #[test]
    fn a_flush_writes_each_sum_and_every_held_value_once_through_the_configuration() {
        let (mock, m, [counter, histogram, gauge]) = loaded();
        let m = m.keeping_counts();
        mock.writes.lock().unwrap().clear();
        m.add(counter, 3);
        m.add(gauge, 1);
        m.add(gauge, -2);
        m.hold(histogram, 7);
        m.hold(histogram, 9);
        let envoy = Config::mock(mock.clone());
        m.flush(&envoy);
        m.flush(&envoy);
        let writes = mock.writes.lock().unwrap().clone();
        assert_eq!(
            writes,
            vec![
                (
                    MetricOp::AddCounter,
                    0,
                    vec!["web".into(), "stable".into(), "2xx".into()],
                    3
                ),
                (MetricOp::SubGauge, 2, vec!["web".into()], 1),
                (MetricOp::Record, 1, vec!["web".into(), "stable".into()], 7),
                (MetricOp::Record, 1, vec!["web".into(), "stable".into()], 9),
            ]
        );
    }

    #[test]
    fn held_values_are_bounded_per_shard() {
        let (_, m, [_, histogram, _]) = loaded();
        assert_eq!(m.hold(histogram, 1), None, "not kept yet: recorded at once");
        let m = m.keeping_counts();
        for v in 0..MAX_HELD as u64 {
            assert!(m.hold(histogram, v).is_some());
        }
        assert_eq!(m.hold(histogram, 1), None, "full: recorded at once");
    }

    #[test]
    fn workers_adding_at_once_lose_no_count() {
        let (mock, m, [counter, _, _]) = loaded();
        let m = Arc::new(m.keeping_counts());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let _ = m.add(counter, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        mock.writes.lock().unwrap().clear();
        m.flush(&Config::mock(mock.clone()));
        assert_eq!(mock.writes.lock().unwrap()[0].3, 40_000);
    }
}
