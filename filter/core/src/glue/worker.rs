//! What a worker keeps across configurations: its owner id, and whether its
//! tick runs.
//!
//! **The tick** runs while something is pending: counts the host holds, a
//! breaker's held outcomes, a rollout's counts to fold. After [`IDLE_TICKS`]
//! ticks with nothing to do it stops, so an idle Envoy spends no CPU on
//! meshguard; the next request starts it again and ticks once first, so a
//! rollout's verdict reached meanwhile by another worker applies to that request.
//! The core asks for ticks ([`crate::host::Timer::set_tick_period`]); each host
//! delivers them its own way (`glue::tick`).

use std::cell::Cell;

use crate::host::{Level, Timer};

/// How often a worker writes breaker outcomes it still holds: the longest a held
/// outcome may wait (see `meshguard_engine::Local`).
pub const TICK_MS: u64 = meshguard_engine::MAX_DELAY_NS / 1_000_000;

/// Ticks with nothing to do before the tick stops (1 s at 50 ms).
pub const IDLE_TICKS: u32 = 20;

/// A worker's state (shared by every configuration it runs, since streams of
/// an older configuration may still end after a new one arrived).
#[derive(Debug, Default)]
pub struct Worker {
    /// This worker's random id: the owner of its concurrency slots, the same
    /// for every configuration it runs.
    pub owner: Cell<u64>,
    ticking: Cell<bool>,
    idle_ticks: Cell<u32>,
    no_tick: Cell<bool>,
}

impl Worker {
    /// Whether the tick runs.
    pub fn ticking(&self) -> bool {
        self.ticking.get()
    }

    /// Whether the host refused a tick (then no request tries again).
    pub fn refused_tick(&self) -> bool {
        self.no_tick.get()
    }

    /// Starts (`period_ms` > 0) or stops the tick; false (logged once) when the
    /// host refused.
    pub fn set_tick(&self, host: &impl Timer, period_ms: u64) -> bool {
        match host.set_tick_period(period_ms) {
            Ok(()) => {
                self.ticking.set(period_ms > 0);
                self.idle_ticks.set(0);
                true
            }
            Err(e) => {
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

    /// The host stopped delivering ticks by itself (a dynamic module's worker
    /// whose last stream ended): the next request asks again.
    pub fn ticks_stopped(&self) {
        self.ticking.set(false);
        self.idle_ticks.set(0);
    }

    /// No tick of this configuration runs again (Envoy is done with it).
    pub fn retire(&self) {
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
