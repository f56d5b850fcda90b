//! A worker's side of a fleet rollout, against a small in-memory service that
//! folds with [`service::fold_batches`] as `meshguard-rls` does.

use std::collections::HashMap;

use meshguard_rls_proto::fleet::{RolloutState, SyncRequest, SyncResponse};
use prost::Message;
use wasm_bindgen_test::wasm_bindgen_test;

use super::*;
use crate::decision::{Completion, Event};
use crate::rng::Rng;
use crate::runtime::testing::{runtime, NoIds};
use crate::runtime::{Runtime, Vm};
use crate::store::fake::FakeStore;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * SEC;

fn config(analysis: &str, extra: &str) -> String {
    format!(
        r#"{{"schemaVersion":1,"fleetService":{{"cluster":"fleet","syncMs":250,"timeoutMs":100{extra}}},
        "routes":[{{"name":"web","canary":{{
            "variants":[{{"name":"stable","weight":5000}},{{"name":"canary","weight":5000}}],
            "revision":"r1","analysis":{analysis},"fleet":{{"whileUnreachable":"local"}}}}}}]}}"#
    )
}

/// The fleet service, in memory: one record per key, folded by the engine.
#[derive(Default)]
struct Service {
    records: HashMap<String, (Record, HashMap<u64, u64>, u64)>,
    /// Calls handled.
    calls: u32,
}

impl Service {
    fn sync(&mut self, request: &[u8], now: u64) -> Vec<u8> {
        self.calls += 1;
        let req = SyncRequest::decode(request).unwrap();
        let mut out = SyncResponse::default();
        for r in req.rollouts {
            let (_, policy) =
                meshguard_config::rollout::compile_fleet_spec(r.spec.as_bytes()).unwrap();
            let rollout = policy.rollout.clone().unwrap();
            let n = policy.variants.len();
            let (rec, seqs, version) = self
                .records
                .entry(r.key.clone())
                .or_insert_with(|| (Record::new(n), HashMap::new(), 0));
            let counts: Vec<Counts> = r
                .counts
                .iter()
                .map(|c| wire::counts_from_pb(Some(c)))
                .collect();
            let local: Vec<(usize, Cause)> = r
                .local_verdicts
                .iter()
                .map(|v| (v.variant as usize, wire::cause_from_pb(v.cause).unwrap()))
                .collect();
            let b = service::Batch {
                envoy: r.envoy,
                name: &req.envoy_name,
                seq: r.seq,
                counts: &counts,
                local: &local,
            };
            let (res, _) = service::fold_batches(rec, seqs, &rollout, &[b], now);
            if res[0] == service::Folded::Folded {
                *version += 1;
            }
            out.rollouts.push(RolloutState {
                key: r.key,
                acked_seq: seqs.get(&r.envoy).copied().unwrap_or(0),
                envoy: r.envoy,
                version: *version,
                ..wire::state_of(rec, &policy, &rollout, &[])
            });
        }
        out.encode_to_vec()
    }
}

/// One Envoy: its workers' runtimes over one shared store.
struct Envoy {
    store: FakeStore,
    workers: Vec<Runtime<NoIds>>,
}

impl Envoy {
    fn new(json: &str, workers: u64, now: u64) -> Envoy {
        Envoy::numbered(json, workers, now, 0)
    }

    /// Envoy `id` (its VMs' ids and random bits differ from other Envoys').
    fn numbered(json: &str, workers: u64, now: u64, id: u64) -> Envoy {
        let mut store = FakeStore::default();
        let workers: Vec<Runtime<NoIds>> = (0..workers)
            .map(|w| {
                let rt = runtime(json);
                rt.prepare(
                    &mut store,
                    Vm {
                        owner: 100 + w + 1000 * id,
                        secret: [crate::hash::mix64(id + 1), 2],
                        now,
                    },
                );
                rt
            })
            .collect();
        Envoy { store, workers }
    }

    /// Worker `w` counts one request on `variant`.
    fn count(&self, w: usize, variant: usize, failed: bool, now: u64) {
        let route = &self.workers[w].routes[0];
        let config = route
            .route
            .canary
            .as_ref()
            .unwrap()
            .rollout
            .as_ref()
            .unwrap();
        let end = Completion {
            code: if failed { 503 } else { 200 },
            flags: 0,
            complete: true,
            now: Some(now),
        };
        route
            .rollout
            .as_ref()
            .unwrap()
            .state
            .count(config, variant, &end, None, Some(1));
    }

