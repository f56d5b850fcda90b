//! A canary policy's rollout: the analysis that judges its variants, the ramp that
//! steps the canary's weight up, and the manual controls. The compiled form and
//! its validation, run by [`compile_canary`](super::compile_canary) for the policy
//! that holds the rollout; other crates name these through [`crate::rollout`].

use super::fleet_spec::fleet_spec;
use crate::fingerprint::fingerprint_bytes;
use crate::grpc::failure_codes;
use crate::names::check_name;
use crate::problem::{in_range, index, join, Problems};
use crate::raw::{Analysis, Canary, Method, Ramp, WhileUnreachable};
use crate::status::{default_failure_statuses, failure_statuses, FailureStatuses};

/// Default false-rollback bound.
pub const DEFAULT_ALPHA: f64 = 0.01;
/// Default canary requests before any verdict.
pub const DEFAULT_MIN_REQUESTS: u32 = 20;
/// Most requests `minRequests` may ask for.
pub const MAX_MIN_REQUESTS: u32 = 10_000_000;
/// Longest slow-call threshold, ms (10 minutes).
pub const MAX_SLOW_CALL_MS: u64 = 600_000;
/// Longest gate interval, seconds.
pub const MAX_INTERVAL_SECONDS: u32 = 3600;
/// Default consecutive bad intervals of the success-rate gate.
pub const DEFAULT_INTERVALS: u32 = 3;
/// Default z of the z-test gate.
pub const DEFAULT_Z: f64 = 1.96;
/// Most ramp steps.
pub const MAX_STEPS: usize = 16;
/// Default hold per step, seconds.
pub const DEFAULT_HOLD_SECONDS: u32 = 60;
/// Default canary requests per step.
pub const DEFAULT_STEP_REQUESTS: u32 = 100;
/// Longest hold, seconds (one day).
pub const MAX_HOLD_SECONDS: u32 = 86_400;
/// Default horizon of `method: changepoint`, seconds (one hour).
pub const DEFAULT_HORIZON_SECONDS: u32 = 3_600;
/// Shortest and longest horizon, seconds (a minute, 30 days).
pub const HORIZON_SECONDS: (u32, u32) = (60, 2_592_000);

/// The success-rate gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SuccessGate {
    /// Lowest acceptable success rate, as a fraction (0.995).
    pub min: f64,
    /// Interval length, ns.
    pub interval_ns: u64,
    /// Consecutive bad intervals that roll back.
    pub intervals: u32,
}

/// The z-test gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZGate {
    /// Threshold of the one-sided statistic.
    pub z: f64,
    /// How often it is re-run, ns.
    pub interval_ns: u64,
}

/// A compiled analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledAnalysis {
    /// False-rollback bound of the sequential test, for the whole rollout.
    pub alpha: f64,
    /// Requests a variant must have served before any verdict.
    pub min_requests: u64,
    /// Statuses that count as errors.
    pub failures: FailureStatuses,
    /// `failures` came from the analysis itself (else the route's breaker's may
    /// replace them).
    pub own_failures: bool,
    /// Whether `failureGrpcCodes` was given (else the breaker's codes apply).
    pub own_grpc: bool,
    /// Slow-call threshold, ns (`None`: slow calls are not judged).
    pub slow_ns: Option<u64>,
    /// Never act on a verdict.
    pub shadow: bool,
    /// Run the sequential test.
    pub sequential: bool,
    /// How the sequential evidence is judged.
    pub method: Method,
    /// `method: changepoint`: the time over which `alpha` bounds false rollbacks, ns.
    pub horizon_ns: u64,
    /// The success-rate gate.
    pub success_rate: Option<SuccessGate>,
    /// The z-test gate.
    pub z_test: Option<ZGate>,
}

/// A compiled ramp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRamp {
    /// The canary's weight per step, basis points, strictly increasing.
    pub steps: Vec<u32>,
    /// Least time per step, ns.
    pub hold_ns: u64,
    /// Least canary requests per step.
    pub min_requests: u64,
}

/// A compiled rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRollout {
    /// The rollout's name.
    pub revision: String,
    /// The analysis, if any.
    pub analysis: Option<CompiledAnalysis>,
    /// The ramp, if any.
    pub ramp: Option<CompiledRamp>,
    /// Hold the ramp.
    pub pause: bool,
    /// Roll every non-baseline variant back.
    pub rollback: bool,
    /// Identifies the stored state this rollout may reuse: its revision and its
    /// variants (a new revision, or other variants, start afresh).
    pub fingerprint: u64,
    /// Judged by the fleet service (`canary.fleet`), not by this Envoy alone.
    pub fleet: Option<CompiledFleet>,
}

