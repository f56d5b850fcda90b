//! A canary that judges itself: per-worker counts folded on the tick into one
//! shared record per rollout, the sequential test and gates that judge each
//! variant against the baseline, the ramp, and the effective split every worker
//! routes by.
//!
//! - `mixture`: the anytime-valid mixture test on error (or slow-call) counts;
//! - `gates`: the classical z-test and success-rate floor;
//! - `rollout`: the shared record and [`rollout::fold`], the pure step applied inside
//!   each compare-and-swap;
//! - this module: a worker's side ([`RolloutRuntime`]): its counts since its last
//!   tick, the record it last read, and the split derived from it.

pub mod detector;
pub mod fleet;
#[cfg(test)]
mod fleet_sim;
mod gates;
pub mod mixture;
pub mod rollout;
#[cfg(test)]
mod sim;

use std::cell::{Cell, RefCell};

use meshguard_config::canary::{slices, CompiledCanary};
use meshguard_config::fleet::CompiledFleetService;
use meshguard_config::rollout::CompiledRollout;

use crate::decision::{Completion, Event, VariantStatus, VerdictInfo};
use crate::metrics::{CanaryState, FleetMode, Signal};
use crate::outcome::is_failure;
use crate::store::{update, SharedStore};
use rollout::{alpha_per_test, fold, Counts, Record};

/// What a worker last read of a rollout, and the split it routes by.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The record as last read (or fresh, before the first read).
    pub record: Record,
    /// Every variant's effective weight, basis points.
    pub weights: Vec<u32>,
    /// The split laid out from `weights` (see `meshguard_config::canary::slices`).
    pub slices: Vec<(u32, usize)>,
    /// Variants whose weight a verdict (or the config) took to 0: no rule or
    /// propagated header sends a request there any more.
    pub rolled_back: Vec<bool>,
    /// Nothing can change any more (every variant rolled back or promoted): the
    /// worker stops counting and reading.
    pub settled: bool,
}

/// A worker's side of one rollout.
#[derive(Debug)]
pub struct RolloutRuntime {
    /// Shared-data key of the record.
    pub key: String,
    /// Per variant (baseline first): what this worker counted since its last fold.
    pub pending: RefCell<Vec<Counts>>,
    /// What it last read.
    pub view: RefCell<View>,
    /// The status last reported (gauges are set only when it changes).
    reported: RefCell<Option<(Vec<VariantStatus>, Option<FleetMode>)>>,
    /// A fleet rollout's: the rollout this Envoy judges alone while the
    /// service is unreachable (the ramp held: the fleet's clock steps it).
    held: Option<CompiledRollout>,
    /// A fleet rollout's mode as the last tick read it.
    pub mode: Cell<Option<FleetMode>>,
    /// A fleet rollout: when the service last answered, as the last tick read
    /// it (0: never).
    pub answered: Cell<u64>,
    /// A fleet rollout whose fleet state was never read while the service is
    /// not yet unreachable: requests wait for it (see `Runtime::awaits_fleet`).
    pub awaiting: Cell<bool>,
}

impl RolloutRuntime {
    /// A worker's side of `policy`'s rollout, its record at `key`, nothing read yet.
    pub fn new(policy: &CompiledCanary, rollout: &CompiledRollout, key: String) -> Self {
        let n = policy.variants.len();
        let fleet = rollout.fleet.is_some();
        RolloutRuntime {
            key,
            pending: RefCell::new(vec![Counts::default(); n]),
            view: RefCell::new(view(Record::new(n), policy, rollout, None)),
            reported: RefCell::new(None),
            held: fleet.then(|| CompiledRollout {
                pause: true,
                ..rollout.clone()
            }),
            mode: Cell::new(fleet.then_some(FleetMode::Fleet)),
            answered: Cell::new(0),
            awaiting: Cell::new(fleet),
        }
    }

    /// Counts one finished request on variant `variant` (not a local reply).
    pub fn count(
        &self,
        rollout: &CompiledRollout,
        variant: usize,
        end: &Completion,
        grpc: Option<u32>,
        duration_ns: Option<u64>,
    ) {
        if self.view.borrow().settled {
            return;
        }
        let mut pending = self.pending.borrow_mut();
        let Some(c) = pending.get_mut(variant) else {
            return;
        };
        c.n = c.n.saturating_add(1);
        if let Some(a) = &rollout.analysis {
            c.errors = c.errors.saturating_add(u64::from(is_failure(
                &a.failures,
                end.code,
                grpc,
                end.flags,
            )));
            c.slow = c.slow.saturating_add(u64::from(
                a.slow_ns
                    .zip(duration_ns)
                    .is_some_and(|(limit, d)| d > limit),
            ));
        }
    }

