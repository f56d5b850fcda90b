//! The classical gates the practice uses, evaluated beside the sequential test:
//! a two-proportion z statistic (re-run at fixed intervals on cumulative counts,
//! which is what inflates its false-rollback rate) and an absolute success-rate
//! floor per interval.

/// The one-sided two-proportion z statistic of the variant's error rate above the
/// baseline's, with the pooled variance: `(p_c − p_b) / sqrt(p(1−p)(1/n_c + 1/n_b))`.
/// 0 when it is undefined (no requests on a side, no errors or only errors).
pub fn z_statistic(n_c: u64, e_c: u64, n_b: u64, e_b: u64) -> f64 {
    if n_c == 0 || n_b == 0 {
        return 0.0;
    }
    let (nc, nb) = (n_c as f64, n_b as f64);
    let pooled = (e_c + e_b) as f64 / (nc + nb);
    let var = pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / nb);
    if var <= 0.0 {
        return 0.0;
    }
    (e_c as f64 / nc - e_b as f64 / nb) / var.sqrt()
}

/// Whether an interval in which the variant served `n` requests with `e` errors
/// fell below the floor `min` (a fraction). An interval without requests is not
/// judged.
pub fn below_floor(n: u64, e: u64, min: f64) -> Option<bool> {
    (n > 0).then(|| ((n - e.min(n)) as f64 / n as f64) < min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn z_is_positive_when_the_variant_fails_more() {
        let z = z_statistic(1000, 20, 19000, 19);
        assert!(z > 5.0, "{z}");
        assert!(z_statistic(1000, 1, 19000, 19) < 0.5);
        assert!(z_statistic(1000, 0, 19000, 50) < 0.0);
        assert_eq!(z_statistic(0, 0, 10, 1), 0.0);
        assert_eq!(z_statistic(10, 0, 10, 0), 0.0);
        assert_eq!(z_statistic(10, 10, 10, 10), 0.0);
        // A textbook value: 10% of 100 against 5% of 100, pooled 7.5%.
        let z = z_statistic(100, 10, 100, 5);
        assert!((z - 1.3423).abs() < 1e-3, "{z}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_floor_is_judged_only_with_requests() {
        assert_eq!(below_floor(1000, 4, 0.995), Some(false));
        assert_eq!(below_floor(1000, 6, 0.995), Some(true));
        assert_eq!(
            below_floor(1000, 5, 0.995),
            Some(false),
            "exactly at the floor passes"
        );
        assert_eq!(below_floor(0, 0, 0.995), None);
        assert_eq!(below_floor(3, 9, 0.5), Some(true));
    }
}