    fn tick(&mut self, now: u64) -> Vec<Event> {
        let mut events = Vec::new();
        for w in &self.workers {
            events.extend(w.tick(&mut self.store, now));
        }
        events
    }

    /// Every worker tries to sync; the calls made.
    fn syncs(&mut self, now: u64) -> Vec<(usize, Vec<u8>)> {
        let mut calls = Vec::new();
        for (i, w) in self.workers.iter().enumerate() {
            if let Some(m) = w.fleet_sync(&mut self.store, now) {
                calls.push((i, m));
            }
        }
        calls
    }

    fn answer(
        &mut self,
        w: usize,
        sent: u64,
        now: u64,
        answer: Result<&[u8], String>,
    ) -> Vec<Event> {
        self.workers[w].fleet_answer(&mut self.store, now, sent, answer, true)
    }

    fn weights(&self, w: usize) -> Vec<u32> {
        self.workers[w].routes[0]
            .rollout
            .as_ref()
            .unwrap()
            .state
            .view
            .borrow()
            .weights
            .clone()
    }

    fn link(&mut self) -> Link {
        let key = self.workers[0].routes[0]
            .rollout
            .as_ref()
            .unwrap()
            .state
            .key
            .clone();
        Link::decode(&self.store.data[&key].0, 2).unwrap()
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn one_worker_of_an_envoy_syncs_per_interval_and_a_timed_out_sync_is_taken_over() {
    let json = config("{}", "");
    let mut e = Envoy::new(&json, 3, T0);
    e.tick(T0);
    let first = e.syncs(T0);
    assert_eq!(first.len(), 1, "one worker claims the sync");
    assert!(
        e.syncs(T0 + 300 * MS).is_empty(),
        "none while it is in flight"
    );
    // Its answer never comes: after the timeout (100 ms) and the grace (1 s),
    // another worker may sync.
    assert!(e.syncs(T0 + 1_050 * MS).is_empty());
    let second = e.syncs(T0 + 1_200 * MS);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].1, first[0].1, "the same batch, sent again");
    // The late answer to the first call changes nothing of the slot: the
    // second sync is still in flight.
    let mut svc = Service::default();
    let late = svc.sync(&first[0].1, T0);
    e.answer(first[0].0, T0, T0 + 1_210 * MS, Ok(&late));
    if first[0].0 != second[0].0 {
        assert!(e.syncs(T0 + 1_220 * MS).is_empty());
    }
    // The second is answered: the next is due one interval after it started.
    let ans = svc.sync(&second[0].1, T0 + 1_200 * MS);
    e.answer(second[0].0, T0 + 1_200 * MS, T0 + 1_250 * MS, Ok(&ans));
    assert!(e.syncs(T0 + 1_300 * MS).is_empty());
    assert_eq!(e.syncs(T0 + 1_460 * MS).len(), 1);
}

