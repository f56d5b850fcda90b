use std::collections::HashMap;

use meshguard_config::load_json;
use meshguard_config::rollout::CompiledRollout;
use wasm_bindgen_test::wasm_bindgen_test;

use super::*;

const SEC: u64 = 1_000_000_000;

fn rollout(analysis: &str) -> CompiledRollout {
    let json = format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web","canary":{{
            "variants":[{{"name":"stable","weight":9500}},{{"name":"canary","weight":500}}],
            "revision":"r1","analysis":{analysis}}}}}]}}"#
    );
    load_json(json.as_bytes()).unwrap().routes[0]
        .canary
        .clone()
        .unwrap()
        .rollout
        .unwrap()
}

fn counts(n_b: u64, e_b: u64, n_c: u64, e_c: u64) -> [Counts; 2] {
    [
        Counts {
            n: n_b,
            errors: e_b,
            slow: 0,
        },
        Counts {
            n: n_c,
            errors: e_c,
            slow: 0,
        },
    ]
}

fn batch<'a>(envoy: u64, seq: u64, c: &'a [Counts]) -> Batch<'a> {
    Batch {
        envoy,
        name: "envoy-a",
        seq,
        counts: c,
        local: &[],
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_retried_batch_is_acknowledged_and_not_folded_twice() {
    let r = rollout("{}");
    let mut rec = Record::new(2);
    let mut seqs = HashMap::new();
    let c = counts(95, 1, 5, 0);
    let (first, _) = fold_batches(&mut rec, &mut seqs, &r, &[batch(7, 1, &c)], SEC);
    assert_eq!(first, vec![Folded::Folded]);
    // The answer was lost: the Envoy sends seq 1 again, then its next batch.
    let (again, _) = fold_batches(
        &mut rec,
        &mut seqs,
        &r,
        &[batch(7, 1, &c), batch(7, 2, &c)],
        2 * SEC,
    );
    assert_eq!(again, vec![Folded::Duplicate, Folded::Folded]);
    assert_eq!(rec.baseline.n, 190, "each batch once");
    assert_eq!(rec.variants[0].total.n, 10);
    assert_eq!(seqs[&7], 2);
    // Another Envoy's seq 1 is its own.
    let (other, _) = fold_batches(&mut rec, &mut seqs, &r, &[batch(8, 1, &c)], 3 * SEC);
    assert_eq!(other, vec![Folded::Folded]);
    assert_eq!(rec.baseline.n, 285);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_read_folds_nothing_and_a_batch_of_another_shape_is_refused_unacknowledged() {
    let r = rollout("{}");
    let mut rec = Record::new(2);
    let mut seqs = HashMap::new();
    let three = [Counts::default(); 3];
    let c = counts(1, 0, 1, 0);
    let bad_local = [(2usize, Cause::Errors)];
    let (out, _) = fold_batches(
        &mut rec,
        &mut seqs,
        &r,
        &[
            batch(1, 0, &[]),
            batch(1, 1, &three),
            Batch {
                local: &bad_local,
                ..batch(2, 1, &c)
            },
        ],
        SEC,
    );
    assert_eq!(out[0], Folded::Read);
    assert!(
        matches!(&out[1], Folded::Rejected(e) if e.contains("3 variants")),
        "{out:?}"
    );
    assert!(
        matches!(&out[2], Folded::Rejected(e) if e.contains("variant 2")),
        "{out:?}"
    );
    assert!(seqs.is_empty(), "nothing acknowledged");
    assert_eq!(rec, Record::new(2));
}

#[wasm_bindgen_test(unsupported = test)]
fn small_batches_of_many_envoys_reach_the_verdict_one_envoy_alone_would_not() {
    // A canary failing half its calls, seen by 10 Envoys with 2 canary
    // requests a second each: alone, each Envoy needs `minRequests` (20) of its
    // own, ten seconds; pooled, the fleet has them in one.
    let r = rollout("{}");
    let mut fleet = Record::new(2);
    let mut alone = Record::new(2);
    let mut seqs = HashMap::new();
    let c = counts(38, 0, 2, 1);
    let mut fleet_at = None;
    for s in 1..=5u64 {
        for envoy in 0..10u64 {
            let (_, decided) = fold_batches(
                &mut fleet,
                &mut seqs,
                &r,
                &[Batch {
                    name: "envoy-x",
                    ..batch(envoy, s, &c)
                }],
                s * SEC,
            );
            if fleet_at.is_none() && !decided.is_empty() {
                assert!(decided.iter().all(|d| d.by == "envoy-x"));
                fleet_at = Some(s);
            }
        }
        fold(&mut alone, &r, &c, s * SEC);
    }
    assert_eq!(fleet_at, Some(1), "the fleet decides in its first second");
    assert_eq!(
        alone.variants[0].verdict, None,
        "one Envoy has 10 canary requests"
    );
    assert_eq!(fleet.state(&r, 1), CanaryState::RolledBack);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_local_verdict_is_adopted_once_and_names_its_envoy() {
    let r = rollout("{}");
    let mut rec = Record::new(2);
    let mut seqs = HashMap::new();
    let c = counts(10, 0, 1, 0);
    let local = [(1usize, Cause::Errors)];
    let (out, decided) = fold_batches(
        &mut rec,
        &mut seqs,
        &r,
        &[Batch {
            name: "envoy-b",
            local: &local,
            ..batch(3, 1, &c)
        }],
        SEC,
    );
    assert_eq!(out, vec![Folded::Folded]);
    assert_eq!(rec.state(&r, 1), CanaryState::RolledBack);
    assert_eq!(decided.len(), 1);
    assert!(
        matches!(&decided[0].change, Change::State { to: CanaryState::RolledBack, reason, .. }
            if reason.contains("envoy-b") && reason.contains("unreachable")),
        "{decided:?}"
    );
    // Reported again (a retried batch) or by another Envoy: nothing new.
    let (_, again) = fold_batches(
        &mut rec,
        &mut seqs,
        &r,
        &[Batch {
            local: &local,
            ..batch(4, 1, &c)
        }],
        2 * SEC,
    );
    assert!(again.is_empty(), "{again:?}");
}

#[wasm_bindgen_test(unsupported = test)]
fn a_shadow_analysis_adopts_a_local_verdict_as_a_shadow_one() {
    let r = rollout(r#"{"shadow":true}"#);
    let mut rec = Record::new(2);
    let mut seqs = HashMap::new();
    let c = counts(10, 0, 1, 0);
    let local = [(1usize, Cause::Slow)];
    let (_, decided) = fold_batches(
        &mut rec,
        &mut seqs,
        &r,
        &[Batch {
            local: &local,
            ..batch(3, 1, &c)
        }],
        SEC,
    );
    assert!(matches!(
        decided[0].change,
        Change::Shadow { variant: 1, .. }
    ));
    assert_ne!(rec.state(&r, 1), CanaryState::RolledBack);
}

#[cfg(not(target_arch = "wasm32"))]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever order the batches of several Envoys arrive in, and however
        /// often each is sent again, every batch is folded exactly once, and a
        /// verdict reached is never undone by a later batch.
        #[test]
        fn every_batch_once_and_no_verdict_reversed_in_any_order(
            sends in prop::collection::vec((0u64..4, 1u64..6, 0u64..30, 0u64..3), 1..120),
        ) {
            let r = rollout(r#"{"minRequests":1}"#);
            let mut rec = Record::new(2);
            let mut seqs = HashMap::new();
            // Envoy e's batch s has s·(e+1) canary requests and `errors` of
            // them failed... fixed per (e, s), so a resend is the same batch.
            let content = |e: u64, s: u64| counts(20 + s, 0, s * (e + 1), (s + e) % 3);
            let mut folded: HashMap<(u64, u64), bool> = HashMap::new();
            let mut verdict = None;
            for (i, (e, s, _noise, _)) in sends.iter().enumerate() {
                let c = content(*e, *s);
                let last = seqs.get(e).copied().unwrap_or(0);
                let (out, _) = fold_batches(&mut rec, &mut seqs, &r, &[batch(*e, *s, &c)], (i as u64 + 1) * SEC);
                if *s > last {
                    prop_assert_eq!(&out[0], &Folded::Folded);
                    folded.insert((*e, *s), true);
                } else {
                    prop_assert_eq!(&out[0], &Folded::Duplicate);
                }
                if verdict.is_some() {
                    prop_assert_eq!(rec.variants[0].verdict, verdict, "a verdict never changes");
                }
                verdict = rec.variants[0].verdict;
            }
            let want: u64 = folded.keys().map(|(e, s)| content(*e, *s)[1].n).sum();
            prop_assert_eq!(rec.variants[0].total.n, want);
        }
    }
}
