//! The sliding window of recent call outcomes.

use meshguard_config::breaker::{WindowKind, TIME_BUCKETS};

use crate::le::{u16_at, u32_at, u64_at};

/// Outcome flags of one call.
pub const FAILED: u8 = 1;
/// The call was slow.
pub const SLOW: u8 = 2;

/// Calls, failures and slow calls in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Calls.
    pub calls: u32,
    /// Failed calls.
    pub failures: u32,
    /// Slow calls.
    pub slow: u32,
}

/// A sliding window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// The last `entries.len()` calls as a ring of outcome flags.
    Calls {
        /// Next write position.
        head: u16,
        /// Valid entries.
        filled: u16,
        /// Flags per call.
        entries: Vec<u8>,
    },
    /// Ten buckets covering the last N seconds.
    Time {
        /// Bucket width in nanoseconds.
        width_ns: u64,
        /// `(bucket number since the epoch, calls, failures, slow)`.
        buckets: Vec<(u64, u32, u32, u32)>,
    },
}

impl Window {
    /// An empty window of `kind`.
    pub fn new(kind: WindowKind) -> Window {
        match kind {
            WindowKind::Calls(n) => Window::Calls {
                head: 0,
                filled: 0,
                entries: vec![0; n.clamp(1, 1000) as usize],
            },
            WindowKind::Seconds(s) => Window::Time {
                width_ns: (u64::from(s.max(1)) * 1_000_000_000 / u64::from(TIME_BUCKETS)).max(1),
                buckets: vec![(0, 0, 0, 0); TIME_BUCKETS as usize],
            },
        }
    }

    /// Adds one call's flags at `now`.
    pub fn record(&mut self, flags: u8, now: u64) {
        match self {
            Window::Calls {
                head,
                filled,
                entries,
            } => {
                let len = entries.len().max(1) as u16;
                if let Some(e) = entries.get_mut(usize::from(*head)) {
                    *e = flags;
                }
                *head = (*head + 1) % len;
                *filled = (*filled + 1).min(len);
            }
            Window::Time { width_ns, buckets } => {
                let epoch = now / *width_ns;
                let n = buckets.len().max(1) as u64;
                if let Some(b) = buckets.get_mut((epoch % n) as usize) {
                    if b.0 > epoch {
                        return; // older than the window (a late write): already gone
                    }
                    if b.0 != epoch {
                        *b = (epoch, 0, 0, 0);
                    }
                    // Saturating: a bucket read back from the store may hold anything.
                    b.1 = b.1.saturating_add(1);
                    b.2 = b.2.saturating_add(u32::from(flags & FAILED != 0));
                    b.3 = b.3.saturating_add(u32::from(flags & SLOW != 0));
                }
            }
        }
    }

    /// What the window holds at `now`.
    pub fn totals(&self, now: u64) -> Totals {
        match self {
            Window::Calls {
                filled, entries, ..
            } => {
                let live = entries.iter().take(usize::from(*filled));
                live.fold(Totals::default(), |mut t, f| {
                    t.calls += 1;
                    t.failures += u32::from(f & FAILED != 0);
                    t.slow += u32::from(f & SLOW != 0);
                    t
                })
            }
            Window::Time { width_ns, buckets } => {
                let epoch = now / *width_ns;
                let n = buckets.len() as u64;
                buckets
                    .iter()
                    .filter(|b| b.0 <= epoch && epoch - b.0 < n && b.1 > 0)
                    .fold(Totals::default(), |t, b| Totals {
                        calls: t.calls + b.1,
                        failures: t.failures + b.2,
                        slow: t.slow + b.3,
                    })
            }
        }
    }

    /// Forgets every call.
    pub fn clear(&mut self) {
        match self {
            Window::Calls {
                head,
                filled,
                entries,
            } => {
                *head = 0;
                *filled = 0;
                entries.iter_mut().for_each(|e| *e = 0);
            }
            Window::Time { buckets, .. } => buckets.iter_mut().for_each(|b| *b = (0, 0, 0, 0)),
        }
    }

