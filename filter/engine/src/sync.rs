//! The fleet sync, as the engine decides it: which worker syncs and what it
//! sends ([`Runtime::fleet_sync`]), the read a request waits for before the
//! first fleet state ([`Runtime::fleet_read`]; `request.rs` says when) and the answer
//! ([`Runtime::fleet_answer`]). The glue sends the call and hands the answer
//! back; everything that touches shared data happens here, through
//! `analysis::fleet`.

use meshguard_rls_proto::fleet::{RolloutSync, SyncRequest, SyncResponse};
use prost::Message;

use crate::analysis::fleet::{self, Parts};
use crate::analysis::RolloutRuntime;
use crate::decision::Event;
use crate::runtime::{Ids, Runtime};
use crate::store::SharedStore;

impl<I: Ids> Runtime<I> {
    /// Every fleet rollout not yet settled: its route index, runtime and parts.
    pub(crate) fn fleet_rollouts(
        &self,
    ) -> impl Iterator<Item = (usize, &RolloutRuntime, Parts<'_>)> {
        let service = self.fleet_service.as_ref();
        self.routes.iter().enumerate().filter_map(move |(i, r)| {
            let rt = &r.rollout.as_ref()?.state;
            let policy = r.route.canary.as_ref()?;
            let rollout = policy.rollout.as_ref()?;
            let parts = Parts {
                policy,
                rollout,
                fleet: rollout.fleet.as_ref()?,
                service: service?,
            };
            (!rt.view.borrow().settled).then_some((i, rt, parts))
        })
    }

    /// Whether some fleet rollout is not yet settled: the sync goes on.
    pub fn syncs_fleet(&self) -> bool {
        self.fleet_rollouts().next().is_some()
    }

    /// The sync this worker makes now: when one is due and no other worker's
    /// is in flight, every fleet rollout's batch (the one in flight again, or
    /// the outbox made into the next) in one call. `None`: nothing to send.
    pub fn fleet_sync(&self, store: &mut impl SharedStore, now: u64) -> Option<Vec<u8>> {
        let service = self.fleet_service.as_ref()?;
        self.fleet_rollouts().next()?;
        if !fleet::slot(store, &self.sync_key, service, self.owner.get(), now, true).ok()? {
            return None;
        }
        let rollouts: Vec<RolloutSync> = self
            .fleet_rollouts()
            .filter_map(|(_, rt, p)| fleet::outgoing(store, &rt.key, p).ok().flatten())
            .collect();
        if rollouts.is_empty() {
            // Nothing could be read: give the slot back for the next tick.
            let _ = fleet::slot(store, &self.sync_key, service, self.owner.get(), now, false);
            return None;
        }
        Some(self.request(rollouts))
    }

    /// A read of every fleet rollout's state, for a request waiting for it
    /// (no batch: the periodic sync sends those).
    pub fn fleet_read(&self) -> Vec<u8> {
        let rollouts = self
            .fleet_rollouts()
            .map(|(_, _, p)| RolloutSync {
                key: p.fleet.key.clone(),
                spec: p.fleet.spec.clone(),
                ..RolloutSync::default()
            })
            .collect();
        self.request(rollouts)
    }

    fn request(&self, rollouts: Vec<RolloutSync>) -> Vec<u8> {
        SyncRequest {
            envoy_name: self.envoy_name.borrow().clone(),
            rollouts,
        }
        .encode_to_vec()
    }

    /// The answer to a call sent at `sent` (`Err`: why there is none), at
    /// `now`: each rollout's batch acknowledged and its fleet state kept, then
    /// every rollout's view read again. `sync`: the call was this worker's
    /// sync (its slot is given back), not a request's read.
    pub fn fleet_answer(
        &self,
        store: &mut impl SharedStore,
        now: u64,
        sent: u64,
        answer: Result<&[u8], String>,
        sync: bool,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let decoded = answer.and_then(|bytes| {
            SyncResponse::decode(bytes).map_err(|_| "an unreadable answer".to_owned())
        });
        let error = match decoded {
            Ok(reply) => self.take(store, &reply, now, &mut events),
            Err(e) => Some(e),
        };
        // The slot is given back once the answer is taken, so the next sync
        // sends the next batch, not this one again.
        if let (true, Some(service)) = (sync, &self.fleet_service) {
            let _ = fleet::slot(store, &self.sync_key, service, self.owner.get(), now, false);
        }
        if self.sync_failing.replace(error.is_some()) != error.is_some() {
            events.push(Event::Warning(match &error {
                Some(e) => format!(
                    "meshguard: the fleet service did not answer ({e}); routing by the last fleet state, the counts kept for the next sync"
                ),
                None => "meshguard: the fleet service answers again".into(),
            }));
        }
        events.push(Event::FleetSync {
            duration_ms: now.saturating_sub(sent) / 1_000_000,
            error,
            now,
        });
        self.tick_rollouts(store, now, &mut events);
        events
    }

    /// Takes each rollout's part of `reply`; the first error, if any rollout
    /// could not be taken.
    fn take(
        &self,
        store: &mut impl SharedStore,
        reply: &SyncResponse,
        now: u64,
        events: &mut Vec<Event>,
    ) -> Option<String> {
        let mut error = None;
        for (route, rt, p) in self.fleet_rollouts() {
            let Some(answer) = reply.rollouts.iter().find(|a| a.key == p.fleet.key) else {
                continue;
            };
            match fleet::take(store, &rt.key, p, answer, now) {
                Ok(taken) => {
                    if let Some(e) = taken.error {
                        error.get_or_insert(format!("{}: {e}", p.fleet.key));
                    }
                    events.extend(
                        taken
                            .changes
                            .into_iter()
                            .map(|change| Event::Rollout { route, change }),
                    );
                }
                Err(e) => {
                    error.get_or_insert(format!("{}: shared data ({e:?})", p.fleet.key));
                }
            }
        }
        error
    }
}
