//! One worker's view of a shared breaker: the cost cut of the bench issue.
//!
//! Reading and compare-and-swapping the shared state on every request costs about
//! 3 µs of host calls (a read at admission, a read and a write at the end). Each
//! worker therefore keeps:
//!
//! - **the phase it last saw**, reused for admission while it is fresh: a closed
//!   breaker seen less than [`STALE_NS`] ago admits without a read, and an open one
//!   rejects without a read until its open period ends (that end is fixed when the
//!   breaker trips, so local rejection is exact). Half-open admission always goes to
//!   the shared state, so exactly P probes pass;
//! - **the outcomes it has not written yet**, in order and with their times. A failed
//!   or slow outcome, a probe's outcome, a full batch ([`Batching::max_pending`]) or
//!   an old one ([`Batching::max_delay_ns`]) writes the batch in one compare-and-swap.
//!
//! The trade-off, bounded by tests: a trip on one worker reaches the others within
//! [`STALE_NS`] (or at their next write); a window misses at most
//! `max_pending - 1` recent *successes* per other worker (so a failure rate reads
//! at most that many calls high), and successes are recorded at most
//! `max_delay_ns` late. A failure is written at once, after the successes that came
//! before it on the same worker, so consecutive-failure counting is exact per worker.

use meshguard_config::breaker::{CompiledBreaker, WindowKind};

use super::machine::{self, Admission, Outcome, Transition};
use super::state::{Phase, State};
use crate::store::{update, SharedStore, StoreError};

/// How long a worker trusts a closed phase it read: 1 ms.
pub const STALE_NS: u64 = 1_000_000;
/// Latest a success is written while the worker has traffic: 50 ms (an idle
/// worker's are written by the root context's tick, every [`MAX_DELAY_NS`] too).
pub const MAX_DELAY_NS: u64 = 50_000_000;
/// Largest batch of unwritten successes.
pub const MAX_BATCH: usize = 16;

/// How much a worker may hold back for one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Outcomes held before a write (1: every outcome is written at once).
    pub max_pending: usize,
    /// Age of the oldest held outcome that forces a write, ns.
    pub max_delay_ns: u64,
}

impl Batching {
    /// The batching of `policy`: a window of N calls holds back at most N/20 (so a
    /// rate reads at most 5% of the window high per other worker), a time window at
    /// most a 64th of its length, never more than [`MAX_BATCH`] calls or
    /// [`MAX_DELAY_NS`]. With a consecutive-failure trip, successes are held at most
    /// [`STALE_NS`], so another worker's failures are not counted "in a row" across
    /// them for longer than that.
    pub fn of(policy: &CompiledBreaker) -> Batching {
        let mut b = match policy.window {
            WindowKind::Calls(n) => Batching {
                max_pending: (n as usize / 20).clamp(1, MAX_BATCH),
                max_delay_ns: MAX_DELAY_NS,
            },
            WindowKind::Seconds(s) => Batching {
                max_pending: MAX_BATCH,
                max_delay_ns: (u64::from(s) * 1_000_000_000 / 64).min(MAX_DELAY_NS),
            },
        };
        if policy.consecutive.is_some() {
            b.max_delay_ns = b.max_delay_ns.min(STALE_NS);
        }
        b
    }
}

/// What a worker last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    phase: Phase,
    open_until: u64,
    at: u64,
}

/// One worker's view of one breaker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    seen: Option<Seen>,
    pending: Vec<(Outcome, u64)>,
}

/// What happens after the held outcomes are applied.
enum Then {
    Admit,
    Probe(Outcome),
    Nothing,
}

