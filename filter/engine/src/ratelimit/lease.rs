//! Token leases: a worker takes a few tokens at once from a shared bucket that is far
//! from empty, and spends them without touching shared data (the cost cut of the
//! bench issue: a read and a compare-and-swap per request and policy cost about
//! 1.2 µs).
//!
//! - A lease is only taken when the bucket holds at least 128 tokens
//!   ([`super::gcra::lease_size`]: a 64th of what is available, at most
//!   [`MAX_LEASE`]); near the limit every request is charged to the shared bucket
//!   alone, exactly as without leases.
//! - A lease lives [`LEASE_TTL_NS`]. Tokens left when it ends are given back with the
//!   key's next charge (never past a full bucket).
//! - Bounds, tested: leased tokens were charged when taken, so over any interval a
//!   key gets at most its limit plus the tokens leased in the [`LEASE_TTL_NS`] before
//!   it (at most `rate x 1 ms`, and at most `MAX_LEASE - 1` per worker). A worker
//!   holding unused tokens can make another worker reject early by at most
//!   `MAX_LEASE - 1` tokens per worker, and only while the bucket held at least 128.
//! - Each worker keeps [`LEASE_SLOTS`] leases per policy, indexed by key
//!   fingerprint; a key whose slot holds another key's live lease is charged without
//!   one. A slot reused after its lease ended forgets that lease's unused tokens (at
//!   most `MAX_LEASE - 1`, refilled at the policy's rate).

use super::gcra::Verdict;
use super::table::{charge_lease, Charge, LeaseRequest, Table};
use crate::store::SharedStore;

/// Leases a worker keeps per policy.
pub const LEASE_SLOTS: usize = 64;
/// How long a lease lives: 1 ms.
pub const LEASE_TTL_NS: u64 = 1_000_000;
/// Most tokens taken at once (one for the request, the rest leased).
pub const MAX_LEASE: u64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    fingerprint: u64,
    left: u64,
    expires: u64,
    /// The shared bucket's tokens after the lease was taken.
    remaining: u64,
    full_in_ns: u64,
}

/// One worker's leases for one policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leases {
    slots: Vec<Option<Lease>>,
}

impl Leases {
    fn slot(&mut self, fp: u64) -> Option<&mut Option<Lease>> {
        if self.slots.is_empty() {
            self.slots = vec![None; LEASE_SLOTS];
        }
        self.slots.get_mut((fp % LEASE_SLOTS as u64) as usize)
    }

    /// Unused leased tokens this worker holds for the key with fingerprint `fp`.
    pub fn held(&self, fp: u64) -> u64 {
        self.slots
            .get((fp % LEASE_SLOTS as u64) as usize)
            .and_then(|s| s.as_ref())
            .filter(|l| l.fingerprint == fp)
            .map_or(0, |l| l.left)
    }
}

/// Charges one request with key `key` (one token): see [`charge_leased_cost`].
#[cfg(test)]
pub fn charge_leased(
    leases: &mut Leases,
    store: &mut impl SharedStore,
    table: &Table,
    key: &[u8],
    now: u64,
) -> Charge {
    charge_leased_cost(leases, store, table, key, now, 1)
}

/// Charges one request with key `key` that costs `cost` tokens (at least 1): from
/// this worker's lease when it holds a live one with that many left, else from the
/// shared bucket (giving back what an ended lease left, and leasing more when the
/// bucket is far from empty and the request costs one token; a costlier request
/// takes its cost alone).
pub fn charge_leased_cost(
    leases: &mut Leases,
    store: &mut impl SharedStore,
    table: &Table,
    key: &[u8],
    now: u64,
    cost: u64,
) -> Charge {
    let cost = cost.max(1);
    let fp = table.fingerprint(key);
    let Some(slot) = leases.slot(fp) else {
        let own = LeaseRequest {
            refund: 0,
            max: cost,
            cost,
        };
        return charge_lease(store, table, fp, now, own);
    };
    let mut refund = 0;
    let mut may_lease = cost == 1;
    match slot {
        Some(l) if l.fingerprint == fp && l.left >= cost && now < l.expires => {
            l.left -= cost;
            let verdict = Verdict {
                allowed: true,
                new_tat: None,
                remaining: l.remaining + l.left,
                full_in_ns: l.full_in_ns,
                retry_in_ns: 0,
                granted: 0,
            };
            return Charge::Decided {
                verdict,
                overflow: false,
                cas_retries: 0,
                claimed: false,
            };
        }
        Some(l) if l.fingerprint == fp => {
            refund = l.left;
            *slot = None;
        }
        Some(l) => may_lease &= l.left == 0 || now >= l.expires,
        None => {}
    }
    let max = if may_lease { MAX_LEASE } else { cost };
    let request = LeaseRequest { refund, max, cost };
    let charge = charge_lease(store, table, fp, now, request);
    if let Charge::Decided {
        verdict,
        overflow: false,
        ..
    } = &charge
    {
        if verdict.granted > cost {
            *slot = Some(Lease {
                fingerprint: fp,
                left: verdict.granted - cost,
                expires: now.saturating_add(LEASE_TTL_NS),
                remaining: verdict.remaining,
                full_in_ns: verdict.full_in_ns,
            });
        }
    }
    // The request's own view: what the bucket holds plus what this worker holds.
    match charge {
        Charge::Decided {
            mut verdict,
            overflow,
            cas_retries,
            claimed,
        } => {
            verdict.remaining += verdict.granted.saturating_sub(cost);
            Charge::Decided {
                verdict,
                overflow,
                cas_retries,
                claimed,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests;
