//! The service over its in-memory store: group commits, a caller that gives
//! up, reads that write nothing, settled records kept, input refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use meshguard_rls_proto::fleet::fleet_server::Fleet;
use meshguard_rls_proto::fleet::{Counts, RolloutSync, SyncRequest};
use tonic::Request;

use super::store::Store;
use super::FleetService;

fn spec(analysis: &str) -> (String, String) {
    let json = format!(
        r#"{{"schemaVersion":1,"fleetService":{{"cluster":"f"}},"routes":[{{"name":"web","canary":{{
        "variants":[{{"name":"stable","weight":9000}},{{"name":"canary","weight":1000}}],
        "revision":"r1","analysis":{analysis},"fleet":{{}}}}}}]}}"#
    );
    let c = meshguard_config::load_json(json.as_bytes()).unwrap();
    let f = c.routes[0]
        .canary
        .as_ref()
        .unwrap()
        .rollout
        .as_ref()
        .unwrap()
        .fleet
        .clone()
        .unwrap();
    (f.key, f.spec)
}

fn service(delay_ms: u64) -> FleetService {
    FleetService::new(
        Store::Memory(Mutex::new(HashMap::new())),
        Duration::from_secs(3_600),
        Duration::from_millis(delay_ms),
    )
}

fn batch(key: &(String, String), envoy: u64, seq: u64, n: [u64; 2], e: [u64; 2]) -> SyncRequest {
    SyncRequest {
        envoy_name: format!("envoy-{envoy}"),
        rollouts: vec![RolloutSync {
            key: key.0.clone(),
            spec: key.1.clone(),
            envoy,
            seq,
            counts: vec![
                Counts {
                    requests: n[0],
                    errors: e[0],
                    slow: 0,
                },
                Counts {
                    requests: n[1],
                    errors: e[1],
                    slow: 0,
                },
            ],
            local_verdicts: Vec::new(),
        }],
    }
}

async fn sync(svc: &FleetService, req: SyncRequest) -> meshguard_rls_proto::fleet::RolloutState {
    let mut answer = svc.sync(Request::new(req)).await.unwrap().into_inner();
    answer.rollouts.remove(0)
}

#[tokio::test]
async fn batches_are_folded_once_each_and_acknowledged() {
    let svc = service(0);
    let key = spec(r#"{"minRequests":1000000}"#);
    let a = sync(&svc, batch(&key, 1, 1, [90, 10], [0, 0])).await;
    assert_eq!((a.error.as_str(), a.acked_seq, a.version), ("", 1, 1));
    // Sent again (its answer was lost): acknowledged, not counted twice.
    let again = sync(&svc, batch(&key, 1, 1, [90, 10], [0, 0])).await;
    assert_eq!((again.acked_seq, again.version), (1, 1));
    let b = sync(&svc, batch(&key, 2, 1, [45, 5], [0, 0])).await;
    assert_eq!(b.baseline.unwrap().requests, 135);
    assert_eq!(b.variants[0].total.unwrap().requests, 15);
}

#[tokio::test]
async fn many_envoys_at_once_are_folded_in_groups_and_every_one_is_answered() {
    let svc = std::sync::Arc::new(service(0));
    let key = spec(r#"{"minRequests":1000000}"#);
    let mut tasks = Vec::new();
    for envoy in 1..=300u64 {
        let (svc, key) = (svc.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            sync(&svc, batch(&key, envoy, 1, [9, 1], [0, 0])).await
        }));
    }
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s.error.is_empty() && s.acked_seq == 1, "{s:?}");
    }
    let read = sync(&svc, batch(&key, 999, 0, [0, 0], [0, 0])).await;
    assert_eq!(read.variants[0].total.unwrap().requests, 300);
    assert!(
        read.version < 300,
        "folded in groups: {} writes",
        read.version
    );
}

#[tokio::test]
async fn a_caller_that_gives_up_does_not_strand_the_rollout() {
    let svc = std::sync::Arc::new(service(300));
    let key = spec(r#"{"minRequests":1000000}"#);
    // The first caller leaves while its fold is being answered (its Envoy's
    // timeout): the fold goes on, and later calls are still served.
    let gone = tokio::time::timeout(
        Duration::from_millis(50),
        sync(&svc, batch(&key, 1, 1, [9, 1], [0, 0])),
    )
    .await;
    assert!(gone.is_err(), "the first call timed out");
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        sync(&svc, batch(&key, 2, 1, [9, 1], [0, 0])),
    )
    .await
    .expect("served");
    assert!(next.error.is_empty(), "{next:?}");
    assert_eq!(
        next.variants[0].total.unwrap().requests,
        2,
        "both batches, once"
    );
}

#[tokio::test]
async fn a_read_writes_nothing_and_a_settled_record_is_kept_for_good() {
    let store = Store::Memory(Mutex::new(HashMap::new()));
    let svc = FleetService::new(store, Duration::from_secs(3_600), Duration::ZERO);
    let key = spec(r#"{"minRequests":1}"#);
    let read = sync(&svc, batch(&key, 7, 0, [0, 0], [0, 0])).await;
    assert_eq!((read.version, read.acked_seq), (0, 0), "nothing written");
    let Store::Memory(map) = &svc.inner.store else {
        unreachable!()
    };
    assert!(map.lock().unwrap().is_empty());
    // A canary failing every call: rolled back, then kept without expiry.
    let s = sync(&svc, batch(&key, 7, 1, [1000, 50], [0, 50])).await;
    assert_eq!(s.weights, vec![10_000, 0], "{s:?}");
    let map = map.lock().unwrap();
    assert!(
        map.values().all(|e| e.2.is_none()),
        "no expiry once settled"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_a_reason_and_not_folded() {
    let svc = service(0);
    let key = spec("{}");
    let more_errors = sync(&svc, batch(&key, 1, 1, [10, 1], [11, 0])).await;
    assert!(more_errors.error.contains("more errors"), "{more_errors:?}");
    let mut long = batch(&key, 1, 1, [1, 1], [0, 0]);
    long.rollouts[0].key = "k".repeat(600);
    assert!(sync(&svc, long).await.error.contains("a key of 600 bytes"));
    let mut bad_spec = batch(&key, 1, 1, [1, 1], [0, 0]);
    bad_spec.rollouts[0].spec = "{".into();
    assert!(sync(&svc, bad_spec).await.error.contains("invalid spec"));
    let three = SyncRequest {
        rollouts: vec![RolloutSync {
            counts: vec![Counts::default(); 3],
            ..batch(&key, 1, 1, [1, 1], [0, 0]).rollouts.remove(0)
        }],
        ..SyncRequest::default()
    };
    assert!(sync(&svc, three).await.error.contains("3 variants"));
    let ok = sync(&svc, batch(&key, 1, 1, [1, 1], [0, 0])).await;
    assert_eq!(
        (ok.acked_seq, ok.version),
        (1, 1),
        "nothing refused was counted"
    );
}
