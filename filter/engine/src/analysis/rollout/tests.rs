use super::*;
use meshguard_config::load_json;
use wasm_bindgen_test::wasm_bindgen_test;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const T0: u64 = 1_700_000_000 * SEC;

/// The success-rate gate alone: 99.5% over 3 intervals of 1 s.
const SUCCESS_RATE_3X1S: &str = r#""analysis":{"sequential":false,"minRequests":1,"successRate":{"min":99.5,"intervalSeconds":1,"intervals":3}}"#;

/// The canary policy (and its rollout) of a one-route config whose `canary` is
/// `variants` plus `rest`.
fn policy(variants: &str, rest: &str) -> (CompiledCanary, CompiledRollout) {
    let json = format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web","canary":{{"variants":{variants},"revision":"r1",{rest}}}}}]}}"#
    );
    let c = load_json(json.as_bytes()).unwrap().routes[0]
        .canary
        .clone()
        .unwrap();
    let r = c.rollout.clone().unwrap();
    (c, r)
}

const TWO: &str = r#"[{"name":"stable","weight":9500},{"name":"canary","weight":500}]"#;
const RAMPED: &str = r#"[{"name":"stable"},{"name":"canary"}]"#;

fn counts(n: u64, errors: u64) -> Counts {
    Counts { n, errors, slow: 0 }
}

/// Folds `batch` `times` times, a tick (50 ms) apart from `at`; returns every change.
fn run(
    rec: &mut Record,
    r: &CompiledRollout,
    batch: &[Counts],
    times: usize,
    at: &mut u64,
) -> Vec<Change> {
    let mut all = Vec::new();
    for _ in 0..times {
        all.extend(fold(rec, r, batch, *at));
        *at += 50 * MS;
    }
    all
}

fn states(changes: &[Change]) -> Vec<(usize, CanaryState, CanaryState)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::State {
                variant, from, to, ..
            } => Some((*variant, *from, *to)),
            _ => None,
        })
        .collect()
}

#[wasm_bindgen_test(unsupported = test)]
fn counts_add_up_saturating_and_give_each_signal() {
    let mut c = Counts {
        n: 3,
        errors: 1,
        slow: 2,
    };
    c.add(&Counts {
        n: 4,
        errors: 5,
        slow: 6,
    });
    assert_eq!(
        c,
        Counts {
            n: 7,
            errors: 6,
            slow: 8
        }
    );
    assert_eq!((c.of(Signal::Errors), c.of(Signal::Slow)), (6, 8));
    c.add(&Counts {
        n: u64::MAX,
        errors: 0,
        slow: 0,
    });
    assert_eq!(c.n, u64::MAX);
}