    /// Appends the encoding (the kind is known from the policy).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Window::Calls {
                head,
                filled,
                entries,
            } => {
                out.extend_from_slice(&head.to_le_bytes());
                out.extend_from_slice(&filled.to_le_bytes());
                out.extend_from_slice(entries);
            }
            Window::Time { buckets, .. } => {
                for (e, c, f, s) in buckets {
                    out.extend_from_slice(&e.to_le_bytes());
                    out.extend_from_slice(&c.to_le_bytes());
                    out.extend_from_slice(&f.to_le_bytes());
                    out.extend_from_slice(&s.to_le_bytes());
                }
            }
        }
    }

    /// Decodes a window of `kind` from `bytes`; `None` when the size does not fit.
    pub fn decode(kind: WindowKind, bytes: &[u8]) -> Option<Window> {
        let mut w = Window::new(kind);
        match &mut w {
            Window::Calls {
                head,
                filled,
                entries,
            } => {
                if bytes.len() != 4 + entries.len() {
                    return None;
                }
                *head = u16_at(bytes, 0)?;
                *filled = u16_at(bytes, 2)?;
                let len = entries.len() as u16;
                if *head >= len || *filled > len {
                    return None;
                }
                entries.copy_from_slice(bytes.get(4..)?);
            }
            Window::Time { buckets, .. } => {
                if bytes.len() != 20 * buckets.len() {
                    return None;
                }
                for (b, chunk) in buckets.iter_mut().zip(bytes.chunks_exact(20)) {
                    *b = (
                        u64_at(chunk, 0)?,
                        u32_at(chunk, 8)?,
                        u32_at(chunk, 12)?,
                        u32_at(chunk, 16)?,
                    );
                }
            }
        }
        Some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    const SEC: u64 = 1_000_000_000;

    #[wasm_bindgen_test(unsupported = test)]
    fn a_count_window_keeps_only_the_last_n_calls() {
        let mut w = Window::new(WindowKind::Calls(4));
        for f in [FAILED, FAILED, 0, 0, 0, SLOW] {
            w.record(f, 0);
        }
        assert_eq!(
            w.totals(0),
            Totals {
                calls: 4,
                failures: 0,
                slow: 1
            }
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_time_window_forgets_calls_older_than_its_span() {
        let mut w = Window::new(WindowKind::Seconds(10));
        w.record(FAILED, 100 * SEC);
        w.record(0, 105 * SEC);
        assert_eq!(
            w.totals(105 * SEC),
            Totals {
                calls: 2,
                failures: 1,
                slow: 0
            }
        );
        // 10 s after the first call its bucket has expired.
        assert_eq!(
            w.totals(110 * SEC),
            Totals {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
        assert_eq!(w.totals(200 * SEC), Totals::default());
        // A bucket slot reused for a new epoch starts from zero.
        w.record(0, 200 * SEC);
        assert_eq!(w.totals(200 * SEC).calls, 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn windows_round_trip_and_reject_foreign_sizes() {
        for kind in [WindowKind::Calls(7), WindowKind::Seconds(30)] {
            let mut w = Window::new(kind);
            w.record(FAILED | SLOW, 3 * SEC);
            w.record(0, 4 * SEC);
            let mut bytes = Vec::new();
            w.encode(&mut bytes);
            assert_eq!(Window::decode(kind, &bytes), Some(w));
            assert_eq!(Window::decode(kind, &bytes[1..]), None);
        }
        assert_eq!(
            Window::decode(WindowKind::Calls(2), &[9, 0, 0, 0, 0, 0]),
            None,
            "head out of range"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_time_window_adds_slow_and_failed_calls_across_buckets() {
        let mut w = Window::new(WindowKind::Seconds(10));
        for f in [SLOW, SLOW | FAILED, FAILED, 0, SLOW] {
            w.record(f, 100 * SEC);
        }
        for f in [SLOW, FAILED] {
            w.record(f, 103 * SEC);
        }
        assert_eq!(
            w.totals(103 * SEC),
            Totals {
                calls: 7,
                failures: 3,
                slow: 4
            }
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stored_windows_at_their_bounds() {
        // A full count window (filled == its size) reads back; one claiming more
        // calls than it has room for does not.
        let mut w = Window::new(WindowKind::Calls(3));
        for f in [FAILED, 0, SLOW, 0] {
            w.record(f, 0);
        }
        let mut bytes = Vec::new();
        w.encode(&mut bytes);
        assert_eq!(Window::decode(WindowKind::Calls(3), &bytes), Some(w));
        let mut over = bytes.clone();
        over[2] = 4; // filled: 4 of 3
        assert_eq!(Window::decode(WindowKind::Calls(3), &over), None);
        // A time bucket with no calls counts nothing, whatever else it claims.
        let mut t = Window::new(WindowKind::Seconds(10));
        t.record(0, 100 * SEC);
        let mut bytes = Vec::new();
        t.encode(&mut bytes);
        let at = bytes
            .chunks_exact(20)
            .position(|c| c[8..12] == [1, 0, 0, 0])
            .unwrap()
            * 20;
        bytes[at + 8..at + 20].copy_from_slice(&[0, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0]);
        let forged = Window::decode(WindowKind::Seconds(10), &bytes).unwrap();
        assert_eq!(forged.totals(100 * SEC), Totals::default());
    }
}
