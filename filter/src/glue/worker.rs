//! What a worker's VM keeps across configurations: counts not yet handed to Envoy,
//! and whether its tick runs.
//!
//! **Counts.** With `metrics.counters: batched` (the default) a counter or the
//! in-flight gauge is added up here and handed to Envoy on the worker's next tick,
//! one call per metric that changed: a request's +1 and −1 on the in-flight gauge
//! cancel out, and a busy route's counter costs one call per tick instead of one
//! per request. Envoy's figures lag by at most one tick (50 ms). Histograms are
//! recorded per request (their buckets stay exact).
//!
//! **The tick** runs while something is pending: counts, a breaker's held
//! outcomes, a rollout's counts to fold. After [`IDLE_TICKS`] ticks with nothing to
//! do it stops, so an idle Envoy spends no CPU on meshguard; the next request starts
//! it again and ticks once first, so a rollout's verdict reached meanwhile by
//! another worker applies to that request.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::host::{Host, Level};

/// How often a worker writes breaker outcomes it still holds: the longest a held
/// outcome may wait (see `meshguard_engine::Local`).
pub const TICK_MS: u64 = meshguard_engine::MAX_DELAY_NS / 1_000_000;

/// Ticks with nothing to do before the tick stops (1 s at 50 ms).
pub const IDLE_TICKS: u32 = 20;

/// A worker's VM-wide state (shared by every configuration it runs, since streams
/// of an older configuration may still end after a new one arrived).
#[derive(Debug, Default)]
pub struct Worker {
    /// This VM's random id: the owner of its concurrency slots, the same for
    /// every configuration it runs (see `root.rs`).
    pub owner: Cell<u64>,
    counts: RefCell<HashMap<u32, i64>>,
    ticking: Cell<bool>,
    idle_ticks: Cell<u32>,
    no_tick: Cell<bool>,
}

impl Worker {
    /// Adds `delta` to metric `id`: now, or on the next flush when `batched`
    /// (into the host's own batch when it keeps one, see
    /// [`Host::add_batched`]). Without a tick (the host refused one) counts go
    /// to Envoy at once.
    pub fn add(&self, host: &impl Host, id: u32, delta: i64, batched: bool) {
        if batched && !self.no_tick.get() {
            if !host.add_batched(id, delta) {
                *self.counts.borrow_mut().entry(id).or_insert(0) += delta;
            }
        } else {
            let _ = host.increment_metric(id, delta);
        }
    }

    /// Hands every count to Envoy (one call per metric whose count changed).
    pub fn flush(&self, host: &impl Host) {
        let counts = std::mem::take(&mut *self.counts.borrow_mut());
        for (id, delta) in counts {
            if delta != 0 {
                let _ = host.increment_metric(id, delta);
            }
        }
    }

    /// Whether counts wait for a flush.
    pub fn holds_counts(&self) -> bool {
        !self.counts.borrow().is_empty()
    }

    /// Whether the tick runs.
    pub fn ticking(&self) -> bool {
        self.ticking.get()
    }

    /// Whether the host refused a tick (then no request tries again, and counts
    /// are not batched).
    pub fn refused_tick(&self) -> bool {
        self.no_tick.get()
    }

    /// Starts (`period_ms` > 0) or stops the tick; false (logged once, and counts
    /// handed over at once from then on) when the host refused.
    pub fn set_tick(&self, host: &impl Host, period_ms: u64) -> bool {
        match host.set_tick_period(period_ms) {
            Ok(()) => {
                self.ticking.set(period_ms > 0);
                self.idle_ticks.set(0);
                true
            }
            Err(e) => {
                self.flush(host);
                if !self.no_tick.replace(true) {
                    host.log(
                        Level::Warn,
                        &format!("meshguard: cannot set the tick to {period_ms} ms ({e}); counters go to Envoy per request"),
                    );
                }
                false
            }
        }
    }

    /// Hands every count to Envoy and stops batching: the root context is done,
    /// so no tick of it would hand over later counts.
    pub fn retire(&self, host: &impl Host) {
        self.flush(host);
        self.no_tick.set(true);
        self.ticking.set(false);
    }

    /// After a tick: counts one more idle tick when nothing was pending before it
    /// (else starts over); true when the tick should stop now.
    pub fn idle_tick(&self, busy: bool) -> bool {
        let idle = if busy { 0 } else { self.idle_ticks.get() + 1 };
        self.idle_ticks.set(idle);
        idle >= IDLE_TICKS
    }
}
