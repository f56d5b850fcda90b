//! The fleet API's messages (`meshguard.fleet.v1`) to and from the engine's own
//! types: a stored [`Record`] becomes the [`RolloutState`] the service answers
//! with, and an Envoy turns that answer back into a record it routes by (a
//! mirror: its step, verdicts and totals are the fleet's; each signal's
//! evidence is kept as its log, as the analysis' method judges it, which is all
//! the status shows).

use meshguard_config::canary::CompiledCanary;
use meshguard_config::rollout::{CompiledRollout, Method};
use meshguard_rls_proto::fleet::{self as pb, RolloutState, VariantState};

use crate::analysis::detector::Detector;
use crate::analysis::mixture::Mixture;
use crate::analysis::rollout::{Cause, Counts, Judged, Record, Verdict};
use crate::metrics::CanaryState;
use crate::metrics::Signal;

/// The proto's counts.
pub fn counts_to_pb(c: &Counts) -> pb::Counts {
    pb::Counts {
        requests: c.n,
        errors: c.errors,
        slow: c.slow,
    }
}

/// The engine's counts.
pub fn counts_from_pb(c: Option<&pb::Counts>) -> Counts {
    c.map_or_else(Counts::default, |c| Counts {
        n: c.requests,
        errors: c.errors,
        slow: c.slow,
    })
}

/// The proto's cause.
pub fn cause_to_pb(c: Cause) -> pb::Cause {
    match c {
        Cause::Errors => pb::Cause::Errors,
        Cause::Slow => pb::Cause::Slow,
        Cause::SuccessRate => pb::Cause::SuccessRate,
        Cause::ZTest => pb::Cause::ZTest,
        Cause::Manual => pb::Cause::Manual,
    }
}

/// The engine's cause (`None`: unspecified or unknown).
pub fn cause_from_pb(c: i32) -> Option<Cause> {
    match pb::Cause::try_from(c).ok()? {
        pb::Cause::Unspecified => None,
        pb::Cause::Errors => Some(Cause::Errors),
        pb::Cause::Slow => Some(Cause::Slow),
        pb::Cause::SuccessRate => Some(Cause::SuccessRate),
        pb::Cause::ZTest => Some(Cause::ZTest),
        pb::Cause::Manual => Some(Cause::Manual),
    }
}

fn state_to_pb(s: CanaryState) -> pb::State {
    match s {
        CanaryState::Ramping => pb::State::Ramping,
        CanaryState::Holding => pb::State::Holding,
        CanaryState::Promoted => pb::State::Promoted,
        CanaryState::RolledBack => pb::State::RolledBack,
    }
}

/// What the service answers for a record: its step, totals, each variant's
/// state, verdict and evidence, and the effective weights. `decided_by` names,
/// per non-baseline variant, the Envoy whose batch made its last transition.
pub fn state_of(
    rec: &Record,
    policy: &CompiledCanary,
    rollout: &CompiledRollout,
    decided_by: &[String],
) -> RolloutState {
    RolloutState {
        step: u32::from(rec.step),
        started_ns: rec.started,
        step_since_ns: rec.step_since,
        step_requests: rec.step_requests,
        baseline: Some(counts_to_pb(&rec.baseline)),
        variants: rec
            .variants
            .iter()
            .enumerate()
            .map(|(i, j)| VariantState {
                state: state_to_pb(rec.state(rollout, i + 1)) as i32,
                verdict: j.verdict.map_or(0, |v| cause_to_pb(v.cause) as i32),
                verdict_at_ns: j.verdict.map_or(0, |v| v.at),
                shadow: j.verdict.is_some_and(|v| v.shadow),
                total: Some(counts_to_pb(&j.total)),
                log_e_errors: j.log_evidence(Signal::Errors, method(rollout)),
                log_e_slow: j.log_evidence(Signal::Slow, method(rollout)),
                decided_by: decided_by.get(i).cloned().unwrap_or_default(),
                verdict_since_ns: j.verdict.map_or(0, |v| v.since),
            })
            .collect(),
        weights: rec.weights(policy, rollout),
        ..RolloutState::default()
    }
}

