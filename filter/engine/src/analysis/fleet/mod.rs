//! A rollout judged by the fleet (`canary.fleet`): every Envoy sends its counts
//! to the fleet service, which folds each Envoy's batch into one record with the
//! same [`fold`](super::rollout::fold), so one test and one ramp clock judge the
//! whole fleet.
//!
//! Inside one Envoy, nothing changes for the request path: workers count as
//! they do for a rollout judged alone and fold their counts on their tick, with
//! one compare-and-swap, into the rollout's [`Link`] in shared data (its outbox)
//! instead of its record. One worker per sync interval (the [`SyncSlot`] says
//! which, and when) turns each outbox into a numbered batch and sends them all
//! in one call; the answer acknowledges them and brings the fleet's state, which
//! every worker routes by from its next tick.
//!
//! - `link`: the shared-data entries and their encoding;
//! - `wire`: the fleet API's messages to and from the engine's types;
//! - `service`: the service's side, the fold of many Envoys' batches;
//! - this module: a worker's side (fold into the link, claim the sync, make
//!   the call, take the answer) and the record a worker routes by.

pub mod link;
pub mod service;
pub mod wire;

use meshguard_config::canary::CompiledCanary;
use meshguard_config::fleet::CompiledFleetService;
use meshguard_config::raw::WhileUnreachable;
use meshguard_config::rollout::{CompiledFleet, CompiledRollout};
use meshguard_rls_proto::fleet::{LocalVerdict, RolloutState, RolloutSync};

use super::rollout::{fold, Cause, Change, Counts, Record, Verdict};
use crate::metrics::{CanaryState, FleetMode};
use crate::store::{update, SharedStore, StoreError};
use link::{Batch, Link, SyncSlot};

/// A sync whose answer has not come this long after its timeout is given up:
/// another worker may sync (its batch is sent again, the same).
pub const SYNC_GRACE_NS: u64 = 1_000_000_000;

/// What a worker's tick made of a fleet rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticked {
    /// The record to route by (see [`compose`]).
    pub view: Record,
    /// Changes this Envoy's own judging made (`whileUnreachable: local`).
    pub changes: Vec<Change>,
    /// The stored link was unreadable and started afresh.
    pub corrupt: bool,
    /// How the rollout is judged now.
    pub mode: FleetMode,
    /// The fleet settled it (every variant rolled back or promoted).
    pub settled: bool,
    /// No fleet state was ever read, and the service is not yet unreachable:
    /// a request should wait for it (see `Runtime::awaits_fleet`).
    pub awaiting: bool,
    /// When the service last answered, ns (0: never).
    pub answered: u64,
}

/// A rollout's compiled parts, as the fleet functions need them.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// The canary policy.
    pub policy: &'a CompiledCanary,
    /// Its rollout.
    pub rollout: &'a CompiledRollout,
    /// Its fleet scope.
    pub fleet: &'a CompiledFleet,
    /// The service.
    pub service: &'a CompiledFleetService,
}

impl Parts<'_> {
    fn variants(&self) -> usize {
        self.policy.variants.len()
    }
}

/// Whether the service counts as unreachable at `now` for this link: no answer
/// for `unreachable_ns` (counted from the link's making before the first).
pub fn unreachable(link: &Link, service: &CompiledFleetService, now: u64) -> bool {
    now.saturating_sub(link.answered.max(link.created)) > service.unreachable_ns
}

/// Creates the link at `key` when absent, before the first request: at
/// configure time, so no worker's counts can be lost to another creating it
/// (proxy-wasm's shared data has no create-if-absent).
pub fn prepare(
    store: &mut impl SharedStore,
    key: &str,
    variants: usize,
    envoy: u64,
    now: u64,
) -> Result<(), StoreError> {
    if store.get(key)?.0.is_none() {
        store.set(key, &Link::new(variants, envoy, now).encode(), None)?;
    }
    Ok(())
}

/// A worker's tick: adds its `batch` to the link's outbox (and, while the
/// service is unreachable with `whileUnreachable: local`, folds it into the
/// Envoy's own record) with one compare-and-swap, and reads back what to
/// route by. `envoy` is the id a fresh link gets (random).
pub fn tick(
    store: &mut impl SharedStore,
    key: &str,
    p: Parts<'_>,
    held: &CompiledRollout,
    batch: &[Counts],
    now: u64,
    envoy: u64,
) -> Result<Ticked, StoreError> {
    let mut out = None;
    with_link(
        store,
        key,
        p.variants(),
        Some((envoy, now)),
        &mut |link, absent, corrupt| {
            for (o, b) in link.outbox.iter_mut().zip(batch) {
                o.add(b);
            }
            let away = unreachable(link, p.service, now);
            let local = away && p.fleet.while_unreachable == WhileUnreachable::Local;
            let changes = if local {
                fold(&mut link.local, held, batch, now)
            } else {
                Vec::new()
            };
            let changed = batch.iter().any(|c| c.n > 0) || !changes.is_empty() || absent;
            out = Some(Ticked {
                view: compose(link, p.rollout, now),
                changes,
                corrupt,
                mode: match (away, local) {
                    (false, _) => FleetMode::Fleet,
                    (true, false) => FleetMode::Hold,
                    (true, true) => FleetMode::Local,
                },
                settled: link.fleet.as_ref().is_some_and(|f| f.settled(p.rollout)),
                awaiting: link.fleet.is_none() && !away,
                answered: link.answered,
            });
            changed || corrupt
        },
    )?;
    out.ok_or(StoreError::CasMismatch)
}

