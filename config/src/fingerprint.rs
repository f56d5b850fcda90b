//! Fingerprints of the parameters that give stored state its meaning.

/// FNV-1a 64 over the numbers that give stored state its meaning (a bucket's
/// limit, a breaker's window): state written under another fingerprint is not
/// reused.
pub fn fingerprint(numbers: &[u64]) -> u64 {
    fnv(numbers.iter().flat_map(|n| n.to_le_bytes()))
}

/// The same over byte strings, each prefixed with its length so that parts cannot
/// run together (a rollout's revision and variant names).
pub fn fingerprint_bytes(parts: &[&[u8]]) -> u64 {
    fnv(parts.iter().flat_map(|p| {
        (p.len() as u64)
            .to_le_bytes()
            .into_iter()
            .chain(p.iter().copied())
    }))
}

fn fnv(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
