//! The sticky-split hash: FNV-1a 64 over `salt 0x00 key`, then the SplitMix64
//! finaliser for good low bits. Chosen because it is tiny, has no platform- or
//! build-dependent state (unlike std's SipHash keys), and gives the same bucket on
//! every worker, every Envoy and every meshguard build: pinned by test vectors.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(state, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// SplitMix64's output function: a bijective mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 64-bit sticky hash of `key` under `salt`.
pub fn sticky_hash(salt: &[u8], key: &[u8]) -> u64 {
    mix64(fnv1a(fnv1a(fnv1a(FNV_OFFSET, salt), &[0]), key))
}

/// The split bucket (0..10000) of `key` under `salt`.
pub fn sticky_bucket(salt: &[u8], key: &[u8]) -> u32 {
    // The modulo bias of 2^64 mod 10000 is below 1e-15: irrelevant.
    (sticky_hash(salt, key) % 10_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    /// Pinned vectors, computed by an independent implementation of the same
    /// definition (FNV-1a 64 + SplitMix64 finaliser). If these change, every user of every deployment moves. Do not
    /// update them to make a test pass; a change here is a breaking release.
    #[wasm_bindgen_test(unsupported = test)]
    fn sticky_hash_is_pinned() {
        let vectors: [(&[u8], &[u8], u64, u32); 5] = [
            (b"web", b"user-1", 0xf86c_95eb_67e5_db9d, 9373),
            (b"web", b"user-2", 0x1fd6_3428_dba3_fa7b, 9387),
            (b"checkout", b"user-1", 0x4e9f_07a0_598f_83f9, 2761),
            (b"", b"", 0x25fc_6dd3_6ce0_4b20, 4608),
            (b"web", b"\xff\xfe\x00bytes", 0xbe2a_e2b4_e3f4_0cbc, 8124),
        ];
        for (salt, key, hash, bucket) in vectors {
            assert_eq!(
                sticky_hash(salt, key),
                hash,
                "{salt:?} {key:?}: {:#018x}",
                sticky_hash(salt, key)
            );
            assert_eq!(sticky_bucket(salt, key), bucket, "{salt:?} {key:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn salt_and_key_are_separated() {
        assert_ne!(sticky_hash(b"ab", b"c"), sticky_hash(b"a", b"bc"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn buckets_spread_evenly() {
        // 100k keys over 10 deciles: each within 5 sigma of 10k.
        let mut deciles = [0u32; 10];
        for i in 0..100_000u32 {
            deciles[(sticky_bucket(b"web", format!("user-{i}").as_bytes()) / 1000) as usize] += 1;
        }
        let sigma = (100_000f64 * 0.1 * 0.9).sqrt();
        for d in deciles {
            assert!((f64::from(d) - 10_000.0).abs() < 5.0 * sigma, "{deciles:?}");
        }
    }
}