    /// Whether the next tick has counts to fold (a settled rollout folds nothing).
    pub fn holds_work(&self) -> bool {
        !self.view.borrow().settled && self.pending.borrow().iter().any(|c| c.n > 0)
    }

    /// The tick at `now`: folds this worker's counts into the shared record (one
    /// read and, when something changed, one compare-and-swap) and routes by what it
    /// reads back. On a store failure the counts are kept for the next tick. A
    /// fleet rollout (with `service`) folds them into its link's outbox instead
    /// and routes by the fleet's state (see [`fleet::tick`]); `envoy` is the id
    /// a link made afresh gets.
    #[allow(clippy::too_many_arguments)]
    pub fn tick(
        &self,
        route: usize,
        policy: &CompiledCanary,
        rollout: &CompiledRollout,
        service: Option<&CompiledFleetService>,
        store: &mut impl SharedStore,
        now: u64,
        envoy: u64,
        events: &mut Vec<Event>,
    ) {
        if self.view.borrow().settled {
            return;
        }
        let batch = self.pending.borrow().clone();
        let result = match (&rollout.fleet, service, &self.held) {
            (Some(fleet), Some(service), Some(held)) => {
                let parts = fleet::Parts {
                    policy,
                    rollout,
                    fleet,
                    service,
                };
                fleet::tick(store, &self.key, parts, held, &batch, now, envoy).map(|t| {
                    self.mode.set(Some(t.mode));
                    self.awaiting.set(t.awaiting);
                    self.answered.set(t.answered);
                    (t.view, t.changes, t.corrupt, Some(t.settled))
                })
            }
            _ => self.tick_alone(policy, rollout, store, &batch, now),
        };
        let (rec, changes, corrupt, settled) = match result {
            Ok(r) => r,
            Err(e) => {
                events.push(Event::Warning(format!(
                    "meshguard: canary analysis state unavailable ({e:?}); counts kept for the next tick"
                )));
                return;
            }
        };
        self.pending
            .borrow_mut()
            .iter_mut()
            .for_each(|c| *c = Counts::default());
        if corrupt {
            events.push(Event::Warning(format!(
                "meshguard: canary analysis state {} was unreadable and started afresh",
                self.key
            )));
        }
        events.extend(
            changes
                .into_iter()
                .map(|change| Event::Rollout { route, change }),
        );
        *self.view.borrow_mut() = view(rec, policy, rollout, settled);
        let status = (self.status(rollout), self.mode.get());
        let mut reported = self.reported.borrow_mut();
        if reported.as_ref() != Some(&status) {
            events.push(Event::RolloutStatus {
                route,
                variants: status.0.clone(),
                fleet: status.1,
            });
            *reported = Some(status);
        }
    }

    /// A rollout judged by this Envoy alone: its counts folded into its record.
    #[allow(clippy::type_complexity)]
    fn tick_alone(
        &self,
        policy: &CompiledCanary,
        rollout: &CompiledRollout,
        store: &mut impl SharedStore,
        batch: &[Counts],
        now: u64,
    ) -> Result<(Record, Vec<rollout::Change>, bool, Option<bool>), crate::store::StoreError> {
        let n = policy.variants.len();
        update(store, &self.key, |bytes| {
            let stored = bytes.and_then(|b| Record::decode(b, n));
            let corrupt = bytes.is_some() && stored.is_none();
            let mut rec = stored.unwrap_or_else(|| Record::new(n));
            let changes = fold(&mut rec, rollout, batch, now);
            let new = rec.encode();
            let write = bytes != Some(new.as_slice());
            (write.then_some(new), (rec, changes, corrupt, None))
        })
    }

    /// Every variant's status as the worker last read it.
    pub fn status(&self, rollout: &CompiledRollout) -> Vec<VariantStatus> {
        let view = self.view.borrow();
        let analysis = rollout
            .analysis
            .as_ref()
            .map(|a| (a, alpha_per_test(a, view.record.variants.len())));
        view.weights
            .iter()
            .enumerate()
            .map(|(v, &weight)| {
                let judged = v.checked_sub(1).and_then(|i| view.record.variants.get(i));
                let evidence = |s: Signal| {
                    judged
                        .zip(analysis)
                        .map_or(0, |(j, (a, alpha))| j.permille(s, a, alpha))
                };
                let started = view.record.started;
                let secs = |ns: u64| ns.saturating_sub(started) / 1_000_000_000;
                VariantStatus {
                    weight,
                    state: judged.map(|_| view.record.state(rollout, v)),
                    evidence: [evidence(Signal::Errors), evidence(Signal::Slow)],
                    shadow: judged.and_then(|j| j.verdict).is_some_and(|d| d.shadow),
                    verdict: judged.and_then(|j| j.verdict).map(|d| VerdictInfo {
                        cause: d.cause.key(),
                        at_s: secs(d.at),
                        since_s: (d.since > 0).then(|| secs(d.since)),
                    }),
                }
            })
            .collect()
    }
}

