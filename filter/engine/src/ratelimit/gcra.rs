//! A token bucket kept as a single timestamp (GCRA, the generic cell rate algorithm).
//!
//! With capacity `burst` and one token every `interval` nanoseconds, the bucket's
//! whole state is the *theoretical arrival time* `tat`: the bucket is full when
//! `tat <= now`, and holds `(now + burst*interval - tat) / interval` tokens otherwise.
//! Taking a token moves `tat` forward by one interval. Refill is implicit in the
//! passing of time, so correctness needs no ticks, and one 8-byte value is all a
//! compare-and-swap has to move.

/// Bucket parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Capacity in tokens (at least 1).
    pub burst: u64,
    /// Nanoseconds per token (at least 1).
    pub interval_ns: u64,
}

/// What one request did to a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The request may pass.
    pub allowed: bool,
    /// The new `tat` to store (`None`: nothing changed, as for a plain rejection).
    pub new_tat: Option<u64>,
    /// Whole tokens left after this request.
    pub remaining: u64,
    /// Nanoseconds until the bucket is full again.
    pub full_in_ns: u64,
    /// Nanoseconds until the request's cost in tokens is available (0 when allowed).
    pub retry_in_ns: u64,
    /// Tokens taken: the request's cost plus any leased to the worker (0: rejected).
    pub granted: u64,
}

/// Tokens a worker takes at once when `available` are left: one 64th of them, so a
/// lease never matters to a bucket near empty (below 128 tokens every request is
/// charged to the shared bucket alone), at most `max_lease`.
pub fn lease_size(available: u64, max_lease: u64) -> u64 {
    (available / 64).clamp(1, max_lease.max(1))
}

impl Bucket {
    fn tolerance(&self) -> u128 {
        u128::from(self.burst) * u128::from(self.interval_ns.max(1))
    }

    /// Takes one token at `now` from a bucket last left at `tat` (`None`: new, full).
    ///
    /// A `tat` further ahead than a whole bucket (only possible if the clock stepped
    /// backwards) is treated as an empty bucket, and that repair is written back even
    /// on a rejection: a clock step never costs a client more than one burst's worth
    /// of waiting, and never grants extra tokens.
    pub fn take(&self, tat: Option<u64>, now: u64) -> Verdict {
        self.take_up_to(tat, now, 0, 1, 1)
    }

    /// Like [`Bucket::take`] for a request that costs `cost` tokens (at least 1;
    /// rejected unless that many are available), but first gives back `refund`
    /// unused tokens (never past full), and takes up to `max_lease` tokens at once
    /// when the bucket is far from empty: [`lease_size`] of the tokens available,
    /// never fewer than `cost`. `granted` in the verdict says how many were taken
    /// (0 when rejected).
    pub fn take_up_to(
        &self,
        tat: Option<u64>,
        now: u64,
        refund: u64,
        cost: u64,
        max_lease: u64,
    ) -> Verdict {
        let cost = u128::from(cost.max(1));
        let t = u128::from(self.interval_ns.max(1));
        let tol = self.tolerance();
        let now_w = u128::from(now);
        let stored = u128::from(tat.unwrap_or(now));
        let repaired = stored > now_w + tol;
        let before = stored.max(now_w).min(now_w + tol);
        let tat = before.saturating_sub(u128::from(refund) * t).max(now_w);
        let clamp = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
        // Whole tokens available now: `tat + k*t - now <= tol`.
        let available = (tol - (tat - now_w)) / t;
        if available < cost {
            // A repair, or a refund that gave tokens back but fewer than the
            // request costs, is written; a plain rejection changes nothing.
            return Verdict {
                allowed: false,
                new_tat: (repaired || tat != before).then(|| clamp(tat)),
                remaining: 0,
                full_in_ns: clamp(tat - now_w),
                retry_in_ns: clamp(tat + cost * t - now_w - tol),
                granted: 0,
            };
        }
        let granted = u128::from(lease_size(clamp(available), max_lease)).max(cost);
        let new_tat = tat + granted * t;
        Verdict {
            allowed: true,
            new_tat: Some(clamp(new_tat)),
            remaining: clamp(available - granted),
            full_in_ns: clamp(new_tat - now_w),
            retry_in_ns: 0,
            granted: clamp(granted),
        }
    }

