//! Random numbers for unkeyed splits and fresh sticky keys: SplitMix64, seeded once
//! per VM by the glue from the host's `random_get`.
//!
//! A host call per request would cost about a microsecond; this costs nanoseconds
//! and is statistically ample for traffic splitting (it is not used for anything
//! secret). Being seeded, it keeps every engine decision reproducible in tests.

use std::cell::Cell;

use crate::hash::mix64;

/// SplitMix64 generator.
#[derive(Debug)]
pub struct Rng {
    state: Cell<u64>,
}

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng {
            state: Cell::new(seed),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        let s = self.state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.state.set(s);
        mix64(s)
    }

    /// A fresh 128-bit key as 32 lowercase hex digits (a sticky cookie value).
    pub fn fresh_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let words = [self.next_u64(), self.next_u64()];
        let digits = b"0123456789abcdef";
        for (i, slot) in out.iter_mut().enumerate() {
            let word = words.get(i / 16).copied().unwrap_or(0);
            let nibble = (word >> ((i % 16) * 4)) & 0xf;
            *slot = digits.get(nibble as usize).copied().unwrap_or(b'0');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn different_seeds_give_different_streams_and_keys_are_hex() {
        let a = Rng::new(1);
        let b = Rng::new(2);
        assert_ne!(a.next_u64(), b.next_u64());
        let k = a.fresh_key();
        assert!(k
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a.fresh_key(), k);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rolls_are_uniform_over_the_bucket_space() {
        let r = Rng::new(42);
        let n = 100_000u32;
        let mut deciles = [0u32; 10];
        for _ in 0..n {
            deciles[((r.next_u64() % 10_000) / 1000) as usize] += 1;
        }
        let sigma = (f64::from(n) * 0.1 * 0.9).sqrt();
        for d in deciles {
            assert!(
                (f64::from(d) - f64::from(n) / 10.0).abs() < 5.0 * sigma,
                "{deciles:?}"
            );
        }
    }
}
