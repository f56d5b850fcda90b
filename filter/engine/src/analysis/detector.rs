//! The change detector (`method: changepoint`): an e-detector of
//! Shiryaev–Roberts type over the same likelihood ratios as the sequential test
//! ([`super::mixture`]), so a canary that turns bad after a long healthy run is
//! caught as fast as a fresh one (Shin, Ramdas & Rinaldo, e-detectors).
//!
//! Time is cut into windows of [`WINDOW_NS`]. For each relative risk `r` of the
//! grid, `R_r` starts at 0 and, in window `t`, becomes `(R_r + 1) · LR_r,t`,
//! `LR_r,t` being the product of the likelihood ratios of the window's batches
//! (a window without a batch has `LR = 1`). So `R_r` is the sum, over every
//! window `j` where a change might have begun, of the evidence gathered since
//! `j`: old healthy windows weigh no more than their own `+1` did, and evidence
//! that a change began recently is not held back by them.
//!
//! **The guarantee.** When the canary fails as the baseline does, each `R_r − t`
//! is a martingale starting at 0 (every `LR` has mean 1), so is their mean `M`,
//! and by Doob's inequality the chance that `M` reaches `A` within the first `T`
//! windows is at most `T / A`. With `A = T_h / alpha` for a horizon of `T_h`
//! windows, a healthy canary is falsely rolled back within the horizon with
//! probability at most `alpha`, and on average not before `A` windows
//! (`horizon / alpha` of wall-clock time). A change is caught once the evidence
//! gathered since it began reaches `A`: a threshold `ln(T_h)` higher on the log
//! scale than the sequential test's `1/alpha`, but the same after an hour of
//! health as after none.

use super::mixture::{log_mean_exp, GRID};

/// Length of a window: the time unit of the detector's `+1` and of its horizon.
pub const WINDOW_NS: u64 = 1_000_000_000;

/// One signal's detector state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detector {
    /// `ln R_r` for each `r` of the grid (`-inf` before the first window).
    pub log_r: [f64; GRID.len()],
    /// The last window counted (`now / WINDOW_NS`; 0 before the first).
    pub window: u64,
    /// `ln C`, a CUSUM of the batches' mixture likelihood ratios, kept only to
    /// estimate when a change began: `C = max(C, 1) · LR` per batch.
    pub cusum: f64,
    /// The last window in which the CUSUM fell back to 1 or below: the change
    /// began after it (0 before the first).
    pub calm: u64,
}

impl Default for Detector {
    fn default() -> Self {
        Detector {
            log_r: [f64::NEG_INFINITY; GRID.len()],
            window: 0,
            cusum: 0.0,
            calm: 0,
        }
    }
}

/// `ln(e^a + e^b)` without overflow (`a` may be `-inf`).
fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

impl Detector {
    /// Adds a batch folded at `now` (ns): the windows since the last one are
    /// counted (`+1` each), then the batch's likelihood ratios multiply in:
    /// the variant served `n_c` of the batch's `n_c + n_b` requests, with
    /// `e_c` errors there and `e_b` at the baseline.
    pub fn update(&mut self, now: u64, n_c: u64, e_c: u64, n_b: u64, e_b: u64) {
        let window = now / WINDOW_NS;
        if window > self.window {
            // Windows passed since the last batch: `R + k` for `k` of them (the
            // empty ones' `LR` is 1, so each only adds its `+1`).
            let k = if self.window == 0 {
                1
            } else {
                window - self.window
            };
            let log_k = (k as f64).ln();
            for l in &mut self.log_r {
                *l = log_add(*l, log_k);
            }
            self.window = window;
        }
        if n_c == 0 || n_b == 0 || e_c.saturating_add(e_b) == 0 {
            // No error on either side says nothing of a change (`LR = 1`);
            // the CUSUM stays where it was, and a window at 1 or below is calm.
            if self.cusum <= 0.0 {
                self.calm = window;
            }
            return;
        }
        let w = n_c as f64 / n_c.saturating_add(n_b) as f64;
        let (e_c, e) = (e_c as f64, e_c.saturating_add(e_b) as f64);
        let mut batch = [0.0; GRID.len()];
        for ((l, b), r) in self.log_r.iter_mut().zip(&mut batch).zip(GRID) {
            let d = r * w + 1.0 - w;
            *b = e_c * r.ln() - e * d.ln();
            *l += *b;
        }
        // The batch's mixture likelihood ratio, for the onset estimate.
        self.cusum = self.cusum.max(0.0) + log_mean_exp(&batch);
        if self.cusum <= 0.0 {
            self.calm = window;
        }
    }