/// A rollout the fleet service judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFleet {
    /// What this Envoy does while the service cannot be reached.
    pub while_unreachable: WhileUnreachable,
    /// The rollout's identity in the fleet service: `route/revision/fingerprint`
    /// (every Envoy with the same route, revision and variants judges as one).
    pub key: String,
    /// The rollout as the service compiles it (see [`fleet_spec`]).
    pub spec: String,
}

const SEC: u64 = 1_000_000_000;

/// Validates and compiles the rollout of canary policy `c` at `path` (the
/// `canary` field). `None` and no problem: the policy has no rollout.
pub fn compile_rollout(
    c: &Canary,
    route: &str,
    path: &str,
    p: &mut Problems,
) -> Option<CompiledRollout> {
    let wants = c.analysis.is_some() || c.ramp.is_some();
    if !wants {
        for (field, set) in [("pause", c.pause), ("rollback", c.rollback)] {
            if set {
                p.push(join(path, field), "needs a rollout: add analysis or ramp");
            }
        }
        if c.revision.is_some() {
            p.push(
                join(path, "revision"),
                "names a rollout: add analysis or ramp (or leave it out)",
            );
        }
        if c.fleet.is_some() {
            p.push(
                join(path, "fleet"),
                "needs a rollout to judge: add analysis or ramp",
            );
        }
        return None;
    }
    let mut local = Problems::default();
    let revision = match &c.revision {
        None => {
            local.push(
                join(path, "revision"),
                "required with analysis or ramp: the rollout's state is kept per revision",
            );
            String::new()
        }
        Some(r) => {
            if let Err(e) = check_name(r) {
                local.push(join(path, "revision"), e);
            }
            r.clone()
        }
    };
    let analysis = c
        .analysis
        .as_ref()
        .and_then(|a| compile_analysis(a, &join(path, "analysis"), &mut local));
    let ramp = c
        .ramp
        .as_ref()
        .and_then(|r| compile_ramp(r, c, &join(path, "ramp"), &mut local));
    if c.pause && c.ramp.is_none() {
        local.push(join(path, "pause"), "needs a ramp to hold");
    }
    let parts: Vec<&[u8]> = std::iter::once(revision.as_bytes())
        .chain(c.variants.iter().map(|v| v.name.as_bytes()))
        .collect();
    let fp = fingerprint_bytes(&parts);
    let fleet = c.fleet.as_ref().map(|f| {
        let while_unreachable = match f.while_unreachable.as_deref() {
            None | Some("hold") => WhileUnreachable::Hold,
            Some("local") => WhileUnreachable::Local,
            Some(other) => {
                local.push(
                    join(&join(path, "fleet"), "whileUnreachable"),
                    format!("must be hold or local, got {other:?}"),
                );
                WhileUnreachable::Hold
            }
        };
        CompiledFleet {
            while_unreachable,
            key: format!("{route}/{revision}/{fp:016x}"),
            spec: fleet_spec(c, route),
        }
    });
    local.merge_into(p).then_some(CompiledRollout {
        revision,
        analysis,
        ramp,
        pause: c.pause,
        rollback: c.rollback,
        fingerprint: fp,
        fleet,
    })
}

fn interval(v: Option<u32>, path: &str, p: &mut Problems) -> u64 {
    match v {
        None => {
            p.push(path, "required: the gate's interval, in seconds");
            SEC
        }
        Some(s) => {
            in_range(p, path, s, (1, MAX_INTERVAL_SECONDS), "");
            u64::from(s) * SEC
        }
    }
}

