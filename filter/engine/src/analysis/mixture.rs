//! The anytime-valid test of "the variant fails more than the baseline", on counts.
//!
//! When both fail alike, each error of a batch comes from the variant with
//! probability `w`, the variant's share of the batch's requests (conditioning on
//! the share per batch keeps the test valid when the share changes: ramp steps,
//! sticky users). For a relative risk `r`, the variant's share of errors would be
//! `q = r·w / (r·w + 1 − w)`, and a batch with `e_c` errors at the variant and
//! `e_b` at the baseline adds `e_c·ln(q/w) + e_b·ln((1−q)/(1−w))` to that `r`'s
//! log-likelihood ratio. The average of `exp(LLR_r)` over a fixed grid of `r > 1`
//! with equal weights is a non-negative supermartingale that starts at 1 when both
//! fail alike (for Binomial errors it is a martingale; the exact conditional law,
//! hypergeometric, is more concentrated, which only lowers its mean), so by
//! Ville's inequality it ever reaches `1/α` with probability at most `α`, however
//! often it is looked at (Johari et al. 2017; Lindon & Malek 2022).
//!
//! With `D = r·w + 1 − w`: `q/w = r/D` and `(1−q)/(1−w) = 1/D`, so a batch adds
//! `e_c·ln r − (e_c + e_b)·ln D`.

/// The relative risks the test mixes over (equal weights).
pub const GRID: [f64; 12] = [
    1.25, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 50.0, 100.0, 300.0, 1000.0,
];

/// The mixture's state: one log-likelihood ratio per grid point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mixture {
    /// `LLR_r` for each `r` of [`GRID`].
    pub llr: [f64; GRID.len()],
}

/// `ln(mean_r exp(x_r))` over the grid, without overflow (a non-finite
/// largest term is returned as it is: `-inf` when every term is).
pub fn log_mean_exp(x: &[f64; GRID.len()]) -> f64 {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = x.iter().map(|l| (l - max).exp()).sum();
    max + sum.ln() - (GRID.len() as f64).ln()
}

impl Default for Mixture {
    fn default() -> Self {
        Mixture {
            llr: [0.0; GRID.len()],
        }
    }
}

impl Mixture {
    /// Adds one batch: the variant served `n_c` of its `n_c + n_b` requests, with
    /// `e_c` errors there and `e_b` at the baseline. A batch without errors, or
    /// without requests on one side, carries no information and changes nothing.
    pub fn update(&mut self, n_c: u64, e_c: u64, n_b: u64, e_b: u64) {
        // A shortcut, not a rule: such a batch adds exactly 0 below (`w` is 0 or
        // 1, or no errors), which is why turning an `||` here into `&&` survives
        // the tests (cargo-mutants).
        if n_c == 0 || n_b == 0 || e_c.saturating_add(e_b) == 0 {
            return;
        }
        let w = n_c as f64 / n_c.saturating_add(n_b) as f64;
        let (e_c, e) = (e_c as f64, e_c.saturating_add(e_b) as f64);
        for (llr, r) in self.llr.iter_mut().zip(GRID) {
            let d = r * w + 1.0 - w;
            *llr += e_c * r.ln() - e * d.ln();
        }
    }

    /// The natural log of the e-value `mean_r exp(LLR_r)` (0 at the start).
    pub fn log_e(&self) -> f64 {
        log_mean_exp(&self.llr)
    }

    /// Whether the evidence reached the threshold `1/alpha`.
    pub fn rejects(&self, alpha: f64) -> bool {
        self.log_e() >= -alpha.ln()
    }

    /// Progress towards the threshold on a log scale, in thousandths: 0 while the
    /// e-value is at most 1, 1000 at `1/alpha` (and beyond).
    pub fn permille(&self, alpha: f64) -> u32 {
        let p = self.log_e() / -alpha.ln();
        // (Float-to-int casts saturate, so a NaN or negative `p` would read 0
        // below as well: `||` vs `&&` here is an equivalent mutant.)
        if p.is_nan() || p <= 0.0 {
            0
        } else {
            (p * 1000.0).min(1000.0) as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn starts_at_one_and_ignores_batches_without_information() {
        let mut m = Mixture::default();
        assert_eq!(m.log_e(), 0.0);
        m.update(0, 0, 100, 5);
        m.update(5, 3, 0, 0);
        m.update(10, 0, 100, 0);
        assert_eq!(m, Mixture::default());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn errors_at_the_variant_raise_the_evidence_and_at_the_baseline_lower_it() {
        let mut bad = Mixture::default();
        bad.update(5, 3, 95, 0);
        assert!(bad.log_e() > 0.0);
        let mut good = Mixture::default();
        good.update(5, 0, 95, 3);
        assert!(good.log_e() < 0.0);
        // Errors in proportion to the share: every LLR moves down (a supermartingale
        // step) or stays.
        let mut fair = Mixture::default();
        fair.update(50, 5, 50, 5);
        assert!(fair.llr.iter().all(|l| *l <= 0.0), "{fair:?}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_increment_matches_the_binomial_likelihood_ratio() {
        // r = 2, w = 0.25: q = 0.5/1.25 = 0.4.
        let mut m = Mixture::default();
        m.update(25, 3, 75, 1);
        let q: f64 = 0.4;
        let w: f64 = 0.25;
        let expected = 3.0 * (q / w).ln() + (1.0 - q).ln() - (1.0 - w).ln();
        assert!(
            (m.llr[2] - expected).abs() < 1e-12,
            "{} vs {expected}",
            m.llr[2]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_large_difference_crosses_the_threshold_within_a_few_errors() {
        let mut m = Mixture::default();
        // 5% share, every variant error and no baseline error (bounded, so a
        // broken update fails here instead of looping).
        let batches = (1..=100)
            .find(|_| {
                m.update(5, 2, 95, 0);
                m.rejects(0.01)
            })
            .unwrap_or(101);
        assert!(batches <= 3, "{batches}");
        assert_eq!(m.permille(0.01), 1000);
        assert_eq!(Mixture::default().permille(0.01), 0);
        // Halfway to 1/alpha on the log scale reads 500.
        let half = Mixture {
            llr: [0.5 * 100f64.ln(); GRID.len()],
        };
        assert!((half.log_e() - 0.5 * 100f64.ln()).abs() < 1e-12);
        assert!(
            (499..=500).contains(&half.permille(0.01)),
            "{}",
            half.permille(0.01)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_e_value_has_mean_one_under_the_null_for_any_share() {
        // Exact expectation over one error: E[exp(increment)] = w·(r/D)·… = 1 per r.
        for w in [0.01, 0.05, 0.5, 0.9] {
            for r in GRID {
                let d = r * w + 1.0 - w;
                let mean = w * (r / d) + (1.0 - w) * (1.0 / d);
                assert!((mean - 1.0).abs() < 1e-12);
            }
        }
    }
}