#[wasm_bindgen_test(unsupported = test)]
fn every_verdict_cause_survives_the_record_encoding() {
    for cause in [
        Cause::Errors,
        Cause::Slow,
        Cause::SuccessRate,
        Cause::ZTest,
        Cause::Manual,
    ] {
        let mut rec = Record::new(2);
        rec.variants[0].verdict = Some(Verdict {
            cause,
            at: 7,
            shadow: true,
            since: 0,
        });
        let decoded = Record::decode(&rec.encode(), 2);
        assert_eq!(
            decoded.and_then(|d| d.variants[0].verdict),
            rec.variants[0].verdict,
            "{cause:?}"
        );
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn records_round_trip_and_anything_else_reads_as_none() {
    let (_, r) = policy(TWO, r#""analysis":{"slowCallMs":100}"#);
    let mut rec = Record::new(2);
    let mut at = T0;
    run(
        &mut rec,
        &r,
        &[
            Counts {
                n: 95,
                errors: 1,
                slow: 2,
            },
            Counts {
                n: 5,
                errors: 1,
                slow: 1,
            },
        ],
        3,
        &mut at,
    );
    let bytes = rec.encode();
    assert_eq!(Record::decode(&bytes, 2), Some(rec.clone()));
    assert_eq!(Record::decode(&bytes, 3), None, "another variant count");
    assert_eq!(Record::decode(&bytes[..bytes.len() - 1], 2), None);
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(Record::decode(&longer, 2), None);
    let mut other_version = bytes.clone();
    other_version[0] = 9;
    assert_eq!(Record::decode(&other_version, 2), None);
    let mut bad_cause = Record::new(2);
    bad_cause.variants[0].verdict = Some(Verdict {
        cause: Cause::Errors,
        at: 1,
        shadow: false,
        since: 0,
    });
    let mut b = bad_cause.encode();
    let cause_at = 1 + 2 + 3 * 8 + 2 + 3 * 8 + 2 * 8;
    b[cause_at] = 77;
    assert_eq!(Record::decode(&b, 2), None);
    assert_eq!(Record::decode(&[], 2), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_canary_failing_half_its_requests_is_rolled_back_within_a_few_dozen_requests() {
    let (c, r) = policy(TWO, r#""analysis":{}"#);
    let mut rec = Record::new(2);
    let mut at = T0;
    // 5% of 100 requests per batch; the canary fails 2 of its 5, stable 0.
    let mut changes = Vec::new();
    let mut served = 0;
    while changes.is_empty() && served < 1_000 {
        changes = run(&mut rec, &r, &[counts(95, 0), counts(5, 2)], 1, &mut at);
        served = rec.variants[0].total.n;
    }
    assert_eq!(
        states(&changes),
        vec![(1, CanaryState::Holding, CanaryState::RolledBack)]
    );
    let Change::State { reason, .. } = &changes[0] else {
        panic!("{changes:?}")
    };
    assert!(reason.starts_with("errors: e-value "), "{reason}");
    assert!(reason.contains("1/alpha = 100"), "{reason}");
    assert_eq!(
        served, 20,
        "at minRequests (20) the evidence is already there"
    );
    assert_eq!(rec.weights(&c, &r), vec![10_000, 0]);
    assert!(rec.settled(&r));
    assert_eq!(
        rec.variants[0].verdict.map(|v| v.cause),
        Some(Cause::Errors)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_healthy_canary_keeps_its_weight() {
    let (c, r) = policy(TWO, r#""analysis":{}"#);
    let mut rec = Record::new(2);
    let mut at = T0;
    // Equal error rates: 1 in 95 on each side.
    for i in 0..2_000u64 {
        let b = [counts(95, 1), counts(5, u64::from(i % 19 == 0))];
        assert!(fold(&mut rec, &r, &b, at).is_empty());
        at += 50 * MS;
    }
    assert_eq!(rec.weights(&c, &r), vec![9_500, 500]);
    assert_eq!(rec.state(&r, 1), CanaryState::Holding);
}

#[wasm_bindgen_test(unsupported = test)]
fn no_verdict_before_the_minimum_requests() {
    let (_, r) = policy(TWO, r#""analysis":{"minRequests":200}"#);
    let mut rec = Record::new(2);
    let mut at = T0;
    assert!(run(&mut rec, &r, &[counts(95, 0), counts(5, 5)], 39, &mut at).is_empty());
    assert_eq!(rec.variants[0].total.n, 195);
    let changes = run(&mut rec, &r, &[counts(95, 0), counts(5, 5)], 1, &mut at);
    assert_eq!(
        states(&changes).len(),
        1,
        "at 200 requests the evidence acts"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn shadow_mode_reports_once_and_never_acts() {
    let (c, r) = policy(TWO, r#""analysis":{"shadow":true}"#);
    let mut rec = Record::new(2);
    let mut at = T0;
    let changes = run(&mut rec, &r, &[counts(95, 0), counts(5, 3)], 50, &mut at);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        matches!(&changes[0], Change::Shadow { variant: 1, reason } if reason.starts_with("errors:"))
    );
    assert_eq!(rec.weights(&c, &r), vec![9_500, 500]);
    assert_eq!(rec.state(&r, 1), CanaryState::Holding);
    assert!(!rec.settled(&r));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_manual_rollback_acts_at_once_even_in_shadow_mode() {
    let (c, r) = policy(TWO, r#""analysis":{"shadow":true},"rollback":true"#);
    let mut rec = Record::new(2);
    let changes = fold(&mut rec, &r, &[Counts::default(), Counts::default()], T0);
    assert_eq!(
        changes,
        vec![Change::State {
            variant: 1,
            from: CanaryState::Holding,
            to: CanaryState::RolledBack,
            reason: "rollback: true in the config".into()
        }]
    );
    assert_eq!(rec.weights(&c, &r), vec![10_000, 0]);
}

#[wasm_bindgen_test(unsupported = test)]
fn the_ramp_steps_up_after_its_hold_and_requests_and_is_promoted_at_the_last_step() {
    let (c, r) = policy(
        RAMPED,
        r#""ramp":{"steps":[500,2500,10000],"holdSeconds":10,"minRequests":100}"#,
    );
    let mut rec = Record::new(2);
    assert_eq!(rec.weights(&c, &r), vec![9_500, 500]);
    // 50 canary requests per second: the hold (10 s) decides, not the requests.
    let mut at = T0;
    let mut steps = Vec::new();
    let mut promoted_at = None;
    for s in 0..40u64 {
        for change in fold(&mut rec, &r, &[counts(950, 0), counts(50, 0)], at) {
            match change {
                Change::Step { weight, .. } => steps.push((s, weight)),
                Change::State { to, .. } => promoted_at = Some((s, to)),
                Change::Shadow { .. } => panic!("no analysis"),
            }
        }
        at += SEC;
    }
    assert_eq!(steps, vec![(10, 2_500), (20, 10_000)]);
    assert_eq!(promoted_at, Some((20, CanaryState::Promoted)));
    assert_eq!(rec.weights(&c, &r), vec![0, 10_000]);
    assert!(rec.settled(&r));
}

#[wasm_bindgen_test(unsupported = test)]
fn the_ramp_waits_for_its_requests_and_a_pause_holds_it() {
    let (_, r) = policy(
        RAMPED,
        r#""ramp":{"steps":[500,5000],"holdSeconds":0,"minRequests":100}"#,
    );
    let mut rec = Record::new(2);
    let mut at = T0;
    assert!(run(&mut rec, &r, &[counts(10, 0), counts(10, 0)], 9, &mut at).is_empty());
    let changes = run(&mut rec, &r, &[counts(10, 0), counts(10, 0)], 1, &mut at);
    assert!(
        matches!(changes[0], Change::Step { weight: 5000, .. }),
        "{changes:?}"
    );
    let (_, paused) = policy(
        RAMPED,
        r#""ramp":{"steps":[500,5000],"holdSeconds":0,"minRequests":0},"pause":true"#,
    );
    let mut rec = Record::new(2);
    assert!(run(
        &mut rec,
        &paused,
        &[counts(10, 0), counts(10, 0)],
        20,
        &mut at
    )
    .is_empty());
    assert_eq!(rec.state(&paused, 1), CanaryState::Holding);
}

#[wasm_bindgen_test(unsupported = test)]
fn the_success_rate_gate_rolls_back_after_consecutive_bad_intervals() {
    let (_, r) = policy(TWO, SUCCESS_RATE_3X1S);
    let mut rec = Record::new(2);
    let mut at = T0;
    // 1% failing (below 99.5%) in intervals 0 and 1, then a good one resets the
    // streak, then three bad ones in a row.
    let bad = [counts(950, 0), counts(100, 1)];
    let good = [counts(950, 0), counts(100, 0)];
    let mut verdict_at = None;
    for (s, b) in [bad, bad, good, bad, bad, bad, bad, good]
        .iter()
        .enumerate()
    {
        let changes = fold(&mut rec, &r, b, at);
        if !states(&changes).is_empty() {
            verdict_at = Some(s);
            let Change::State { reason, .. } = &changes[0] else {
                panic!()
            };
            assert!(
                reason.starts_with("success-rate gate: 3 consecutive"),
                "{reason}"
            );
        }
        at += SEC;
    }
    // Intervals are judged when the next begins: bad intervals 3, 4, 5 are seen at
    // folds 4, 5 and 6.
    assert_eq!(verdict_at, Some(6));
    assert_eq!(
        rec.variants[0].verdict.map(|v| v.cause),
        Some(Cause::SuccessRate)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn the_z_test_gate_fires_at_an_interval_when_z_exceeds_its_threshold() {
    let (_, r) = policy(
        TWO,
        r#""analysis":{"sequential":false,"minRequests":50,"zTest":{"z":1.96,"intervalSeconds":10}}"#,
    );
    let mut rec = Record::new(2);
    let mut at = T0;
    // 4% against 1%: far apart, but judged only at the 10 s mark.
    let b = [counts(950, 10), counts(50, 2)];
    assert!(run(&mut rec, &r, &b, 9, &mut at).is_empty());
    let mut at_ten = T0 + 10 * SEC;
    let changes = fold(&mut rec, &r, &b, at_ten);
    let Change::State { reason, .. } = &changes[0] else {
        panic!("{changes:?}")
    };
    assert!(reason.starts_with("z-test gate: z = "), "{reason}");
    at_ten += SEC;
    assert!(fold(&mut rec, &r, &b, at_ten).is_empty(), "once");
}

#[wasm_bindgen_test(unsupported = test)]
fn each_variant_is_judged_against_the_baseline_and_only_the_bad_one_goes() {
    let (c, r) = policy(
        r#"[{"name":"stable","weight":8000},{"name":"blue","weight":1000},{"name":"green","weight":1000}]"#,
        r#""analysis":{}"#,
    );
    let mut rec = Record::new(3);
    let mut at = T0;
    let changes = run(
        &mut rec,
        &r,
        &[counts(80, 0), counts(10, 0), counts(10, 5)],
        20,
        &mut at,
    );
    assert_eq!(
        states(&changes),
        vec![(2, CanaryState::Holding, CanaryState::RolledBack)]
    );
    assert_eq!(rec.weights(&c, &r), vec![9_000, 1_000, 0]);
    assert!(!rec.settled(&r));
    assert!((alpha_per_test(r.analysis.as_ref().unwrap(), 2) - 0.005).abs() < 1e-12);
}

#[wasm_bindgen_test(unsupported = test)]
fn slow_calls_are_a_signal_of_their_own() {
    let (_, r) = policy(TWO, r#""analysis":{"slowCallMs":100}"#);
    let mut rec = Record::new(2);
    let mut at = T0;
    let slow = Counts {
        n: 5,
        errors: 0,
        slow: 3,
    };
    let changes = run(&mut rec, &r, &[counts(95, 0), slow], 20, &mut at);
    let Change::State { reason, .. } = &changes[0] else {
        panic!("{changes:?}")
    };
    assert!(reason.starts_with("slow calls: e-value"), "{reason}");
    assert!(
        reason.contains("1/alpha = 200"),
        "two signals share alpha: {reason}"
    );
    assert_eq!(rec.variants[0].verdict.map(|v| v.cause), Some(Cause::Slow));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_rolled_back_variant_stops_the_ramp() {
    let (c, r) = policy(
        RAMPED,
        r#""analysis":{},"ramp":{"steps":[500,5000],"holdSeconds":0,"minRequests":0}"#,
    );
    let mut rec = Record::new(2);
    let mut at = T0;
    let changes = run(&mut rec, &r, &[counts(95, 0), counts(25, 25)], 1, &mut at);
    assert!(
        states(&changes).contains(&(1, CanaryState::Ramping, CanaryState::RolledBack)),
        "{changes:?}"
    );
    assert!(!changes.iter().any(|c| matches!(c, Change::Step { .. })));
    assert_eq!(rec.weights(&c, &r), vec![10_000, 0]);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_verdict_reason_writes_the_e_value_in_scientific_notation() {
    assert_eq!(e_value(0.0), "1.000e0");
    assert_eq!(e_value(100f64.ln()), "1.000e2");
}

#[wasm_bindgen_test(unsupported = test)]
fn a_reason_names_its_signal_in_words() {
    let (_, r) = policy(TWO, r#""analysis":{"slowCallMs":100}"#);
    let mut at = T0;
    let mut rec = Record::new(2);
    let errors = run(&mut rec, &r, &[counts(95, 0), counts(5, 3)], 20, &mut at);
    let mut rec = Record::new(2);
    let slow = Counts {
        n: 5,
        errors: 0,
        slow: 3,
    };
    let slow = run(&mut rec, &r, &[counts(95, 0), slow], 20, &mut at);
    for (changes, words) in [
        (errors, " errors (baseline "),
        (slow, " slow calls (baseline "),
    ] {
        let Some(Change::State { reason, .. }) = changes.first() else {
            panic!("{changes:?}")
        };
        assert!(reason.contains(words), "{reason}");
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn the_success_rate_gate_judges_whole_intervals_not_ticks() {
    let (_, r) = policy(TWO, SUCCESS_RATE_3X1S);
    let mut rec = Record::new(2);
    let mut at = T0;
    let bad = [counts(95, 0), counts(10, 1)];
    // Ticks 50 ms apart: intervals 0, 1 and 2 are bad, judged as 3 and 4 begin.
    let before = run(&mut rec, &r, &bad, 60, &mut at);
    assert!(states(&before).is_empty(), "{before:?}");
    assert_eq!(at, T0 + 3 * SEC);
    let at_three = run(&mut rec, &r, &bad, 1, &mut at);
    assert_eq!(
        states(&at_three),
        vec![(1, CanaryState::Holding, CanaryState::RolledBack)]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn the_z_test_is_judged_once_per_interval_and_never_in_the_first() {
    let (_, r) = policy(
        TWO,
        r#""analysis":{"sequential":false,"minRequests":50,"zTest":{"z":1.96,"intervalSeconds":10}}"#,
    );
    let good = [counts(950, 10), counts(50, 0)];
    let bad = [counts(950, 10), counts(50, 25)];
    let mut rec = Record::new(2);
    assert!(fold(&mut rec, &r, &good, T0).is_empty());
    assert!(
        fold(&mut rec, &r, &good, T0 + 10 * SEC).is_empty(),
        "judged: fine"
    );
    // Bad from here on, but the next judgement is at 20 s.
    let mut at = T0 + 10 * SEC + 50 * MS;
    let within = run(&mut rec, &r, &bad, 199, &mut at);
    assert!(states(&within).is_empty(), "{within:?}");
    assert_eq!(at, T0 + 20 * SEC);
    assert_eq!(states(&fold(&mut rec, &r, &bad, at)).len(), 1);
    // A clock stepped back before the start reads as the first interval: not judged.
    let mut rec = Record::new(2);
    assert!(fold(&mut rec, &r, &good, T0).is_empty());
    assert!(fold(&mut rec, &r, &good, T0 + 10 * SEC).is_empty());
    assert!(fold(&mut rec, &r, &bad, T0 - SEC).is_empty());
    assert!(fold(&mut rec, &r, &bad, T0 - SEC).is_empty());
}

#[wasm_bindgen_test(unsupported = test)]
fn the_z_test_fires_above_its_threshold_not_at_it() {
    let (_, mut r) = policy(
        TWO,
        r#""analysis":{"sequential":false,"minRequests":50,"zTest":{"z":1.96,"intervalSeconds":10}}"#,
    );
    let b = [counts(950, 10), counts(50, 3)];
    // The totals at the 10 s mark are two batches: set the threshold to their z.
    let z = crate::analysis::gates::z_statistic(100, 6, 1900, 20);
    assert!(z > 1.0, "{z}");
    let at_z = |r: &CompiledRollout| {
        let mut rec = Record::new(2);
        fold(&mut rec, r, &b, T0);
        states(&fold(&mut rec, r, &b, T0 + 10 * SEC))
    };
    if let Some(g) = r.analysis.as_mut().and_then(|a| a.z_test.as_mut()) {
        g.z = z;
    }
    assert!(at_z(&r).is_empty(), "z = {z} is not above itself");
    if let Some(g) = r.analysis.as_mut().and_then(|a| a.z_test.as_mut()) {
        g.z = z - 1e-9;
    }
    assert_eq!(at_z(&r).len(), 1);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_failing_success_rate_interval_holds_the_ramp() {
    let (_, r) = policy(
        RAMPED,
        r#""analysis":{"sequential":false,"minRequests":1,"successRate":{"min":99.5,"intervalSeconds":1,"intervals":3}},
           "ramp":{"steps":[500,5000],"holdSeconds":1,"minRequests":0}"#,
    );
    let steps = |changes: &[Change]| {
        changes
            .iter()
            .filter(|c| matches!(c, Change::Step { .. }))
            .count()
    };
    let mut rec = Record::new(2);
    assert_eq!(
        steps(&fold(&mut rec, &r, &[counts(95, 0), counts(10, 1)], T0)),
        0
    );
    // Held 1 s, but the interval just judged was below the floor: no step.
    let held = fold(&mut rec, &r, &[counts(95, 0), counts(10, 0)], T0 + SEC);
    assert_eq!(steps(&held), 0, "{held:?}");
    // A good interval clears it, and the ramp moves on.
    let moved = fold(&mut rec, &r, &[counts(95, 0), counts(10, 0)], T0 + 2 * SEC);
    assert_eq!(steps(&moved), 1, "{moved:?}");
}

#[wasm_bindgen_test(unsupported = test)]
fn a_version_1_record_is_read_with_fresh_detectors() {
    let (_, r) = policy(TWO, r#""analysis":{"method":"changepoint"}"#);
    let mut rec = Record::new(2);
    let mut at = T0;
    run(&mut rec, &r, &[counts(95, 1), counts(5, 1)], 40, &mut at);
    assert!(rec.variants[0].errors_cp.window > 0);
    let v2 = rec.encode();
    // Version 1 ended each variant before the verdict's `since` and the two
    // detectors (12 logs, the window, the CUSUM and its calm window each).
    let extra = 8 + 2 * (12 * 8 + 3 * 8);
    let mut v1 = v2[..v2.len() - extra].to_vec();
    v1[0] = 1;
    let old = Record::decode(&v1, 2).expect("a version-1 record reads");
    assert_eq!(old.variants[0].errors, rec.variants[0].errors);
    assert_eq!(old.variants[0].total, rec.variants[0].total);
    assert_eq!(old.variants[0].errors_cp, Detector::default());
    // A detector that this code cannot have written reads as no record.
    let mut broken = rec.clone();
    broken.variants[0].slow_cp.cusum = f64::NAN;
    assert_eq!(Record::decode(&broken.encode(), 2), None);
    let mut since = rec.clone();
    since.variants[0].verdict = Some(Verdict {
        cause: Cause::Errors,
        at: 9,
        shadow: false,
        since: 4 * SEC,
    });
    assert_eq!(Record::decode(&since.encode(), 2), Some(since));
}

/// Feeds one batch a second: `healthy` seconds with both failing 0.1%, then the
/// canary failing `rate`; the seconds from the change to the verdict.
fn late_verdict(method: &str, healthy: u64, rate_per_mille: u64) -> Option<(u64, String)> {
    let (_, r) = policy(TWO, &format!(r#""analysis":{{"method":"{method}"}}"#));
    let mut rec = Record::new(2);
    let mut at = T0;
    for t in 0..healthy + 3_600 {
        let canary_errors = if t < healthy {
            0
        } else {
            50 * rate_per_mille / 1_000
        };
        // Deterministic counts: 950 baseline requests with 1 error, 50 canary.
        let changes = fold(
            &mut rec,
            &r,
            &[counts(950, 1), counts(50, canary_errors)],
            at,
        );
        at += SEC;
        if let Some(Change::State { reason, .. }) = changes.first() {
            return Some((t.saturating_sub(healthy), reason.clone()));
        }
    }
    None
}

#[wasm_bindgen_test(unsupported = test)]
fn a_late_change_is_caught_by_the_change_detector_as_fast_as_a_fresh_one() {
    // The canary fails 4% (2 of its 50 requests a second) after being healthy.
    let (fresh, _) = late_verdict("changepoint", 0, 40).unwrap();
    let (late, reason) = late_verdict("changepoint", 1_800, 40).unwrap();
    assert!(late <= fresh + 2, "fresh {fresh} s, after 30 min {late} s");
    assert!(reason.contains("e-detector"), "{reason}");
    assert!(reason.contains("method changepoint, window 18"), "{reason}");
    assert!(reason.contains("evidence growing since 1800 s"), "{reason}");
    // The test over the whole rollout slows down with the healthy time.
    let (test_fresh, r) = late_verdict("test", 0, 40).unwrap();
    let (test_late, _) = late_verdict("test", 1_800, 40).unwrap();
    assert!(
        test_late > 3 * test_fresh.max(1),
        "test: fresh {test_fresh} s, late {test_late} s"
    );
    assert!(r.contains("method test, window "), "{r}");
}

#[wasm_bindgen_test(unsupported = test)]
fn the_change_detector_judges_slow_calls_too_and_the_status_reads_its_progress() {
    let (_, r) = policy(
        TWO,
        r#""analysis":{"method":"changepoint","slowCallMs":100,"horizonSeconds":600}"#,
    );
    let a = r.analysis.as_ref().unwrap();
    assert_eq!(a.horizon_ns, 600 * SEC);
    let mut rec = Record::new(2);
    let mut at = T0;
    let mut verdict = None;
    for _ in 0..600 {
        let b = [
            Counts {
                n: 950,
                errors: 0,
                slow: 1,
            },
            Counts {
                n: 50,
                errors: 0,
                slow: 5,
            },
        ];
        if let Some(Change::State { reason, .. }) = fold(&mut rec, &r, &b, at).first() {
            verdict = Some(reason.clone());
            break;
        }
        at += SEC;
    }
    let reason = verdict.expect("slow calls are judged");
    assert!(reason.starts_with("slow calls: e-detector"), "{reason}");
    let j = &rec.variants[0];
    assert_eq!(j.permille(Signal::Slow, a, alpha_per_test(a, 1)), 1000);
    assert!(j.permille(Signal::Errors, a, alpha_per_test(a, 1)) < 1000);
}