/// The one read-modify-write of a link (written once, not per caller: the
/// module's size). `f` changes the link (`absent`: made afresh; `corrupt`:
/// the stored bytes were unreadable) and says whether to write it. Without
/// `fresh` (an id and the time to make a link with), an absent or unreadable
/// link is left alone and `f` is not called.
fn with_link(
    store: &mut impl SharedStore,
    key: &str,
    n: usize,
    fresh: Option<(u64, u64)>,
    f: &mut dyn FnMut(&mut Link, bool, bool) -> bool,
) -> Result<(), StoreError> {
    update(store, key, |bytes| {
        let stored = bytes.and_then(|b| Link::decode(b, n));
        let corrupt = bytes.is_some() && stored.is_none();
        let mut link = match (stored, fresh) {
            (Some(l), _) => l,
            (None, Some((envoy, now))) => Link::new(n, envoy, now),
            (None, None) => return (None, ()),
        };
        let write = f(&mut link, bytes.is_none(), corrupt);
        (write.then(|| link.encode()), ())
    })
}

/// The record an Envoy routes by: the fleet's (or a fresh one before the first
/// answer), with the verdicts this Envoy reached alone added (rollback is the
/// safe direction) and `rollback: true` applied at once.
pub fn compose(link: &Link, rollout: &CompiledRollout, now: u64) -> Record {
    let mut rec = link
        .fleet
        .clone()
        .unwrap_or_else(|| Record::new(link.outbox.len()));
    for (j, mine) in rec.variants.iter_mut().zip(&link.local.variants) {
        let acted = |v: Option<Verdict>| v.is_some_and(|d| !d.shadow);
        if !acted(j.verdict) && acted(mine.verdict) {
            j.verdict = mine.verdict;
        }
        if rollout.rollback && !acted(j.verdict) {
            j.verdict = Some(Verdict {
                cause: Cause::Manual,
                at: now,
                shadow: false,
                since: 0,
            });
        }
    }
    rec
}

/// Claims the next sync for the worker `owner` at `now` (`claim`: true) when
/// one is due and none is in flight (a sync unanswered past its timeout and
/// [`SYNC_GRACE_NS`] is given up), or gives the worker's claim back (`claim`:
/// false; its sync is over, answered or failed). True when this worker must
/// sync now.
pub fn slot(
    store: &mut impl SharedStore,
    key: &str,
    service: &CompiledFleetService,
    owner: u64,
    now: u64,
    claim: bool,
) -> Result<bool, StoreError> {
    let patience = service
        .timeout_ms
        .saturating_mul(1_000_000)
        .saturating_add(SYNC_GRACE_NS);
    update(store, key, |bytes| {
        let mut slot = bytes.and_then(SyncSlot::decode).unwrap_or_default();
        if !claim {
            let mine = slot.owner == owner && slot.sent != 0;
            slot.sent = 0;
            return (mine.then(|| slot.encode()), false);
        }
        let busy = slot.sent != 0 && now < slot.sent.saturating_add(patience);
        if now < slot.next || busy {
            return (None, false);
        }
        slot = SyncSlot {
            next: now.saturating_add(service.sync_ns),
            owner,
            sent: now.max(1),
        };
        (Some(slot.encode()), true)
    })
}

/// This rollout's part of a sync: the batch in flight (sent again, the same),
/// or the outbox made into the next batch; a read (`seq` 0) when there is
/// nothing to send. `None` when the link is absent or unreadable (a tick makes
/// it afresh).
pub fn outgoing(
    store: &mut impl SharedStore,
    key: &str,
    p: Parts<'_>,
) -> Result<Option<RolloutSync>, StoreError> {
    let n = p.variants();
    let mut out = None;
    with_link(store, key, n, None, &mut |link, _, _| {
        let mut write = false;
        if link.inflight.is_none() {
            let local = unreported(link);
            if link.outbox.iter().any(|c| c.n > 0) || !local.is_empty() {
                link.seq = link.seq.saturating_add(1);
                let counts = std::mem::replace(&mut link.outbox, vec![Counts::default(); n]);
                link.inflight = Some(Batch {
                    seq: link.seq,
                    counts,
                    local,
                });
                write = true;
            }
        }
        let mut msg = RolloutSync {
            key: p.fleet.key.clone(),
            envoy: link.envoy,
            spec: p.fleet.spec.clone(),
            ..RolloutSync::default()
        };
        if let Some(b) = &link.inflight {
            msg.seq = b.seq;
            msg.counts = b.counts.iter().map(wire::counts_to_pb).collect();
            msg.local_verdicts = b
                .local
                .iter()
                .map(|(v, c)| LocalVerdict {
                    variant: u32::try_from(*v).unwrap_or(u32::MAX),
                    cause: wire::cause_to_pb(*c) as i32,
                })
                .collect();
        }
        out = Some(msg);
        write
    })?;
    Ok(out)
}