impl Local {
    /// Outcomes held back, not yet written.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn due(&self, b: Batching, now: u64) -> bool {
        self.pending.len() >= b.max_pending
            || self
                .pending
                .first()
                .is_some_and(|(_, at)| now.saturating_sub(*at) >= b.max_delay_ns)
    }

    /// Admission at `now`: from the phase last seen when that is enough, else from
    /// the shared state (writing held outcomes first). Transitions are returned for
    /// the metrics and the log.
    pub fn admit(
        &mut self,
        store: &mut impl SharedStore,
        key: &str,
        policy: &CompiledBreaker,
        now: u64,
    ) -> Result<(Admission, Vec<Transition>), StoreError> {
        if !self.due(Batching::of(policy), now) {
            match self.seen {
                Some(s) if s.phase == Phase::Closed && now.saturating_sub(s.at) < STALE_NS => {
                    return Ok((Admission::Allow { probe: false }, Vec::new()));
                }
                Some(s) if s.phase == Phase::Open && now < s.open_until => {
                    let reject = Admission::Reject {
                        phase: Phase::Open,
                        retry_in_ns: s.open_until - now,
                    };
                    return Ok((reject, Vec::new()));
                }
                _ => {}
            }
        }
        let (admission, transitions) = self.sync(store, key, policy, now, Then::Admit)?;
        Ok((
            admission.unwrap_or(Admission::Allow { probe: false }),
            transitions,
        ))
    }

    /// Writes held outcomes that are due at `now` (the root context's tick calls this
    /// so an idle worker's outcomes are not held forever).
    pub fn flush_due(
        &mut self,
        store: &mut impl SharedStore,
        key: &str,
        policy: &CompiledBreaker,
        now: u64,
    ) -> Result<Vec<Transition>, StoreError> {
        self.flush(store, key, policy, now, false)
    }

    /// Writes held outcomes that are due at `now`, or all of them with `all` (the
    /// configuration is being retired: nothing would write them later).
    pub fn flush(
        &mut self,
        store: &mut impl SharedStore,
        key: &str,
        policy: &CompiledBreaker,
        now: u64,
        all: bool,
    ) -> Result<Vec<Transition>, StoreError> {
        if self.pending.is_empty() || !(all || self.due(Batching::of(policy), now)) {
            return Ok(Vec::new());
        }
        Ok(self.sync(store, key, policy, now, Then::Nothing)?.1)
    }

    /// Records a finished call: held back when it succeeded and the batch has room,
    /// written (with everything held before it) otherwise.
    pub fn record(
        &mut self,
        store: &mut impl SharedStore,
        key: &str,
        policy: &CompiledBreaker,
        outcome: Outcome,
        probe: bool,
        now: u64,
    ) -> Result<Vec<Transition>, StoreError> {
        if probe {
            return Ok(self.sync(store, key, policy, now, Then::Probe(outcome))?.1);
        }
        self.pending.push((outcome, now));
        if outcome.failed || outcome.slow || self.due(Batching::of(policy), now) {
            return Ok(self.sync(store, key, policy, now, Then::Nothing)?.1);
        }
        Ok(Vec::new())
    }

    /// One read-modify-write: held outcomes in order, then the admission or the
    /// probe's outcome. On success nothing is held any more and the phase is fresh.
    fn sync(
        &mut self,
        store: &mut impl SharedStore,
        key: &str,
        policy: &CompiledBreaker,
        now: u64,
        then: Then,
    ) -> Result<(Option<Admission>, Vec<Transition>), StoreError> {
        let pending = &self.pending;
        let result = update(store, key, |bytes| {
            let mut s = State::decode(policy.window, bytes);
            let mut changed = false;
            let mut transitions = Vec::new();
            for (outcome, at) in pending {
                let (c, t) = machine::record(&mut s, policy, *outcome, false, *at);
                changed |= c;
                transitions.extend(t);
            }
            let admission = match then {
                Then::Admit => {
                    let (a, c, t) = machine::admit(&mut s, policy, now);
                    changed |= c;
                    transitions.extend(t);
                    Some(a)
                }
                Then::Probe(outcome) => {
                    let (c, t) = machine::record(&mut s, policy, outcome, true, now);
                    changed |= c;
                    transitions.extend(t);
                    None
                }
                Then::Nothing => None,
            };
            let seen = Seen {
                phase: s.phase,
                open_until: s.open_until,
                at: now,
            };
            (changed.then(|| s.encode()), (admission, transitions, seen))
        });
        match result {
            Ok((admission, transitions, seen)) => {
                self.pending.clear();
                self.seen = Some(seen);
                Ok((admission, transitions))
            }
            Err(e) => {
                // The store is failing: keep the newest outcomes up to one batch,
                // and read the shared state again next time.
                let keep = Batching::of(policy).max_pending;
                let drop = self.pending.len().saturating_sub(keep);
                self.pending.drain(..drop);
                self.seen = None;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
