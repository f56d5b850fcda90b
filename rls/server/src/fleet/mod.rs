//! The fleet service (`meshguard.fleet.v1.Fleet/Sync`, `proto/fleet.proto`):
//! the Envoys of a fleet send the canary counts they have not yet had
//! acknowledged; each rollout's batches are folded into its one record with the
//! engine's own pure fold (`meshguard_engine::fold_batches`), and every Envoy
//! gets the fleet's state back.
//!
//! **Stateless replicas.** State lives in the store (`store.rs`); a fold reads
//! the record, its version and the store's clock, folds, and writes only if the
//! version did not move (else it reads again). Any number of replicas serve
//! the same fleet.
//!
//! **Group commit.** A busy rollout gets a sync from every Envoy every 250 ms.
//! Within a replica, the batches that arrive for one rollout while its last
//! fold is being written wait and are folded together, each as its own batch,
//! in the next read-fold-write: one round trip to the store serves them all,
//! and replicas only conflict with one another.

pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshguard_config::canary::CompiledCanary;
use meshguard_config::rollout::compile_fleet_spec;
use meshguard_engine::{
    cause_from_pb, counts_from_pb, fold_batches, state_of, Cause, Change, Counts, Decided,
    FleetBatch, Folded, Label, Record,
};
use meshguard_rls_proto::fleet::fleet_server::Fleet;
use meshguard_rls_proto::fleet::{RolloutState, RolloutSync, SyncRequest, SyncResponse};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use store::Store;

/// Most rollouts one call may carry.
pub const MAX_ROLLOUTS: usize = 256;
/// Longest spec, bytes.
pub const MAX_SPEC: usize = 64 * 1024;
/// Compiled specs kept (the cache is emptied when full).
const MAX_SPECS: usize = 1024;
/// Read-fold-write attempts before a group's batches are answered with an error.
const MAX_ATTEMPTS: u32 = 16;
/// Most batches folded in one read-fold-write (the rest wait for the next).
const MAX_GROUP: usize = 256;
/// Longest rollout key, bytes.
const MAX_KEY: usize = 512;

/// A rollout's compiled spec.
struct Spec {
    route: String,
    policy: CompiledCanary,
}

impl Spec {
    fn variants(&self) -> usize {
        self.policy.variants.len()
    }
}

/// One Envoy's batch waiting to be folded, and where its answer goes.
struct Job {
    spec: Arc<Spec>,
    envoy: u64,
    name: String,
    seq: u64,
    counts: Vec<Counts>,
    local: Vec<(usize, Cause)>,
    answer: oneshot::Sender<RolloutState>,
}

/// The batches waiting for one rollout's next fold.
#[derive(Default)]
struct Queue {
    jobs: Mutex<Vec<Job>>,
    folding: AtomicBool,
}

/// The service.
pub struct FleetService {
    inner: Arc<Inner>,
}

/// What the service's folds share (a fold runs in a task of its own, so a
/// call given up by its client does not leave a rollout's queue unserved).
struct Inner {
    store: Store,
    ttl: Duration,
    delay: Duration,
    specs: Mutex<HashMap<String, Arc<Spec>>>,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
}