/// The view of `record`; `settled` overrides the record's own (a fleet
/// rollout is settled when the fleet's state is, whatever this Envoy adds).
fn view(
    record: Record,
    policy: &CompiledCanary,
    rollout: &CompiledRollout,
    settled: Option<bool>,
) -> View {
    let weights = record.weights(policy, rollout);
    let rolled_back = (0..weights.len())
        // `v > 0` only says the baseline is never judged: its state is never
        // `RolledBack`, so `>=` here is an equivalent mutant.
        .map(|v| v > 0 && record.state(rollout, v) == CanaryState::RolledBack)
        .collect();
    View {
        slices: slices(weights.iter().copied()),
        settled: settled.unwrap_or_else(|| record.settled(rollout)),
        weights,
        rolled_back,
        record,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fake::FakeStore;
    use meshguard_config::load_json;
    use wasm_bindgen_test::wasm_bindgen_test;

    const SEC: u64 = 1_000_000_000;

    fn policy() -> CompiledCanary {
        let json = r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
            "variants":[{"name":"stable","weight":5000},{"name":"canary","weight":5000}],
            "revision":"r1","ramp":null,"analysis":{"minRequests":1000000}}}]}"#;
        load_json(json.as_bytes()).unwrap().routes[0]
            .canary
            .clone()
            .unwrap()
    }

    fn ok(code: u64) -> Completion {
        Completion {
            code,
            flags: 0,
            complete: true,
            now: Some(SEC),
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn counts_from_several_workers_are_folded_once_each_even_when_writes_conflict() {
        let p = policy();
        let r = p.rollout.clone().unwrap();
        let workers: Vec<RolloutRuntime> = (0..3)
            .map(|_| RolloutRuntime::new(&p, &r, "k".into()))
            .collect();
        let mut store = FakeStore::default();
        let mut events = Vec::new();
        let (mut sent, mut failed) = (0u64, 0u64);
        for tick in 1..=40u64 {
            for (i, w) in workers.iter().enumerate() {
                for j in 0..(3 + i as u64) {
                    let code = if (tick + j) % 7 == 0 { 503 } else { 200 };
                    w.count(&r, 1, &ok(code), None, Some(1));
                    w.count(&r, 0, &ok(200), None, Some(1));
                    sent += 1;
                    failed += u64::from(code == 503);
                }
                // Every fifth tick another worker wins the race more often than
                // the retries allow: the counts must wait for the next tick.
                store.conflicts = if tick % 5 == 0 { 20 } else { 1 };
                w.tick(
                    0,
                    &p,
                    &r,
                    None,
                    &mut store,
                    tick * 50_000_000,
                    1,
                    &mut events,
                );
            }
        }
        store.conflicts = 0;
        for w in &workers {
            w.tick(0, &p, &r, None, &mut store, 41 * 50_000_000, 1, &mut events);
        }
        let rec = Record::decode(&store.data["k"].0, 2).unwrap();
        assert_eq!(rec.variants[0].total.n, sent, "every canary request once");
        assert_eq!(rec.variants[0].total.errors, failed);
        assert_eq!(rec.baseline.n, sent);
        assert!(events.iter().any(
            |e| matches!(e, Event::Warning(w) if w.contains("counts kept for the next tick"))
        ));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_corrupt_record_is_reported_and_replaced() {
        let p = policy();
        let r = p.rollout.clone().unwrap();
        let w = RolloutRuntime::new(&p, &r, "k".into());
        let mut store = FakeStore::default();
        store.data.insert("k".into(), (vec![1, 2, 3], 1));
        let mut events = Vec::new();
        w.tick(0, &p, &r, None, &mut store, SEC, 1, &mut events);
        assert!(events.iter().any(
            |e| matches!(e, Event::Warning(m) if m.contains("unreadable and started afresh"))
        ));
        assert!(Record::decode(&store.data["k"].0, 2).is_some());
        assert_eq!(w.view.borrow().weights, vec![5_000, 5_000]);
    }

    fn slow_policy() -> CompiledCanary {
        let json = r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
            "variants":[{"name":"stable","weight":5000},{"name":"canary","weight":5000}],
            "revision":"r1","ramp":null,"analysis":{"slowCallMs":100}}}]}"#;
        load_json(json.as_bytes()).unwrap().routes[0]
            .canary
            .clone()
            .unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_request_counts_its_error_and_a_call_slower_than_the_limit_and_no_more() {
        let p = slow_policy();
        let r = p.rollout.clone().unwrap();
        let w = RolloutRuntime::new(&p, &r, "k".into());
        assert!(!w.holds_work(), "nothing counted yet");
        let limit = 100 * 1_000_000;
        w.count(&r, 1, &ok(503), None, Some(limit)); // an error, exactly at the limit: not slow
        w.count(&r, 1, &ok(503), None, Some(limit + 1)); // an error, slow
        w.count(&r, 1, &ok(200), None, Some(limit + 50)); // slow
        w.count(&r, 1, &ok(200), None, Some(limit - 1));
        w.count(&r, 0, &ok(200), None, None);
        let pending = w.pending.borrow().clone();
        assert_eq!(
            pending[1],
            Counts {
                n: 4,
                errors: 2,
                slow: 2
            }
        );
        assert_eq!(
            pending[0],
            Counts {
                n: 1,
                errors: 0,
                slow: 0
            }
        );
        assert!(w.holds_work());
        let mut store = FakeStore::default();
        let mut events = Vec::new();
        w.tick(0, &p, &r, None, &mut store, SEC, 1, &mut events);
        assert!(!w.holds_work(), "the counts were folded");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_first_tick_reports_the_status_once_and_a_fresh_key_is_not_corrupt() {
        let p = policy();
        let r = p.rollout.clone().unwrap();
        let w = RolloutRuntime::new(&p, &r, "k".into());
        let mut store = FakeStore::default();
        let mut events = Vec::new();
        w.tick(0, &p, &r, None, &mut store, SEC, 1, &mut events);
        assert!(
            !events.iter().any(|e| matches!(e, Event::Warning(_))),
            "an absent record is fresh, not corrupt: {events:?}"
        );
        let statuses: Vec<&Vec<VariantStatus>> = events
            .iter()
            .filter_map(|e| match e {
                Event::RolloutStatus { variants, .. } => Some(variants),
                _ => None,
            })
            .collect();
        assert_eq!(statuses.len(), 1, "{events:?}");
        assert_eq!(
            statuses[0].iter().map(|s| s.weight).collect::<Vec<_>>(),
            vec![5_000, 5_000]
        );
        assert_eq!(statuses[0][0].state, None, "the baseline has no state");
        assert!(statuses[0][1].state.is_some());
        assert_eq!(w.status(&r), *statuses[0]);
        // Nothing changed: the next tick reports nothing.
        let mut again = Vec::new();
        w.tick(0, &p, &r, None, &mut store, 2 * SEC, 1, &mut again);
        assert!(
            !again
                .iter()
                .any(|e| matches!(e, Event::RolloutStatus { .. })),
            "{again:?}"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_rolled_back_canary_is_marked_in_the_view_and_the_baseline_never_is() {
        let json = r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
            "variants":[{"name":"stable","weight":5000},{"name":"canary","weight":5000}],
            "revision":"r1","ramp":null,"analysis":{}}}]}"#;
        let p = load_json(json.as_bytes()).unwrap().routes[0]
            .canary
            .clone()
            .unwrap();
        let r = p.rollout.clone().unwrap();
        let w = RolloutRuntime::new(&p, &r, "k".into());
        assert_eq!(w.view.borrow().rolled_back, vec![false, false]);
        let mut store = FakeStore::default();
        let mut events = Vec::new();
        for tick in 1..=50u64 {
            for i in 0..100u64 {
                w.count(
                    &r,
                    1,
                    &ok(if i % 2 == 0 { 503 } else { 200 }),
                    None,
                    Some(1),
                );
                w.count(&r, 0, &ok(200), None, Some(1));
            }
            w.tick(0, &p, &r, None, &mut store, tick * SEC, 1, &mut events);
            if w.view.borrow().settled {
                break;
            }
        }
        let view = w.view.borrow();
        assert_eq!(view.rolled_back, vec![false, true], "{events:?}");
        assert_eq!(view.weights, vec![10_000, 0]);
        assert!(view.settled);
        drop(view);
        // A settled rollout counts and holds nothing more.
        w.count(&r, 1, &ok(503), None, Some(1));
        assert!(!w.holds_work());
        assert_eq!(w.pending.borrow()[1], Counts::default());
    }
}
