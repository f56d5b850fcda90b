//! The fleet sync through the fake host: a Wasm worker's sync from its tick and
//! its answer, a request that waits for the first fleet state, failures, and
//! what a fleet rollout costs a request once the state is known.

use std::collections::HashMap;

use meshguard_engine::{fold_batches, state_of, Counts, FleetBatch, Record};
use meshguard_rls_proto::fleet::{RolloutState, SyncRequest, SyncResponse, METHOD, SERVICE};
use prost::Message;

use super::{plugin, rng};
use crate::glue::fleet::{on_sync_answer, sync};
use crate::glue::plugin::Plugin;
use crate::glue::request::{on_grpc_response, on_log, on_request_headers};
use crate::host::fake::FakeHost;
use crate::host::Level;

const SEC: u64 = 1_000_000_000;

fn config(fleet: &str) -> String {
    format!(
        r#"{{"schemaVersion":1{fleet},"routes":[{{"name":"web","canary":{{
            "variants":[{{"name":"stable","weight":5000}},{{"name":"canary","weight":5000}}],
            "revision":"r1","analysis":{{"minRequests":1000000}}{}}}}}]}}"#,
        if fleet.is_empty() {
            ""
        } else {
            r#","fleet":{}"#
        }
    )
}

const SERVICE_CFG: &str = r#","fleetService":{"cluster":"fleet","syncMs":250,"timeoutMs":100}"#;

fn world() -> FakeHost {
    let w = FakeHost::new().at(SEC).with_header(":path", b"/");
    w.grpc_clusters.borrow_mut().push("fleet".into());
    w
}

/// The fleet service's answer to `request`, folded into `rec` (an in-memory
/// service of one rollout).
fn serve(request: &[u8], rec: &mut Record, seqs: &mut HashMap<u64, u64>) -> Vec<u8> {
    let req = SyncRequest::decode(request).unwrap();
    let mut out = SyncResponse::default();
    for r in req.rollouts {
        let (_, policy) = meshguard_config::rollout::compile_fleet_spec(r.spec.as_bytes()).unwrap();
        let rollout = policy.rollout.clone().unwrap();
        let counts: Vec<Counts> = r
            .counts
            .iter()
            .map(|c| meshguard_engine::counts_from_pb(Some(c)))
            .collect();
        let b = FleetBatch {
            envoy: r.envoy,
            name: &req.envoy_name,
            seq: r.seq,
            counts: &counts,
            local: &[],
        };
        fold_batches(rec, seqs, &rollout, &[b], SEC);
        out.rollouts.push(RolloutState {
            key: r.key,
            acked_seq: seqs.get(&r.envoy).copied().unwrap_or(0),
            envoy: r.envoy,
            version: 1,
            ..state_of(rec, &policy, &rollout, &[])
        });
    }
    out.encode_to_vec()
}

fn stream(world: &FakeHost, now: u64) -> FakeHost {
    let h = world.stream().at(now).with_header(":path", b"/");
    h.grpc_clusters.borrow_mut().push("fleet".into());
    h
}

#[test]
fn a_request_before_the_first_fleet_state_waits_for_a_read_then_is_decided() {
    let w = world();
    let p = plugin(&config(SERVICE_CFG), &w);
    let h = stream(&w, SEC);
    let mut s = on_request_headers(&h, &p, &rng(1));
    assert!(
        s.fleet_read.is_some() && s.must_pause(),
        "waits for the read"
    );
    assert!(
        h.header_values("x-meshguard-variant").is_empty(),
        "not decided yet"
    );
    let calls = h.grpc_calls.borrow().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].1.as_str(), calls[0].2.as_str()),
        (SERVICE, METHOD)
    );
    let read = SyncRequest::decode(calls[0].3.as_slice()).unwrap();
    assert_eq!(read.rollouts[0].seq, 0, "a read carries no batch");
    let (mut rec, mut seqs) = (Record::new(2), HashMap::new());
    *h.grpc_body.borrow_mut() = Some(serve(&calls[0].3, &mut rec, &mut seqs));
    let (token, _) = s.fleet_read.unwrap();
    assert!(on_grpc_response(&h, &p, &mut s, (token, 0, 1), &rng(1)));
    assert_eq!(h.resumed.get(), 1);
    assert_eq!(h.header_values("x-meshguard-variant").len(), 1, "decided");
    on_log(&h, &p, &s.state);
    // The state is known: the next request does not wait.
    let h2 = stream(&w, SEC + 1);
    let s2 = on_request_headers(&h2, &p, &rng(2));
    assert!(s2.fleet_read.is_none() && !s2.must_pause());
    assert!(h2.grpc_calls.borrow().is_empty());
}

#[test]
fn a_read_that_cannot_be_sent_or_fails_lets_the_request_go_on_by_the_config() {
    let w = FakeHost::new().at(SEC);
    let p = plugin(&config(SERVICE_CFG), &w);
    // No such cluster: the dispatch fails, the request is decided at once.
    let h = w.stream().at(SEC).with_header(":path", b"/");
    let s = on_request_headers(&h, &p, &rng(1));
    assert!(s.fleet_read.is_none() && !s.must_pause());
    assert_eq!(h.header_values("x-meshguard-variant").len(), 1);
    assert!(h
        .logs
        .borrow()
        .iter()
        .any(|(l, m)| *l == Level::Warn && m.contains("the fleet service did not answer")));
    // A read that times out (gRPC status 4): decided then.
    let h = stream(&w, SEC);
    let mut s = on_request_headers(&h, &p, &rng(1));
    let (token, _) = s.fleet_read.unwrap();
    assert!(on_grpc_response(&h, &p, &mut s, (token, 4, 0), &rng(1)));
    assert_eq!(h.header_values("x-meshguard-variant").len(), 1);
}