    /// `ln M`, `M` the mean over the grid of `R_r` (`-inf` before the first window).
    pub fn log_m(&self) -> f64 {
        log_mean_exp(&self.log_r)
    }

    /// Whether `M` reached the threshold `A`, given as `ln A`.
    pub fn alarms(&self, log_a: f64) -> bool {
        self.log_m() >= log_a
    }

    /// Progress towards the threshold on a log scale, in thousandths: 0 while
    /// `M` is at most 1, 1000 at `A` (and beyond).
    pub fn permille(&self, log_a: f64) -> u32 {
        let p = self.log_m() / log_a;
        if p.is_nan() || p <= 0.0 {
            0
        } else {
            (p * 1000.0).min(1000.0) as u32
        }
    }

    /// Whether the stored state is one this code can have written.
    pub fn valid(&self) -> bool {
        self.log_r.iter().all(|l| !l.is_nan() && *l < f64::INFINITY) && self.cusum.is_finite()
    }
}

/// `ln A` for a horizon of `horizon_ns` and a false-alarm budget `alpha` over it:
/// `A = (horizon in windows) / alpha`.
pub fn log_threshold(horizon_ns: u64, alpha: f64) -> f64 {
    let windows = (horizon_ns / WINDOW_NS).max(1) as f64;
    windows.ln() - alpha.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::mixture::Mixture;
    use wasm_bindgen_test::wasm_bindgen_test;

    const S: u64 = WINDOW_NS;

    #[wasm_bindgen_test(unsupported = test)]
    fn empty_windows_add_one_each_and_the_first_window_starts_at_one() {
        let mut d = Detector::default();
        assert_eq!(d.log_m(), f64::NEG_INFINITY);
        d.update(100 * S, 10, 0, 10, 0);
        assert!(d.log_m().abs() < 1e-12, "R = 1 after the first window");
        d.update(100 * S + 5, 10, 0, 10, 0);
        assert!(d.log_m().abs() < 1e-12, "the same window adds nothing");
        d.update(103 * S, 0, 0, 0, 0);
        assert!((d.log_m() - 4f64.ln()).abs() < 1e-12, "three windows: +3");
        assert_eq!(d.window, 103);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn within_one_window_the_detector_moves_as_the_sequential_test_does() {
        let mut d = Detector::default();
        let mut m = Mixture::default();
        for (n_c, e_c, n_b, e_b) in [(50, 3, 950, 1), (40, 0, 960, 2), (60, 5, 940, 0)] {
            d.update(7 * S, n_c, e_c, n_b, e_b);
            m.update(n_c, e_c, n_b, e_b);
        }
        // R = 1 · LR: the same as the mixture's e-value.
        assert!((d.log_m() - m.log_e()).abs() < 1e-9);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn old_healthy_evidence_does_not_hold_back_a_late_change() {
        // An hour of healthy windows pushes the sequential test's LLR far below
        // 0; the detector's evidence stays near its +1s.
        let mut d = Detector::default();
        let mut m = Mixture::default();
        let mut t = 1;
        for _ in 0..3_600 {
            d.update(t * S, 50, 0, 950, 1);
            m.update(50, 0, 950, 1);
            t += 1;
        }
        assert!(m.log_e() < -20.0, "the test decayed: {}", m.log_e());
        let (mut late_d, mut late_m) = (0, 0);
        let log_a = log_threshold(3_600 * S, 0.01);
        while !d.alarms(log_a) || !m.rejects(0.01) {
            d.update(t * S, 50, 1, 950, 1);
            m.update(50, 1, 950, 1);
            t += 1;
            if !d.alarms(log_a) {
                late_d += 1;
            }
            if !m.rejects(0.01) {
                late_m += 1;
            }
            assert!(t < 100_000);
        }
        assert!(
            late_d * 3 < late_m,
            "detector {late_d} windows, test {late_m}"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_threshold_is_horizon_windows_over_alpha_and_progress_reads_it() {
        let log_a = log_threshold(3_600 * S, 0.01);
        assert!((log_a - 360_000f64.ln()).abs() < 1e-9);
        assert!(
            (log_threshold(0, 0.5) - 2f64.ln()).abs() < 1e-12,
            "at least one window"
        );
        let mut d = Detector::default();
        assert_eq!(d.permille(log_a), 0);
        d.log_r = [log_a / 2.0; GRID.len()];
        assert_eq!(d.permille(log_a), 500);
        d.log_r = [log_a * 2.0; GRID.len()];
        assert_eq!(d.permille(log_a), 1000);
        assert!(d.alarms(log_a));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_calm_window_is_the_last_one_before_the_evidence_grew() {
        let mut d = Detector::default();
        for t in 1..=10 {
            d.update(t * S, 50, 0, 950, 2);
        }
        assert_eq!(d.calm, 10, "healthy windows keep the CUSUM at 1");
        for t in 11..=20 {
            d.update(t * S, 50, 10, 950, 1);
        }
        assert!(d.log_m() > 5.0);
        assert_eq!(d.calm, 10, "the change began after window 10");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn log_add_never_overflows_whichever_side_is_larger() {
        assert_eq!(log_add(1_000.0, 0.0), 1_000.0);
        assert_eq!(log_add(0.0, 1_000.0), 1_000.0);
        assert_eq!(log_add(f64::NEG_INFINITY, 3.0), 3.0);
        assert!((log_add(0.0, 0.0) - 2f64.ln()).abs() < 1e-12);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_onset_cusum_adds_each_batchs_mixture_likelihood_ratio() {
        for (n_c, e_c, n_b, e_b) in [(50, 3, 950, 1), (10, 0, 990, 4), (500, 9, 500, 2)] {
            let mut d = Detector::default();
            let mut m = Mixture::default();
            d.update(S, n_c, e_c, n_b, e_b);
            m.update(n_c, e_c, n_b, e_b);
            let fresh = m.log_e();
            assert!(
                (d.cusum - fresh).abs() < 1e-9,
                "one batch: the CUSUM is the mixture's log e-value ({} vs {fresh})",
                d.cusum
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn windows_without_errors_on_either_side_are_calm_too() {
        let mut d = Detector::default();
        for t in 1..=10 {
            d.update(t * S, 50, 0, 950, 0);
        }
        assert_eq!(d.calm, 10, "no errors at all: calm");
        for t in 11..=15 {
            d.update(t * S, 50, 10, 950, 1);
        }
        for t in 16..=18 {
            d.update(t * S, 50, 0, 950, 0);
        }
        assert_eq!(
            d.calm, 10,
            "a quiet window after the change does not move its onset"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_state_with_nan_or_infinite_evidence_is_not_valid() {
        assert!(Detector::default().valid());
        let mut d = Detector::default();
        d.log_r[3] = f64::NAN;
        assert!(!d.valid());
        d.log_r[3] = f64::INFINITY;
        assert!(!d.valid());
        let c = Detector {
            cusum: f64::NAN,
            ..Detector::default()
        };
        assert!(!c.valid());
    }
}
