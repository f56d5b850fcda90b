//! Admission and outcome recording: pure functions of (state, policy, time).

use meshguard_config::breaker::CompiledBreaker;

use super::state::{Phase, State};
use super::window::{FAILED, SLOW};

/// Whether a request may go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go; `probe` when it is one of the half-open probes.
    Allow {
        /// A half-open probe: its outcome decides the breaker.
        probe: bool,
    },
    /// Rejected; the breaker is in `phase`, retry in `retry_in_ns` (0: unknown).
    Reject {
        /// Open or half-open with all probes out.
        phase: Phase,
        /// Until the open period ends.
        retry_in_ns: u64,
    },
}

/// A change of phase, for the gauge, the counters and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: Phase,
    /// After.
    pub to: Phase,
    /// Why, in words.
    pub reason: String,
}

/// The outcome of one finished call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Counted as a failure (status in the failure set, reset, timeout...).
    pub failed: bool,
    /// Slower than the slow-call duration.
    pub slow: bool,
}

/// How long the next open period lasts: the base duration doubled for each trip
/// since the last close, capped.
pub fn open_duration(policy: &CompiledBreaker, trips: u32) -> u64 {
    policy
        .open_ns
        .checked_shl(trips.min(40))
        .unwrap_or(u64::MAX)
        .min(policy.max_open_ns)
        .max(policy.open_ns)
}

fn open(
    state: &mut State,
    policy: &CompiledBreaker,
    now: u64,
    from: Phase,
    reason: String,
) -> Transition {
    state.phase = Phase::Open;
    state.open_until = now.saturating_add(open_duration(policy, state.trips));
    state.trips = state.trips.saturating_add(1);
    state.probes_admitted = 0;
    state.probes_ok = 0;
    Transition {
        from,
        to: Phase::Open,
        reason,
    }
}

/// Decides whether a request may pass at `now`. Returns the admission, whether the
/// state changed (so must be written), and the transition if any.
pub fn admit(
    state: &mut State,
    policy: &CompiledBreaker,
    now: u64,
) -> (Admission, bool, Option<Transition>) {
    match state.phase {
        Phase::Closed => (Admission::Allow { probe: false }, false, None),
        Phase::Open if now < state.open_until => (
            Admission::Reject {
                phase: Phase::Open,
                retry_in_ns: state.open_until - now,
            },
            false,
            None,
        ),
        Phase::Open => {
            state.phase = Phase::HalfOpen;
            state.probes_admitted = 1;
            state.probes_ok = 0;
            let t = Transition {
                from: Phase::Open,
                to: Phase::HalfOpen,
                reason: "open period elapsed".into(),
            };
            (Admission::Allow { probe: true }, true, Some(t))
        }
        Phase::HalfOpen if state.probes_admitted < policy.probes => {
            state.probes_admitted += 1;
            (Admission::Allow { probe: true }, true, None)
        }
        Phase::HalfOpen => (
            Admission::Reject {
                phase: Phase::HalfOpen,
                retry_in_ns: 0,
            },
            false,
            None,
        ),
    }
}

/// Records a finished call. Returns whether the state changed and the transition.
/// Calls that started in another phase than the current one are ignored (late
/// completions after a trip, or non-probes finishing during half-open).
pub fn record(
    state: &mut State,
    policy: &CompiledBreaker,
    outcome: Outcome,
    probe: bool,
    now: u64,
) -> (bool, Option<Transition>) {
    match (state.phase, probe) {
        (Phase::Closed, false) => {
            // (`^` in place of `|` is the same: the two flags are different bits.)
            let flags =
                if outcome.failed { FAILED } else { 0 } | if outcome.slow { SLOW } else { 0 };
            state.window.record(flags, now);
            state.consecutive_failures = if outcome.failed {
                state.consecutive_failures.saturating_add(1)
            } else {
                0
            };
            (
                true,
                trip_reason(state, policy, now).map(|r| open(state, policy, now, Phase::Closed, r)),
            )
        }
        (Phase::HalfOpen, true) => {
            let failed = outcome.failed || (outcome.slow && policy.slow.is_some());
            if failed {
                let t = open(
                    state,
                    policy,
                    now,
                    Phase::HalfOpen,
                    "a half-open probe failed".into(),
                );
                return (true, Some(t));
            }
            state.probes_ok += 1;
            if state.probes_ok < policy.probes {
                return (true, None);
            }
            state.phase = Phase::Closed;
            state.trips = 0;
            state.consecutive_failures = 0;
            state.probes_admitted = 0;
            state.probes_ok = 0;
            state.window.clear();
            let reason = format!("{} half-open probe(s) succeeded", policy.probes);
            (
                true,
                Some(Transition {
                    from: Phase::HalfOpen,
                    to: Phase::Closed,
                    reason,
                }),
            )
        }
        _ => (false, None),
    }
}

fn trip_reason(state: &State, policy: &CompiledBreaker, now: u64) -> Option<String> {
    if let Some(n) = policy.consecutive {
        if state.consecutive_failures >= n {
            return Some(format!(
                "{} consecutive failures",
                state.consecutive_failures
            ));
        }
    }
    let t = state.window.totals(now);
    if t.calls < policy.minimum_calls || t.calls == 0 {
        return None;
    }
    if u64::from(t.failures) * 100 >= u64::from(policy.failure_rate) * u64::from(t.calls) {
        return Some(format!(
            "failure rate {}% over {} calls",
            u64::from(t.failures) * 100 / u64::from(t.calls),
            t.calls
        ));
    }
    if let Some(slow) = policy.slow {
        if u64::from(t.slow) * 100 >= u64::from(slow.rate_pct) * u64::from(t.calls) {
            return Some(format!(
                "slow-call rate {}% over {} calls",
                u64::from(t.slow) * 100 / u64::from(t.calls),
                t.calls
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests;