fn sync_once(p: &Plugin, w: &FakeHost, now: u64) -> Option<(FakeHost, u32, Vec<u8>)> {
    let t = stream(w, now);
    sync(&t, p);
    let calls = t.grpc_calls.borrow().clone();
    let call = calls.last()?.clone();
    let token = calls.len() as u32;
    Some((t, token, call.3))
}

#[test]
fn the_tick_syncs_and_the_answer_acknowledges_the_batch_and_is_counted() {
    let w = world();
    let p = plugin(&config(SERVICE_CFG), &w);
    // Requests whose counts reach the link on the tick.
    for i in 0..10u64 {
        let h = stream(&w, SEC + i);
        let mut s = on_request_headers(&h, &p, &rng(i));
        if let Some((token, _)) = s.fleet_read {
            let (mut rec, mut seqs) = (Record::new(2), HashMap::new());
            let m = h.grpc_calls.borrow()[0].3.clone();
            *h.grpc_body.borrow_mut() = Some(serve(&m, &mut rec, &mut seqs));
            on_grpc_response(&h, &p, &mut s, (token, 0, 1), &rng(i));
        }
        h.properties
            .borrow_mut()
            .push(("response.code".into(), 200));
        on_log(&h, &p, &s.state);
    }
    crate::glue::tick::on_tick(&stream(&w, 2 * SEC), &p);
    let (t, token, message) = sync_once(&p, &w, 2 * SEC).expect("a sync is due");
    let req = SyncRequest::decode(message.as_slice()).unwrap();
    assert_eq!(req.rollouts[0].seq, 1);
    let sent: u64 = req.rollouts[0].counts.iter().map(|c| c.requests).sum();
    assert_eq!(sent, 10, "every counted request, in the batch");
    // Not due again until its answer (or the timeout and grace).
    assert!(sync_once(&p, &w, 2 * SEC + 300_000_000).is_none());
    let (mut rec, mut seqs) = (Record::new(2), HashMap::new());
    *t.grpc_body.borrow_mut() = Some(serve(&message, &mut rec, &mut seqs));
    assert!(
        !on_sync_answer(&t, &p, token + 7, 0, 1),
        "another call's answer"
    );
    assert!(on_sync_answer(&t, &p, token, 0, 1));
    assert_eq!(
        w.metric("meshguard.fleet_syncs_total.outcome.ok"),
        2,
        "the read and the sync"
    );
    assert_eq!(w.metric("meshguard.fleet_syncs_total.outcome.error"), 0);
    assert!(w.metric("meshguard.fleet_last_sync_seconds") >= 2);
    // Nothing counted since: the next sync (due) carries no batch.
    let (_, _, next) = sync_once(&p, &w, 2 * SEC + 300_000_000).expect("due again");
    assert_eq!(
        SyncRequest::decode(next.as_slice()).unwrap().rollouts[0].seq,
        0
    );
}

#[test]
fn a_failed_sync_is_counted_and_logged_once_until_the_service_answers_again() {
    let w = world();
    let p = plugin(&config(SERVICE_CFG), &w);
    crate::glue::tick::on_tick(&stream(&w, SEC), &p);
    let mut warnings = Vec::new();
    let mut answer = |now: u64, status: u32| {
        let (t, token, message) = sync_once(&p, &w, now).expect("due");
        if status == 0 {
            let (mut rec, mut seqs) = (Record::new(2), HashMap::new());
            *t.grpc_body.borrow_mut() = Some(serve(&message, &mut rec, &mut seqs));
        }
        assert!(on_sync_answer(&t, &p, token, status, 1));
        warnings.extend(
            t.logs
                .borrow()
                .iter()
                .filter(|(l, _)| *l == Level::Warn)
                .map(|(_, m)| m.clone()),
        );
    };
    for i in 0..3u64 {
        answer(SEC + i * SEC, 14);
    }
    answer(5 * SEC, 0);
    answer(6 * SEC, 14);
    assert_eq!(w.metric("meshguard.fleet_syncs_total.outcome.error"), 4);
    assert_eq!(w.metric("meshguard.fleet_syncs_total.outcome.ok"), 1);
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].contains("did not answer (gRPC status 14)"));
    assert!(warnings[1].contains("answers again"));
    assert!(warnings[2].contains("did not answer"));
}

#[test]
fn a_fleet_rollout_adds_no_host_call_to_a_request_once_its_state_is_known() {
    fn calls(config: &str) -> Vec<String> {
        let w = world();
        let p = plugin(config, &w);
        let mut last = Vec::new();
        for i in 0..3u64 {
            let h = stream(&w, SEC + i);
            let mut s = on_request_headers(&h, &p, &rng(i));
            if let Some((token, _)) = s.fleet_read {
                let (mut rec, mut seqs) = (Record::new(2), HashMap::new());
                let m = h.grpc_calls.borrow()[0].3.clone();
                *h.grpc_body.borrow_mut() = Some(serve(&m, &mut rec, &mut seqs));
                on_grpc_response(&h, &p, &mut s, (token, 0, 1), &rng(i));
            }
            on_log(&h, &p, &s.state);
            last = h.calls.take();
        }
        last
    }
    assert_eq!(calls(&config(SERVICE_CFG)), calls(&config("")));
}