fn compile_analysis(a: &Analysis, path: &str, p: &mut Problems) -> Option<CompiledAnalysis> {
    let mut local = Problems::default();
    let alpha = a.alpha.unwrap_or(DEFAULT_ALPHA);
    // NaN fails both comparisons.
    if !(alpha > 0.0 && alpha < 0.5) {
        local.push(
            join(path, "alpha"),
            format!("must be above 0 and below 0.5, got {alpha}"),
        );
    }
    let min_requests = a.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS);
    let at = join(path, "minRequests");
    in_range(&mut local, &at, min_requests, (1, MAX_MIN_REQUESTS), "");
    let (failures, own_failures) = match &a.failure_statuses {
        Some(list) => (
            failure_statuses(list, &join(path, "failureStatuses"), &mut local),
            true,
        ),
        None => (default_failure_statuses(), false),
    };
    let own_grpc = a.failure_grpc_codes.is_some();
    let mut failures = failures;
    failures.grpc = failure_codes(
        a.failure_grpc_codes.as_ref(),
        &join(path, "failureGrpcCodes"),
        &mut local,
    );
    let slow_ns = a.slow_call_ms.map(|ms| {
        let at = join(path, "slowCallMs");
        in_range(&mut local, &at, ms, (1, MAX_SLOW_CALL_MS), "");
        ms.saturating_mul(1_000_000)
    });
    let success_rate = a.success_rate.as_ref().map(|g| {
        let at = join(path, "successRate");
        if !(g.min > 0.0 && g.min <= 100.0) {
            local.push(
                join(&at, "min"),
                format!(
                    "must be a percentage above 0 and at most 100, got {}",
                    g.min
                ),
            );
        }
        let interval_ns = interval(
            g.interval_seconds,
            &join(&at, "intervalSeconds"),
            &mut local,
        );
        let intervals = g.intervals.unwrap_or(DEFAULT_INTERVALS);
        in_range(&mut local, &join(&at, "intervals"), intervals, (1, 100), "");
        SuccessGate {
            min: g.min / 100.0,
            interval_ns,
            intervals,
        }
    });
    let z_test = a.z_test.as_ref().map(|g| {
        let at = join(path, "zTest");
        let z = g.z.unwrap_or(DEFAULT_Z);
        if !(z > 0.0 && z <= 10.0) {
            local.push(
                join(&at, "z"),
                format!("must be above 0 and at most 10, got {z}"),
            );
        }
        ZGate {
            z,
            interval_ns: interval(
                g.interval_seconds,
                &join(&at, "intervalSeconds"),
                &mut local,
            ),
        }
    });
    let sequential = a.sequential.unwrap_or(true);
    if !sequential && success_rate.is_none() && z_test.is_none() {
        local.push(
            join(path, "sequential"),
            "false leaves nothing to judge by: add successRate or zTest, or keep it",
        );
    }
    let method = a.method.unwrap_or_default();
    let horizon = a.horizon_seconds.unwrap_or(DEFAULT_HORIZON_SECONDS);
    if let Some(h) = a.horizon_seconds {
        let at = join(path, "horizonSeconds");
        if method == Method::Changepoint {
            in_range(&mut local, &at, h, HORIZON_SECONDS, "");
        } else {
            local.push(at, "applies to method: changepoint only");
        }
    }
    if method == Method::Changepoint && !sequential {
        local.push(
            join(path, "method"),
            "changepoint judges the sequential evidence, which sequential: false turns off",
        );
    }
    local.merge_into(p).then(|| CompiledAnalysis {
        alpha,
        method,
        horizon_ns: u64::from(horizon) * SEC,
        min_requests: u64::from(min_requests),
        failures,
        own_failures,
        own_grpc,
        slow_ns,
        shadow: a.shadow,
        sequential,
        success_rate,
        z_test,
    })
}

fn compile_ramp(r: &Ramp, c: &Canary, path: &str, p: &mut Problems) -> Option<CompiledRamp> {
    let mut local = Problems::default();
    if c.variants.len() != 2 {
        local.push(
            path,
            format!(
                "needs exactly two variants (baseline and canary), got {}",
                c.variants.len()
            ),
        );
    }
    let steps_at = join(path, "steps");
    if r.steps.is_empty() || r.steps.len() > MAX_STEPS {
        local.push(
            &steps_at,
            format!("need 1 to {MAX_STEPS} steps, got {}", r.steps.len()),
        );
    }
    let mut last = 0u32;
    for (i, &w) in r.steps.iter().enumerate() {
        let at = index(&steps_at, i);
        if in_range(&mut local, &at, w, (1, 10_000), " basis points") && w <= last {
            local.push(
                at,
                format!("steps must increase: {w} does not exceed the step before ({last})"),
            );
        }
        last = last.max(w);
    }
    let hold = r.hold_seconds.unwrap_or(DEFAULT_HOLD_SECONDS);
    let at = join(path, "holdSeconds");
    in_range(&mut local, &at, hold, (0, MAX_HOLD_SECONDS), "");
    let min_requests = r.min_requests.unwrap_or(DEFAULT_STEP_REQUESTS);
    let at = join(path, "minRequests");
    in_range(&mut local, &at, min_requests, (0, MAX_MIN_REQUESTS), "");
    local.merge_into(p).then(|| CompiledRamp {
        steps: r.steps.clone(),
        hold_ns: u64::from(hold) * SEC,
        min_requests: u64::from(min_requests),
    })
}