/// The verdicts this Envoy reached alone that the fleet's state does not hold.
fn unreported(link: &Link) -> Vec<(usize, Cause)> {
    link.local
        .variants
        .iter()
        .enumerate()
        .filter_map(|(i, j)| {
            let v = j.verdict.filter(|d| !d.shadow)?;
            let known = link
                .fleet
                .as_ref()
                .and_then(|f| f.variants.get(i))
                .is_some_and(|f| f.verdict.is_some_and(|d| !d.shadow));
            (!known).then_some((i + 1, v.cause))
        })
        .collect()
}

/// What taking an answer changed for one rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    /// Transitions of the record this Envoy routes by (states and steps), each
    /// with the fleet's reason.
    pub changes: Vec<Change>,
    /// The answer's error, when the service could not fold this rollout.
    pub error: Option<String>,
}

/// Takes the service's answer for one rollout at `now`: acknowledges the batch
/// in flight when the answer holds it, and keeps the newer of the fleet states
/// (never reversing a verdict or a step, whatever order answers arrive in).
pub fn take(
    store: &mut impl SharedStore,
    key: &str,
    p: Parts<'_>,
    answer: &RolloutState,
    now: u64,
) -> Result<Taken, StoreError> {
    let n = p.variants();
    if !answer.error.is_empty() {
        return Ok(Taken {
            changes: Vec::new(),
            error: Some(answer.error.clone()),
        });
    }
    let Some(state) = wire::mirror(answer, n) else {
        return Ok(Taken {
            changes: Vec::new(),
            error: Some(format!(
                "the answer's state has {} variants, this rollout has {n}",
                answer.variants.len() + 1
            )),
        });
    };
    let mut changes = Vec::new();
    with_link(store, key, n, None, &mut |link, _, _| {
        let before = compose(link, p.rollout, now);
        // Only an acknowledgement for this link's id: a link made afresh (a new
        // id, its numbers from 1 again) keeps its batch until its own comes.
        if answer.envoy == link.envoy
            && link
                .inflight
                .as_ref()
                .is_some_and(|b| b.seq <= answer.acked_seq)
        {
            link.inflight = None;
        }
        let (fleet, version) = merge(
            link.fleet.take(),
            link.version,
            state.clone(),
            answer.version,
        );
        link.fleet = Some(fleet);
        link.version = version;
        link.answered = now;
        let after = compose(link, p.rollout, now);
        changes = transitions(&before, &after, p, answer);
        true
    })?;
    Ok(Taken {
        changes,
        error: None,
    })
}

/// The newer of two fleet states (by the store's version; a record the store
/// made afresh, with another start, is newer), keeping every verdict and the
/// furthest step either holds.
fn merge(held: Option<Record>, held_version: u64, new: Record, version: u64) -> (Record, u64) {
    let Some(old) = held else {
        return (new, version);
    };
    let newer = version >= held_version || new.started != old.started;
    let (mut out, other, v) = if newer {
        (new, old, version)
    } else {
        (old, new, held_version)
    };
    for (j, o) in out.variants.iter_mut().zip(&other.variants) {
        // A verdict acted on wins over none and over a shadow one.
        let acted = |v: Option<Verdict>| v.is_some_and(|d| !d.shadow);
        if j.verdict.is_none() || (!acted(j.verdict) && acted(o.verdict)) {
            j.verdict = o.verdict.or(j.verdict);
        }
    }
    if other.step > out.step {
        out.step = other.step;
        out.step_since = other.step_since;
    }
    (out, v)
}

/// The changes between two records an Envoy routed by, as the log and the
/// transition counters show them, with the fleet's reason.
fn transitions(
    before: &Record,
    after: &Record,
    p: Parts<'_>,
    answer: &RolloutState,
) -> Vec<Change> {
    let mut out = Vec::new();
    if after.step > before.step {
        let step = usize::from(after.step);
        out.push(Change::Step {
            step,
            weight: p
                .rollout
                .ramp
                .as_ref()
                .and_then(|r| r.steps.get(step).copied())
                .unwrap_or(10_000),
            reason: "the fleet's ramp".into(),
        });
    }
    for v in 1..=after.variants.len() {
        let (from, to) = (before.state(p.rollout, v), after.state(p.rollout, v));
        if from == to || (from != CanaryState::Ramping && from != CanaryState::Holding) {
            continue;
        }
        let by = answer
            .variants
            .get(v - 1)
            .map(|s| s.decided_by.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or("the fleet service");
        out.push(Change::State {
            variant: v,
            from,
            to,
            reason: format!("the fleet's verdict, decided by {by}"),
        });
    }
    out
}

#[cfg(test)]
mod tests;
