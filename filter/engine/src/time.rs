//! Time as the engine takes it: nanoseconds (since the Unix epoch for instants),
//! passed in by the caller, never read from a clock here.

/// Whole seconds in `ns`, rounded up: a client told to wait this long is never early.
pub fn ceil_seconds(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn seconds_round_up() {
        assert_eq!(ceil_seconds(0), 0);
        assert_eq!(ceil_seconds(1), 1);
        assert_eq!(ceil_seconds(1_000_000_000), 1);
        assert_eq!(ceil_seconds(1_000_000_001), 2);
        assert_eq!(ceil_seconds(u64::MAX), 18_446_744_074);
    }
}
