//! The fleet service's side: the batches of many Envoys folded into one stored
//! record with the same [`fold`] one Envoy's workers run, so the statistics of
//! one Envoy and of the fleet are one piece of code.
//!
//! **Why pooling stays valid.** Each batch is folded as its own batch, at its
//! own share (the errors of a batch, given their total, are the variant's with
//! probability `w` when both fail alike), so the product of the batches'
//! likelihood ratios is a martingale under the null in whatever order batches of
//! different Envoys arrive: Ville's inequality bounds the fleet's false
//! rollbacks by `alpha`, however many Envoys send and however their shares differ.
//!
//! **Exactly once.** A batch carries its Envoy's id and a sequence number; the
//! record's bookkeeping holds the last one folded per Envoy, and a batch whose
//! number is not above it is acknowledged without being folded again (a retried
//! call). The caller writes the record and the bookkeeping together, or neither.

use std::collections::HashMap;

use meshguard_config::rollout::CompiledRollout;

use crate::analysis::rollout::{fold, Cause, Change, Counts, Record, Verdict};
use crate::metrics::CanaryState;

/// One Envoy's batch for one rollout, as the service received it.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The Envoy's id.
    pub envoy: u64,
    /// Its name, for logs.
    pub name: &'a str,
    /// The batch's sequence number (0: no batch, the call only reads).
    pub seq: u64,
    /// Per variant, baseline first.
    pub counts: &'a [Counts],
    /// Verdicts the Envoy reached alone while the service was unreachable:
    /// (variant index, 1 for the first non-baseline variant; cause).
    pub local: &'a [(usize, Cause)],
}

/// What became of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folded {
    /// Folded into the record.
    Folded,
    /// Folded before (a retried call): acknowledged, not counted again.
    Duplicate,
    /// Nothing to fold (a read).
    Read,
    /// Not folded: its shape does not fit the spec (the Envoy must not count it
    /// as acknowledged).
    Rejected(String),
}

/// A transition a batch made, and the Envoy that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// What changed.
    pub change: Change,
    /// The Envoy whose batch made the change.
    pub by: String,
}

/// Folds `batches`, in arrival order, into `rec` at `now` (the store's clock),
/// with `seqs` the last batch folded per Envoy (updated here). Returns what
/// became of each batch and every transition, with its Envoy.
pub fn fold_batches(
    rec: &mut Record,
    seqs: &mut HashMap<u64, u64>,
    rollout: &CompiledRollout,
    batches: &[Batch<'_>],
    now: u64,
) -> (Vec<Folded>, Vec<Decided>) {
    let variants = rec.variants.len() + 1;
    let mut results = Vec::with_capacity(batches.len());
    let mut decided = Vec::new();
    for b in batches {
        let last = seqs.get(&b.envoy).copied().unwrap_or(0);
        let result = if b.seq == 0 {
            Folded::Read
        } else if b.seq <= last {
            Folded::Duplicate
        } else if b.counts.len() != variants {
            Folded::Rejected(format!(
                "counts for {} variants, the rollout has {variants}",
                b.counts.len()
            ))
        } else if let Some((v, _)) = b.local.iter().find(|(v, _)| *v == 0 || *v >= variants) {
            Folded::Rejected(format!(
                "a local verdict on variant {v}, which is not judged"
            ))
        } else {
            let changes = fold(rec, rollout, b.counts, now);
            let local = adopt_local(rec, rollout, b, now);
            decided.extend(changes.into_iter().chain(local).map(|change| Decided {
                change,
                by: b.name.to_owned(),
            }));
            seqs.insert(b.envoy, b.seq);
            Folded::Folded
        };
        results.push(result);
    }
    (results, decided)
}

/// Takes the batch's local verdicts into the record: rollback is the safe
/// direction, so a variant the Envoy rolled back on its own is rolled back for
/// the fleet (unless the fleet settled it first).
fn adopt_local(
    rec: &mut Record,
    rollout: &CompiledRollout,
    b: &Batch<'_>,
    now: u64,
) -> Vec<Change> {
    let shadow = rollout.analysis.as_ref().is_some_and(|a| a.shadow);
    let mut changes = Vec::new();
    for &(v, cause) in b.local {
        let from = rec.state(rollout, v);
        let open = !matches!(from, CanaryState::RolledBack | CanaryState::Promoted);
        let Some(j) = v.checked_sub(1).and_then(|i| rec.variants.get_mut(i)) else {
            continue;
        };
        if !open || j.verdict.is_some_and(|d| !d.shadow) {
            continue;
        }
        j.verdict = Some(Verdict {
            cause,
            at: now,
            shadow,
            since: 0,
        });
        let reason = format!(
            "{}: judged by {} on its own counts while the fleet service was unreachable",
            cause.name(),
            b.name
        );
        let to = rec.state(rollout, v);
        changes.push(if shadow {
            Change::Shadow { variant: v, reason }
        } else {
            Change::State {
                variant: v,
                from,
                to,
                reason,
            }
        });
    }
    changes
}

#[cfg(test)]
mod tests;