#[wasm_bindgen_test(unsupported = test)]
fn counts_reach_the_service_exactly_once_through_lost_requests_lost_answers_and_retries() {
    let json = config(r#"{"minRequests":1000000}"#, "");
    let mut envoys: Vec<Envoy> = (0..3).map(|i| Envoy::numbered(&json, 2, T0, i)).collect();
    let mut svc = Service::default();
    let rng = Rng::new(42);
    let mut counted = [0u64; 2];
    let mut failed = [0u64; 2];
    let mut now = T0;
    for step in 0..400u64 {
        now += 50 * MS;
        for e in envoys.iter_mut() {
            for w in 0..2 {
                for _ in 0..(rng.next_u64() % 4) {
                    let v = (rng.next_u64() % 2) as usize;
                    let bad = rng.next_u64().is_multiple_of(10);
                    e.count(w, v, bad, now);
                    counted[v] += 1;
                    failed[v] += u64::from(bad);
                }
            }
            e.tick(now);
            for (w, m) in e.syncs(now) {
                match rng.next_u64() % 6 {
                    // The request is lost.
                    0 => {
                        e.answer(w, now, now + 100 * MS, Err("timeout".into()));
                    }
                    // The answer is lost (the service folded it).
                    1 => {
                        svc.sync(&m, now);
                        e.answer(w, now, now + 100 * MS, Err("timeout".into()));
                    }
                    // Sent twice (a proxy's retry): both fold attempts, one answer.
                    2 => {
                        svc.sync(&m, now);
                        let a = svc.sync(&m, now);
                        e.answer(w, now, now + 5 * MS, Ok(&a));
                    }
                    // The answer is never delivered at all (the stream that
                    // carried it ended): the slot times out.
                    3 if step % 7 == 0 => {
                        svc.sync(&m, now);
                    }
                    _ => {
                        let a = svc.sync(&m, now);
                        e.answer(w, now, now + 5 * MS, Ok(&a));
                    }
                }
            }
        }
    }
    // The network heals: every Envoy syncs until nothing is left to send.
    for _ in 0..40 {
        now += 2 * SEC;
        for e in envoys.iter_mut() {
            e.tick(now);
            for (w, m) in e.syncs(now) {
                let a = svc.sync(&m, now);
                e.answer(w, now, now + 5 * MS, Ok(&a));
            }
        }
    }
    for e in envoys.iter_mut() {
        let l = e.link();
        assert!(
            l.inflight.is_none() && l.outbox.iter().all(|c| c.n == 0),
            "{l:?}"
        );
    }
    let (rec, _, _) = svc.records.values().next().unwrap();
    assert_eq!(rec.baseline.n, counted[0], "every baseline count once");
    assert_eq!(
        rec.variants[0].total.n, counted[1],
        "every canary count once"
    );
    assert_eq!(rec.baseline.errors, failed[0]);
    assert_eq!(rec.variants[0].total.errors, failed[1]);
    assert!(svc.calls > 300, "{}", svc.calls);
}

#[wasm_bindgen_test(unsupported = test)]
fn every_envoy_routes_by_the_fleet_verdict_once_its_sync_brings_it() {
    let json = config("{}", "");
    let mut a = Envoy::numbered(&json, 2, T0, 1);
    let mut b = Envoy::numbered(&json, 2, T0, 2);
    let mut svc = Service::default();
    let mut now = T0;
    // Envoy a sees a failing canary; Envoy b sees no canary traffic at all.
    for _ in 0..10 {
        now += 250 * MS;
        for i in 0..10 {
            a.count(0, 1, i % 2 == 0, now);
            a.count(1, 0, false, now);
        }
        a.tick(now);
        b.tick(now);
        for e in [&mut a, &mut b] {
            for (w, m) in e.syncs(now) {
                let ans = svc.sync(&m, now);
                e.answer(w, now, now + MS, Ok(&ans));
            }
        }
    }
    for w in 0..2 {
        assert_eq!(a.weights(w), vec![10_000, 0], "worker {w} of a");
        assert_eq!(
            b.weights(w),
            vec![10_000, 0],
            "worker {w} of b: the fleet's verdict"
        );
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn unreachable_the_envoy_holds_or_judges_alone_and_reports_its_verdict_when_the_service_returns() {
    for local in [false, true] {
        let mut json = config("{}", r#","unreachableAfterMs":1000"#);
        if !local {
            json = json.replace("\"local\"", "\"hold\"");
        }
        let mut e = Envoy::new(&json, 1, T0);
        let mut svc = Service::default();
        let mut now = T0;
        // One answer, then the service is gone for 10 s while the canary fails.
        e.tick(now);
        for (w, m) in e.syncs(now) {
            let ans = svc.sync(&m, now);
            e.answer(w, now, now + MS, Ok(&ans));
        }
        let mut modes = Vec::new();
        for _ in 0..40 {
            now += 250 * MS;
            for i in 0..10 {
                e.count(0, 1, i % 2 == 0, now);
                e.count(0, 0, false, now);
            }
            e.tick(now);
            for (w, _) in e.syncs(now) {
                e.answer(w, now, now + 100 * MS, Err("unavailable".into()));
            }
            modes.push(
                e.workers[0].routes[0]
                    .rollout
                    .as_ref()
                    .unwrap()
                    .state
                    .mode
                    .get(),
            );
        }
        assert_eq!(modes[0], Some(FleetMode::Fleet));
        let away = if local {
            FleetMode::Local
        } else {
            FleetMode::Hold
        };
        assert_eq!(modes.last().copied().flatten(), Some(away));
        let rolled = e.weights(0) == vec![10_000, 0];
        assert_eq!(rolled, local, "only a local judge rolls back alone");
        // The service returns: the held counts (and a local verdict) reach it.
        let mut seen = 0;
        for _ in 0..8 {
            now += 250 * MS;
            e.tick(now);
            for (w, m) in e.syncs(now) {
                let ans = svc.sync(&m, now);
                e.answer(w, now, now + MS, Ok(&ans));
                seen += 1;
            }
        }
        assert!(seen > 0);
        let (rec, _, _) = svc.records.values().next().unwrap();
        assert_eq!(
            rec.variants[0].total.n, 400,
            "every count of the outage, once"
        );
        assert!(rec.variants[0].verdict.is_some(), "local {local}");
        assert_eq!(e.weights(0), vec![10_000, 0]);
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn an_older_answer_never_takes_a_verdict_or_a_step_back() {
    let mut rec = Record::new(2);
    rec.step = 2;
    rec.step_since = 5;
    rec.variants[0].verdict = Some(Verdict {
        cause: Cause::Errors,
        at: 1,
        shadow: false,
        since: 0,
    });
    let older = Record::new(2);
    let (kept, v) = merge(Some(rec.clone()), 9, older.clone(), 7);
    assert_eq!(
        (kept.step, kept.variants[0].verdict, v),
        (2, rec.variants[0].verdict, 9)
    );
    // A newer state missing what the held one had (a store that lost data)
    // still keeps it.
    let (newer, v) = merge(Some(rec.clone()), 9, older, 12);
    assert_eq!(
        (newer.step, newer.variants[0].verdict, v),
        (2, rec.variants[0].verdict, 12)
    );
    assert_eq!(merge(None, 0, rec.clone(), 3), (rec, 3));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_corrupt_link_starts_afresh_under_a_new_identity_and_says_so() {
    let json = config("{}", "");
    let mut e = Envoy::new(&json, 1, T0);
    let key = e.workers[0].routes[0]
        .rollout
        .as_ref()
        .unwrap()
        .state
        .key
        .clone();
    e.store.data.insert(key.clone(), (vec![9, 9, 9], 1));
    e.count(0, 1, false, T0);
    let events = e.tick(T0 + SEC);
    assert!(events
        .iter()
        .any(|ev| matches!(ev, Event::Warning(w) if w.contains("unreadable and started afresh"))));
    let l = e.link();
    assert_eq!(l.outbox[1].n, 1, "the tick's counts are in the fresh link");
    assert_ne!(l.envoy, 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_request_waits_for_the_first_fleet_state_only_until_the_service_counts_as_unreachable() {
    let json = config("{}", r#","unreachableAfterMs":1000"#);
    let mut e = Envoy::new(&json, 1, T0);
    e.tick(T0);
    assert!(e.workers[0].awaits_fleet());
    let read = SyncRequest::decode(e.workers[0].fleet_read().as_slice()).unwrap();
    assert_eq!(read.rollouts.len(), 1);
    assert_eq!(read.rollouts[0].seq, 0, "a read carries no batch");
    let mut svc = Service::default();
    let ans = svc.sync(&e.workers[0].fleet_read(), T0);
    let events = e.workers[0].fleet_answer(&mut e.store, T0 + MS, T0, Ok(&ans), false);
    assert!(events
        .iter()
        .any(|ev| matches!(ev, Event::FleetSync { error: None, .. })));
    assert!(!e.workers[0].awaits_fleet(), "the state is known");
    // Another Envoy whose service never answers stops waiting after 1 s.
    let mut f = Envoy::new(&json, 1, T0);
    f.tick(T0 + 500 * MS);
    assert!(f.workers[0].awaits_fleet());
    f.tick(T0 + 1_100 * MS);
    assert!(!f.workers[0].awaits_fleet());
}

#[wasm_bindgen_test(unsupported = test)]
fn an_acknowledgement_for_another_id_leaves_the_batch_in_flight() {
    let json = config(r#"{"minRequests":1000000}"#, "");
    let mut e = Envoy::new(&json, 1, T0);
    e.count(0, 1, false, T0);
    e.tick(T0);
    let (w, m) = e.syncs(T0).pop().expect("a sync");
    let mut svc = Service::default();
    let mut answer = SyncResponse::decode(svc.sync(&m, T0).as_slice()).unwrap();
    // The link was made afresh meanwhile (another id): an answer for the old
    // id acknowledges nothing of the new one.
    answer.rollouts[0].envoy ^= 1;
    e.answer(w, T0, T0 + MS, Ok(&answer.encode_to_vec()));
    assert!(e.link().inflight.is_some(), "still to be acknowledged");
    answer.rollouts[0].envoy ^= 1;
    e.answer(w, T0, T0 + 2 * MS, Ok(&answer.encode_to_vec()));
    assert!(e.link().inflight.is_none());
}

#[wasm_bindgen_test(unsupported = test)]
fn a_verdict_acted_on_wins_over_a_shadow_one_in_either_order() {
    let acted = Verdict {
        cause: Cause::Manual,
        at: 1,
        shadow: false,
        since: 0,
    };
    let shadow = Verdict {
        cause: Cause::Errors,
        at: 2,
        shadow: true,
        since: 0,
    };
    let mut a = Record::new(2);
    a.variants[0].verdict = Some(acted);
    let mut b = Record::new(2);
    b.variants[0].verdict = Some(shadow);
    let (newer_shadow, _) = merge(Some(a.clone()), 1, b.clone(), 2);
    assert_eq!(newer_shadow.variants[0].verdict, Some(acted));
    let (newer_acted, _) = merge(Some(b), 1, a, 2);
    assert_eq!(newer_acted.variants[0].verdict, Some(acted));
}

/// Seconds from the canary's turn to the fleet's verdict, folding four Envoys'
/// batches of one second each as the service does; errors spread evenly (1 in
/// 1,000 at the baseline, 1 in `canary_every` on the canary from `turn` on).
fn fleet_seconds_to_verdict(method: &str, turn: u64, canary_every: u64) -> (u64, Verdict) {
    let spec = format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web","canary":{{
        "variants":[{{"name":"stable","weight":9500}},{{"name":"canary","weight":500}}],
        "revision":"r1","analysis":{{"method":"{method}","minRequests":20}}}}}}]}}"#
    );
    let (_, policy) = meshguard_config::rollout::compile_fleet_spec(spec.as_bytes()).unwrap();
    let rollout = policy.rollout.clone().unwrap();
    let mut rec = Record::new(2);
    let mut seqs = HashMap::new();
    let (mut base_n, mut canary_n, mut canary_bad) = (0u64, 0u64, 0u64);
    for second in 1..=turn + 600 {
        let now = T0 + second * SEC;
        let mut batches = Vec::new();
        let mut all = Vec::new();
        for envoy in 1..=4u64 {
            // 250 req/s through each Envoy, 5% (12 or 13) to the canary.
            let c = if envoy == 1 { 13 } else { 12 };
            let b = 250 - c;
            let b_errors = (base_n + b) / 1000 - base_n / 1000;
            base_n += b;
            let c_errors = if second > turn {
                let e = (canary_bad + c) / canary_every - canary_bad / canary_every;
                canary_bad += c;
                e
            } else {
                let e = (canary_n + c) / 1000 - canary_n / 1000;
                canary_n += c;
                e
            };
            all.push((
                envoy,
                vec![
                    Counts {
                        n: b,
                        errors: b_errors,
                        slow: 0,
                    },
                    Counts {
                        n: c,
                        errors: c_errors,
                        slow: 0,
                    },
                ],
            ));
        }
        for (envoy, counts) in &all {
            batches.push(service::Batch {
                envoy: *envoy,
                name: "envoy",
                seq: second,
                counts,
                local: &[],
            });
        }
        service::fold_batches(&mut rec, &mut seqs, &rollout, &batches, now);
        if let Some(v) = rec.variants[0].verdict {
            assert!(second > turn, "{method}: a false rollback at {second} s");
            return (second - turn, v);
        }
    }
    panic!("{method}: no verdict 10 minutes after the turn");
}

#[wasm_bindgen_test(unsupported = test)]
fn the_fleet_fold_catches_a_late_change_with_the_change_detector_as_fast_as_a_fresh_one() {
    // The canary fails 1 in 20 (5%) against 1 in 1,000.
    let (fresh, _) = fleet_seconds_to_verdict("changepoint", 0, 20);
    let (late, v) = fleet_seconds_to_verdict("changepoint", 1_800, 20);
    let (test_late, _) = fleet_seconds_to_verdict("test", 1_800, 20);
    eprintln!("fleet: changepoint fresh {fresh} s, after 30 min {late} s; test after 30 min {test_late} s");
    assert!(
        late <= fresh + 2,
        "changepoint: {late} s late, {fresh} s fresh"
    );
    assert!(
        test_late > late,
        "the test decays while healthy: {test_late} s, changepoint {late} s"
    );
    assert_eq!(v.cause, Cause::Errors);
    // The onset estimate: within a few seconds of the turn.
    let turn = T0 + 1_800 * SEC;
    assert!(
        v.since >= turn - 5 * SEC && v.since <= turn + 5 * SEC,
        "since {} s from the turn",
        (v.since as i64 - turn as i64) / SEC as i64
    );
}
