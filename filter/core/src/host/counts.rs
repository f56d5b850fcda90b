//! Counts a host holds for its worker's next tick ([`super::Metrics::add`]),
//! for a host whose every metric write is a call worth saving (Proxy-Wasm: one
//! VM per worker): a request's +1 and −1 on the in-flight gauge cancel out,
//! and a busy route's counter costs one call per tick instead of one per
//! request. Envoy's figures lag by at most one tick (50 ms).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Counts per metric id, summed until the next [`Counts::flush`], and whether
/// the host's timer runs to flush them.
#[derive(Debug, Default)]
pub struct Counts {
    pending: RefCell<HashMap<u32, i64>>,
    at_once: Cell<bool>,
    timer: Cell<bool>,
}

impl Counts {
    /// Adds `delta` to metric `id`'s count; once [`Counts::write_at_once`]
    /// was called, `write` hands it over now instead. The first count held
    /// while no timer runs calls `start` (the host starts its timer: counts
    /// are the host's to hand over; `start` says whether it runs now).
    pub fn add(
        &self,
        id: u32,
        delta: i64,
        write: impl FnOnce(u32, i64),
        start: impl FnOnce() -> bool,
    ) {
        if !self.at_once.get() && !self.timer.get() {
            // A host whose timer is refused writes counts at once from then on.
            self.timer.set(start());
        }
        if self.at_once.get() {
            write(id, delta);
        } else {
            *self.pending.borrow_mut().entry(id).or_insert(0) += delta;
        }
    }

    /// Notes whether the host's timer runs (the core asked for ticks, or
    /// stopped them).
    pub fn set_timer(&self, on: bool) {
        self.timer.set(on);
    }

    /// Whether the host's timer runs.
    pub fn timer(&self) -> bool {
        self.timer.get()
    }

    /// Hands every count that changed to `write` (one call per metric).
    pub fn flush(&self, mut write: impl FnMut(u32, i64)) {
        let counts = std::mem::take(&mut *self.pending.borrow_mut());
        for (id, delta) in counts {
            if delta != 0 {
                write(id, delta);
            }
        }
    }

    /// Whether counts wait for a flush.
    pub fn holds(&self) -> bool {
        !self.pending.borrow().is_empty()
    }

    /// No tick will flush again (the host refused one, or its configuration
    /// was replaced): every count so far goes to `write`, and later ones at
    /// once.
    pub fn write_at_once(&self, write: impl FnMut(u32, i64)) {
        self.flush(write);
        self.at_once.set(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_per_metric_and_flush_once_each_skipping_zeros() {
        let c = Counts::default();
        let mut now = Vec::new();
        let mut starts = 0;
        c.add(
            1,
            1,
            |i, d| now.push((i, d)),
            || {
                starts += 1;
                true
            },
        );
        c.add(
            1,
            2,
            |i, d| now.push((i, d)),
            || unreachable!("the timer runs"),
        );
        c.add(
            2,
            1,
            |i, d| now.push((i, d)),
            || unreachable!("the timer runs"),
        );
        c.add(
            2,
            -1,
            |i, d| now.push((i, d)),
            || unreachable!("the timer runs"),
        );
        assert!(now.is_empty());
        assert_eq!(starts, 1, "the first count started the timer");
        assert!(c.timer());
        assert!(c.holds());
        let mut out = Vec::new();
        c.flush(|i, d| out.push((i, d)));
        assert_eq!(out, vec![(1, 3)]);
        assert!(!c.holds());
    }

    #[test]
    fn after_write_at_once_counts_go_straight_through() {
        let c = Counts::default();
        c.add(1, 5, |_, _| unreachable!(), || false);
        assert!(!c.timer(), "refused: asked again with the next count");
        let mut out = Vec::new();
        c.write_at_once(|i, d| out.push((i, d)));
        c.add(
            2,
            1,
            |i, d| out.push((i, d)),
            || unreachable!("written at once"),
        );
        assert_eq!(out, vec![(1, 5), (2, 1)]);
        assert!(!c.holds());
    }
}