impl FleetService {
    /// A service over `store`, keeping records `ttl` after their last write,
    /// holding every answer `delay` (fault drills).
    pub fn new(store: Store, ttl: Duration, delay: Duration) -> Self {
        FleetService {
            inner: Arc::new(Inner {
                store,
                ttl,
                delay,
                specs: Mutex::new(HashMap::new()),
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Inner {
    fn spec(&self, text: &str) -> Result<Arc<Spec>, String> {
        if text.len() > MAX_SPEC {
            return Err(format!(
                "a spec of {} bytes (at most {MAX_SPEC})",
                text.len()
            ));
        }
        let mut specs = self.specs.lock().map_err(|_| "poisoned".to_string())?;
        if let Some(s) = specs.get(text) {
            return Ok(s.clone());
        }
        let (route, policy) = compile_fleet_spec(text.as_bytes()).map_err(|problems| {
            let all: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.reason))
                .collect();
            format!("invalid spec: {}", all.join("; "))
        })?;
        if specs.len() >= MAX_SPECS {
            specs.clear();
        }
        let spec = Arc::new(Spec { route, policy });
        specs.insert(text.to_owned(), spec.clone());
        Ok(spec)
    }

    fn queue(&self, key: &str) -> Arc<Queue> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.entry(key.to_owned()).or_default().clone()
    }

    /// Folds one rollout's part of a call (with whatever else waits for the
    /// same rollout) and answers with its state.
    async fn rollout(self: &Arc<Self>, name: &str, r: RolloutSync) -> RolloutState {
        let failed = |error: String| RolloutState {
            key: r.key.clone(),
            error,
            ..RolloutState::default()
        };
        if r.key.is_empty() || r.key.len() > MAX_KEY {
            return failed(format!("a key of {} bytes (1 to {MAX_KEY})", r.key.len()));
        }
        if let Some(c) = r
            .counts
            .iter()
            .find(|c| c.errors > c.requests || c.slow > c.requests)
        {
            return failed(format!(
                "counts with more errors ({}) or slow calls ({}) than requests ({})",
                c.errors, c.slow, c.requests
            ));
        }
        let spec = match self.spec(&r.spec) {
            Ok(s) => s,
            Err(e) => return failed(e),
        };
        let mut local = Vec::new();
        for v in &r.local_verdicts {
            match cause_from_pb(v.cause) {
                Some(c) => local.push((usize::try_from(v.variant).unwrap_or(usize::MAX), c)),
                None => return failed(format!("local verdict with cause {}", v.cause)),
            }
        }
        let (tx, rx) = oneshot::channel();
        let job = Job {
            spec,
            envoy: r.envoy,
            name: name.to_owned(),
            seq: r.seq,
            counts: r.counts.iter().map(|c| counts_from_pb(Some(c))).collect(),
            local,
            answer: tx,
        };
        let queue = self.queue(&r.key);
        queue
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(job);
        // The fold runs in a task of its own: a caller that gives up (its
        // Envoy's timeout) drops only its wait, never the queue's folding.
        if !queue.folding.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().drain(r.key.clone(), queue));
        }
        rx.await
            .unwrap_or_else(|_| failed("the fold was abandoned".into()))
    }