/// A record an Envoy routes by, from the service's answer for a policy of
/// `variants` variants (baseline included); `None` when the answer does not
/// fit that shape (another spec, a broken service).
pub fn mirror(state: &RolloutState, variants: usize) -> Option<Record> {
    if state.variants.len() + 1 != variants {
        return None;
    }
    Some(Record {
        started: state.started_ns,
        step: u16::try_from(state.step).ok()?,
        step_since: state.step_since_ns,
        step_requests: state.step_requests,
        baseline: counts_from_pb(state.baseline.as_ref()),
        variants: state
            .variants
            .iter()
            .map(|v| Judged {
                verdict: cause_from_pb(v.verdict).map(|cause| Verdict {
                    cause,
                    at: v.verdict_at_ns,
                    shadow: v.shadow,
                    since: v.verdict_since_ns,
                }),
                errors: evidence(v.log_e_errors),
                slow: evidence(v.log_e_slow),
                errors_cp: detected(v.log_e_errors),
                slow_cp: detected(v.log_e_slow),
                total: counts_from_pb(v.total.as_ref()),
                ..Judged::default()
            })
            .collect(),
        ..Record::default()
    })
}

/// A mixture whose e-value is `exp(log_e)`: every grid point at `log_e` (the
/// mean of equal exponentials is that exponential). A NaN reads as no evidence.
fn evidence(log_e: f64) -> Mixture {
    let l = if log_e.is_nan() { 0.0 } else { log_e };
    Mixture {
        llr: [l; crate::analysis::mixture::GRID.len()],
    }
}

/// A change detector whose evidence is `exp(log_m)`, as [`evidence`] does for
/// the test (whichever the method, the status reads the one it judges by).
fn detected(log_m: f64) -> Detector {
    let l = if log_m.is_nan() { 0.0 } else { log_m };
    Detector {
        log_r: [l; crate::analysis::mixture::GRID.len()],
        ..Detector::default()
    }
}

fn method(rollout: &CompiledRollout) -> Method {
    rollout.analysis.as_ref().map_or(Method::Test, |a| a.method)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshguard_config::load_json;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn policy() -> CompiledCanary {
        let json = r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
            "variants":[{"name":"stable"},{"name":"canary"}],
            "revision":"r1","ramp":{"steps":[500,5000,10000]},"analysis":{}}}]}"#;
        load_json(json.as_bytes()).unwrap().routes[0]
            .canary
            .clone()
            .unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_record_survives_the_trip_through_the_answer_as_far_as_routing_and_status_go() {
        let p = policy();
        let r = p.rollout.clone().unwrap();
        let mut rec = Record::new(2);
        rec.step = 1;
        rec.started = 7;
        rec.step_since = 9;
        rec.step_requests = 11;
        rec.baseline = Counts {
            n: 100,
            errors: 1,
            slow: 2,
        };
        rec.variants[0].errors.update(5, 3, 95, 0);
        rec.variants[0].total = Counts {
            n: 5,
            errors: 3,
            slow: 0,
        };
        rec.variants[0].verdict = Some(Verdict {
            cause: Cause::Errors,
            at: 42,
            shadow: false,
            since: 0,
        });
        let state = state_of(&rec, &p, &r, &["envoy-1".into()]);
        assert_eq!(state.weights, vec![10_000, 0]);
        assert_eq!(state.variants[0].state, pb::State::RolledBack as i32);
        assert_eq!(state.variants[0].decided_by, "envoy-1");
        let back = mirror(&state, 2).unwrap();
        assert_eq!(back.weights(&p, &r), rec.weights(&p, &r));
        assert_eq!(back.state(&r, 1), CanaryState::RolledBack);
        assert_eq!(back.variants[0].verdict, rec.variants[0].verdict);
        assert_eq!(
            (back.step, back.started, back.step_since, back.step_requests),
            (1, 7, 9, 11)
        );
        assert_eq!(back.baseline, rec.baseline);
        assert_eq!(back.variants[0].total, rec.variants[0].total);
        let (a, b) = (
            back.variants[0].errors.log_e(),
            rec.variants[0].errors.log_e(),
        );
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        assert_eq!(mirror(&state, 3), None, "another shape");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_cause_maps_both_ways_and_unknown_codes_mean_none() {
        for c in [
            Cause::Errors,
            Cause::Slow,
            Cause::SuccessRate,
            Cause::ZTest,
            Cause::Manual,
        ] {
            assert_eq!(cause_from_pb(cause_to_pb(c) as i32), Some(c));
        }
        assert_eq!(cause_from_pb(0), None);
        assert_eq!(cause_from_pb(99), None);
        assert_eq!(evidence(f64::NAN).log_e(), 0.0);
    }
}
