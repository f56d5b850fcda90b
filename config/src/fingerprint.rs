//! Fingerprints of the parameters that give stored state its meaning.

/// FNV-1a 64 over the numbers that give stored state its meaning (a bucket's
/// limit, a breaker's window): state written under another fingerprint is not
/// reused.
pub fn fingerprint(numbers: &[u64]) -> u64 {
    numbers
        .iter()
        .flat_map(|n| n.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}