    /// Folds what waits in `queue`, at most [`MAX_GROUP`] batches at a time,
    /// answering each group as it is written, until the queue is empty (this
    /// task holds the queue's `folding` flag).
    async fn drain(self: Arc<Self>, key: String, queue: Arc<Queue>) {
        loop {
            loop {
                let jobs: Vec<Job> = {
                    let mut waiting = queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
                    let n = waiting.len().min(MAX_GROUP);
                    waiting.drain(..n).collect()
                };
                if jobs.is_empty() {
                    break;
                }
                self.fold(&key, jobs).await;
            }
            queue.folding.store(false, Ordering::Release);
            // A job pushed after the last take and before the flag dropped
            // found the flag still set and relies on this task: look once
            // more, and go on if it is there and no other task took over.
            let waiting = !queue
                .jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            if !waiting || queue.folding.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    /// One read-fold-write of `jobs` (retried while another replica wins),
    /// then every job answered.
    async fn fold(&self, key: &str, jobs: Vec<Job>) {
        let variants = jobs.first().map_or(0, |j| j.spec.variants());
        let mut fields: Vec<String> = vec!["ver".into(), "rec".into()];
        fields.extend((1..variants).map(|v| format!("by:{v}")));
        let first_envoy = fields.len();
        fields.extend(jobs.iter().map(|j| format!("e:{:016x}", j.envoy)));
        let mut outcome = Err("the store kept changing (too many writers)".to_string());
        for _ in 0..MAX_ATTEMPTS {
            match self.attempt(key, &jobs, &fields, first_envoy).await {
                Ok(Some(done)) => {
                    outcome = Ok(done);
                    break;
                }
                Ok(None) => continue,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        match outcome {
            Ok((states, decided)) => {
                for d in &decided {
                    log_decided(key, jobs.first().map(|j| &j.spec), d);
                }
                for (job, state) in jobs.into_iter().zip(states) {
                    let _ = job.answer.send(state);
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.answer.send(RolloutState {
                        key: key.to_owned(),
                        error: e.clone(),
                        ..RolloutState::default()
                    });
                }
            }
        }
    }

    /// Reads, folds every job's batch, writes; `None` when another writer came
    /// first (read again).
    #[allow(clippy::type_complexity)]
    async fn attempt(
        &self,
        key: &str,
        jobs: &[Job],
        fields: &[String],
        first_envoy: usize,
    ) -> Result<Option<(Vec<RolloutState>, Vec<Decided>)>, String> {
        let Some(first) = jobs.first() else {
            return Ok(Some((Vec::new(), Vec::new())));
        };
        let variants = first.spec.variants();
        let read = self.store.read(key, fields).await?;
        let field = |i: usize| read.fields.get(i).cloned().flatten();
        let version = field(0)
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let mut rec = match field(1) {
            None => Record::new(variants),
            Some(bytes) => Record::decode(&bytes, variants).ok_or_else(|| {
                "the stored record is unreadable (written by another version, or for other variants); it is left as it is".to_string()
            })?,
        };
        let mut decided_by: Vec<String> = (1..variants)
            .map(|v| {
                field(1 + v)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            })
            .collect();
        let mut seqs: HashMap<u64, u64> = HashMap::new();
        for (i, j) in jobs.iter().enumerate() {
            let seq = field(first_envoy + i)
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            seqs.entry(j.envoy).or_insert(seq);
        }
        let mut results = Vec::with_capacity(jobs.len());
        let mut decided = Vec::new();
        let mut dirty = field(1).is_none();
        for j in jobs {
            if j.spec.variants() != variants {
                results.push(Folded::Rejected("another spec's variants".into()));
                continue;
            }
            let batch = FleetBatch {
                envoy: j.envoy,
                name: &j.name,
                seq: j.seq,
                counts: &j.counts,
                local: &j.local,
            };
            let Some(rollout) = j.spec.policy.rollout.as_ref() else {
                results.push(Folded::Rejected("no rollout".into()));
                continue;
            };
            let (mut r, d) = fold_batches(&mut rec, &mut seqs, rollout, &[batch], read.now_ns);
            dirty |= r.contains(&Folded::Folded);
            decided.extend(d);
            results.push(r.pop().unwrap_or(Folded::Read));
        }
        for d in &decided {
            if let Some(v) = changed_variant(&d.change) {
                if let Some(slot) = decided_by.get_mut(v - 1) {
                    *slot = format!("{} ({})", d.by, reason_of(&d.change));
                }
            }
        }
        let mut new_version = version;
        // A read of a rollout nobody has counted for yet writes nothing (a
        // record is made by the first batch).
        let dirty = dirty && (field(1).is_some() || results.contains(&Folded::Folded));
        if dirty {
            let mut pairs: Vec<(String, Vec<u8>)> = vec![("rec".into(), rec.encode())];
            for (envoy, seq) in &seqs {
                pairs.push((format!("e:{envoy:016x}"), seq.to_string().into_bytes()));
            }
            for (v, by) in decided_by.iter().enumerate() {
                if !by.is_empty() {
                    pairs.push((format!("by:{}", v + 1), by.clone().into_bytes()));
                }
            }
            // A settled record (every variant rolled back or promoted) is kept
            // for good: an Envoy that starts months later must still route by it.
            let settled = first
                .spec
                .policy
                .rollout
                .as_ref()
                .is_some_and(|r| rec.settled(r));
            let ttl = (!settled).then_some(self.ttl);
            if !self.store.write(key, version, ttl, &pairs).await? {
                return Ok(None);
            }
            new_version = version.saturating_add(1);
        }
        let states = jobs
            .iter()
            .zip(results)
            .map(|(j, result)| {
                let rollout = j.spec.policy.rollout.as_ref();
                match (result, rollout) {
                    (Folded::Rejected(e), _) => RolloutState {
                        key: key.to_owned(),
                        error: e,
                        ..RolloutState::default()
                    },
                    (_, None) => RolloutState {
                        key: key.to_owned(),
                        error: "no rollout".into(),
                        ..RolloutState::default()
                    },
                    (_, Some(rollout)) => RolloutState {
                        key: key.to_owned(),
                        acked_seq: seqs.get(&j.envoy).copied().unwrap_or(0),
                        envoy: j.envoy,
                        version: new_version,
                        ..state_of(&rec, &j.spec.policy, rollout, &decided_by)
                    },
                }
            })
            .collect();
        Ok(Some((states, decided)))
    }
}

fn changed_variant(c: &Change) -> Option<usize> {
    match c {
        Change::State { variant, .. } | Change::Shadow { variant, .. } => Some(*variant),
        Change::Step { .. } => None,
    }
}

fn reason_of(c: &Change) -> &str {
    match c {
        Change::State { reason, .. }
        | Change::Shadow { reason, .. }
        | Change::Step { reason, .. } => reason,
    }
}

/// One log line per fleet transition, naming the Envoy whose batch made it.
fn log_decided(key: &str, spec: Option<&Arc<Spec>>, d: &Decided) {
    let variant = |v: usize| {
        spec.and_then(|s| s.policy.variants.get(v))
            .map_or("?".to_owned(), |x| x.name.clone())
    };
    let route = spec.map_or("?", |s| s.route.as_str());
    let line = match &d.change {
        Change::State {
            variant: v,
            from,
            to,
            reason,
        } => format!(
            "canary {route}/{}: {} -> {} ({reason}); decided by {}'s counts",
            variant(*v),
            from.label(),
            to.label(),
            d.by
        ),
        Change::Shadow { variant: v, reason } => format!(
            "canary {route}/{}: shadow verdict, would roll back ({reason}); decided by {}'s counts",
            variant(*v),
            d.by
        ),
        Change::Step {
            step,
            weight,
            reason,
        } => format!(
            "canary {route}/{}: ramp to step {} at {weight} bp ({reason}); decided by {}'s counts",
            variant(1),
            step + 1,
            d.by
        ),
    };
    println!("meshguard-fleet: {key}: {line}");
}

#[tonic::async_trait]
impl Fleet for FleetService {
    async fn sync(&self, request: Request<SyncRequest>) -> Result<Response<SyncResponse>, Status> {
        let req = request.into_inner();
        if req.rollouts.len() > MAX_ROLLOUTS {
            return Err(Status::invalid_argument(format!(
                "{} rollouts in one call (at most {MAX_ROLLOUTS})",
                req.rollouts.len()
            )));
        }
        let name = if req.envoy_name.is_empty() {
            "an unnamed Envoy".to_owned()
        } else {
            req.envoy_name.chars().take(128).collect()
        };
        // One rollout per call is the common case; several are folded one
        // after another (each still group-committed with other Envoys').
        let mut states = Vec::with_capacity(req.rollouts.len());
        for r in req.rollouts {
            states.push(self.inner.rollout(&name, r).await);
        }
        if let Some(down) = states.iter().find(|s| s.error.starts_with("redis:")) {
            // The store is down: the whole call fails (the Envoys send again).
            return Err(Status::unavailable(down.error.clone()));
        }
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Ok(Response::new(SyncResponse {
            rollouts: states,
            now_ns,
        }))
    }
}

#[cfg(test)]
mod tests;