    /// Whether a bucket left at `tat` is full at `now` (and so may be forgotten
    /// without handing anyone tokens they did not already have).
    pub fn is_full(tat: u64, now: u64) -> bool {
        tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    const SEC: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * SEC;

    /// Sends `n` requests at `now`, returns how many passed and the final tat.
    fn burst_at(b: &Bucket, mut tat: Option<u64>, now: u64, n: u32) -> (u32, Option<u64>) {
        let mut ok = 0;
        for _ in 0..n {
            let v = b.take(tat, now);
            if v.allowed {
                ok += 1;
                tat = v.new_tat;
            }
        }
        (ok, tat)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_new_bucket_allows_exactly_the_burst() {
        let b = Bucket {
            burst: 10,
            interval_ns: SEC / 20,
        };
        let (ok, _) = burst_at(&b, None, T0, 25);
        assert_eq!(ok, 10);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refill_adds_one_token_per_interval() {
        let b = Bucket {
            burst: 10,
            interval_ns: SEC / 20,
        };
        let (_, tat) = burst_at(&b, None, T0, 10);
        // 49 ms later: no token yet; at 50 ms exactly one.
        assert!(!b.take(tat, T0 + 49_999_999).allowed);
        let (ok, _) = burst_at(&b, tat, T0 + SEC / 20, 5);
        assert_eq!(ok, 1);
        // After 1 s: 20 tokens accrued but capped at the burst of 10.
        let (ok, _) = burst_at(&b, tat, T0 + SEC, 30);
        assert_eq!(ok, 10);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn sustained_overload_admits_burst_plus_rate_times_duration() {
        let b = Bucket {
            burst: 10,
            interval_ns: SEC / 20,
        };
        let mut tat = None;
        let mut ok = 0u64;
        // 60 req/s (3x the rate) for 10 s, every 1/60 s.
        for i in 0..600u64 {
            let v = b.take(tat, T0 + i * SEC / 60);
            if v.allowed {
                ok += 1;
                tat = v.new_tat;
            }
        }
        // burst + rate * elapsed (599/60 s) = 10 + 199.67 -> 209 or 210.
        assert!((209..=210).contains(&ok), "{ok}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_long_idle_gap_refills_to_the_burst_and_no_more() {
        let b = Bucket {
            burst: 5,
            interval_ns: 3_600 * SEC,
        };
        let (_, tat) = burst_at(&b, None, T0, 5);
        let later = T0 + 365 * 24 * 3_600 * SEC;
        let (ok, _) = burst_at(&b, tat, later, 50);
        assert_eq!(ok, 5);
        // Even u64::MAX as now does not overflow.
        assert!(b.take(tat, u64::MAX).allowed);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_clock_step_backwards_costs_at_most_one_burst_of_waiting() {
        let b = Bucket {
            burst: 2,
            interval_ns: SEC,
        };
        let (_, tat) = burst_at(&b, None, T0, 2);
        // The clock jumps back an hour: the stored tat is far ahead; treat as empty.
        let back = T0 - 3_600 * SEC;
        let v = b.take(tat, back);
        assert!(!v.allowed);
        assert_eq!(
            v.new_tat,
            Some(back + 2 * SEC),
            "the repair is written back"
        );
        let tat = v.new_tat;
        assert_eq!(v.retry_in_ns, SEC);
        assert_eq!(v.full_in_ns, 2 * SEC);
        assert!(b.take(tat, back + SEC).allowed);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn numbers_reported_agree_with_what_happens_next() {
        let b = Bucket {
            burst: 3,
            interval_ns: 2 * SEC,
        };
        let v1 = b.take(None, T0);
        assert_eq!(
            (v1.allowed, v1.remaining, v1.full_in_ns),
            (true, 2, 2 * SEC)
        );
        let v2 = b.take(v1.new_tat, T0);
        let v3 = b.take(v2.new_tat, T0);
        assert_eq!((v3.remaining, v3.full_in_ns), (0, 6 * SEC));
        let v4 = b.take(v3.new_tat, T0);
        assert_eq!(
            (v4.allowed, v4.retry_in_ns, v4.new_tat),
            (false, 2 * SEC, None)
        );
        assert!(!b.take(v3.new_tat, T0 + v4.retry_in_ns - 1).allowed);
        assert!(b.take(v3.new_tat, T0 + v4.retry_in_ns).allowed);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_request_costing_more_than_is_left_waits_for_its_whole_cost() {
        let b = Bucket {
            burst: 10,
            interval_ns: SEC,
        };
        let v = b.take_up_to(None, T0, 0, 7, 1);
        assert_eq!((v.allowed, v.granted, v.remaining), (true, 7, 3));
        let tat = v.new_tat;
        let no = b.take_up_to(tat, T0, 0, 4, 1);
        assert_eq!((no.allowed, no.new_tat, no.granted), (false, None, 0));
        assert_eq!(no.retry_in_ns, SEC, "one more token makes four");
        assert!(!b.take_up_to(tat, T0 + SEC - 1, 0, 4, 1).allowed);
        let yes = b.take_up_to(tat, T0 + SEC, 0, 4, 1);
        assert_eq!((yes.allowed, yes.remaining), (true, 0));
        // Three left: a cost of 3 passes, and a lease never takes less than it.
        let three = b.take_up_to(tat, T0, 0, 3, 16);
        assert_eq!((three.allowed, three.granted), (true, 3));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_refund_too_small_for_the_cost_is_still_written_back() {
        let b = Bucket {
            burst: 10,
            interval_ns: SEC,
        };
        let empty = b.take_up_to(None, T0, 0, 10, 1).new_tat;
        let v = b.take_up_to(empty, T0, 2, 5, 1);
        assert!(!v.allowed);
        assert_eq!(v.new_tat, Some(T0 + 8 * SEC), "two tokens given back");
        assert_eq!(v.retry_in_ns, 3 * SEC);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn fullness_is_tat_not_after_now() {
        assert!(Bucket::is_full(T0, T0));
        assert!(!Bucket::is_full(T0 + 1, T0));
    }
}
