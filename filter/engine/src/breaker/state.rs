//! The whole state of one breaker and its byte encoding in shared data.

use meshguard_config::breaker::WindowKind;

use super::window::{Totals, Window};
use crate::le::{u32_at, u64_at};
use crate::metrics::Label;

const VERSION: u8 = 1;

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Traffic flows; outcomes are judged.
    Closed = 0,
    /// A few probes are let through.
    HalfOpen = 1,
    /// Traffic is rejected until `open_until`.
    Open = 2,
}

impl Phase {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> u64 {
        self as u64
    }
}

impl Label for Phase {
    const ALL: &'static [Phase] = &[Phase::Closed, Phase::HalfOpen, Phase::Open];

    /// Name used in logs and the `state` label.
    fn label(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::HalfOpen => "half_open",
            Phase::Open => "open",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Phase.
    pub phase: Phase,
    /// Trips since the last close (grows the open duration).
    pub trips: u32,
    /// End of the open period, ns.
    pub open_until: u64,
    /// Probes let through in this half-open period.
    pub probes_admitted: u32,
    /// Probes that succeeded in this half-open period.
    pub probes_ok: u32,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Recent outcomes.
    pub window: Window,
}

impl State {
    /// A closed breaker with an empty window.
    pub fn new(kind: WindowKind) -> State {
        State {
            phase: Phase::Closed,
            trips: 0,
            open_until: 0,
            probes_admitted: 0,
            probes_ok: 0,
            consecutive_failures: 0,
            window: Window::new(kind),
        }
    }

    /// Bytes for shared data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.push(VERSION);
        out.push(self.phase as u8);
        out.extend_from_slice(&self.trips.to_le_bytes());
        out.extend_from_slice(&self.open_until.to_le_bytes());
        out.extend_from_slice(&self.probes_admitted.to_le_bytes());
        out.extend_from_slice(&self.probes_ok.to_le_bytes());
        out.extend_from_slice(&self.consecutive_failures.to_le_bytes());
        self.window.encode(&mut out);
        out
    }

    /// Decodes stored bytes; anything malformed reads as a fresh closed breaker
    /// (a corrupt entry must not keep a route open).
    pub fn decode(kind: WindowKind, bytes: Option<&[u8]>) -> State {
        bytes
            .and_then(|b| Self::try_decode(kind, b))
            .unwrap_or_else(|| State::new(kind))
    }

    fn try_decode(kind: WindowKind, b: &[u8]) -> Option<State> {
        if *b.first()? != VERSION {
            return None;
        }
        let phase = match *b.get(1)? {
            0 => Phase::Closed,
            1 => Phase::HalfOpen,
            2 => Phase::Open,
            _ => return None,
        };
        Some(State {
            phase,
            trips: u32_at(b, 2)?,
            open_until: u64_at(b, 6)?,
            probes_admitted: u32_at(b, 14)?,
            probes_ok: u32_at(b, 18)?,
            consecutive_failures: u32_at(b, 22)?,
            window: Window::decode(kind, b.get(26..)?)?,
        })
    }
}

/// What a breaker's stored state says at some instant, for status and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Phase.
    pub phase: Phase,
    /// End of the open period, ns (meaningful when open).
    pub open_until: u64,
    /// What the window holds.
    pub totals: Totals,
}

/// The snapshot of stored breaker state `bytes` of `policy` at `now` (absent or
/// corrupt state reads as a fresh closed breaker, as everywhere).
pub fn snapshot(
    policy: &meshguard_config::breaker::CompiledBreaker,
    bytes: Option<&[u8]>,
    now: u64,
) -> Snapshot {
    let s = State::decode(policy.window, bytes);
    Snapshot {
        phase: s.phase,
        open_until: s.open_until,
        totals: s.window.totals(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn each_phase_has_its_gauge_value_label_and_index() {
        // The `state` gauge and label a dashboard reads, and the index of a
        // per-phase metric: closed 0, half-open 1, open 2.
        let seen: Vec<(u64, &str, usize)> = Phase::ALL
            .iter()
            .map(|p| (p.gauge(), p.label(), p.index()))
            .collect();
        assert_eq!(
            seen,
            vec![(0, "closed", 0), (1, "half_open", 1), (2, "open", 2)]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn state_round_trips_and_garbage_reads_as_closed() {
        let kind = WindowKind::Calls(5);
        let mut s = State::new(kind);
        s.phase = Phase::HalfOpen;
        s.trips = 3;
        s.open_until = u64::MAX - 1;
        s.probes_admitted = 2;
        s.window.record(1, 0);
        assert_eq!(State::decode(kind, Some(&s.encode())), s);
        assert_eq!(State::decode(kind, Some(&[1, 9, 0])), State::new(kind));
        assert_eq!(State::decode(kind, None), State::new(kind));
        // A window of another size (the policy changed) reads as fresh.
        assert_eq!(
            State::decode(WindowKind::Calls(6), Some(&s.encode())),
            State::new(WindowKind::Calls(6))
        );
    }
}
