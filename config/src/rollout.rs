//! Rollouts as other crates name them: the compiled rollout (analysis, ramp,
//! manual controls, fleet) and [`compile_fleet_spec`], which the fleet service
//! runs on the spec an Envoy sends.
//!
//! Two layers meet in this name. A rollout is compiled with the canary policy that
//! holds it (in `canary::rollout`, under the pipeline, re-exported here); reading a
//! fleet spec back runs the whole pipeline ([`load_json`]). So this module stands
//! above both, and no module of the crate imports it.

pub use crate::canary::fleet_spec::fleet_spec;
pub use crate::canary::rollout::{
    compile_rollout, CompiledAnalysis, CompiledFleet, CompiledRamp, CompiledRollout, SuccessGate,
    ZGate, DEFAULT_ALPHA, DEFAULT_HOLD_SECONDS, DEFAULT_HORIZON_SECONDS, DEFAULT_INTERVALS,
    DEFAULT_MIN_REQUESTS, DEFAULT_STEP_REQUESTS, DEFAULT_Z, HORIZON_SECONDS, MAX_HOLD_SECONDS,
    MAX_INTERVAL_SECONDS, MAX_MIN_REQUESTS, MAX_SLOW_CALL_MS, MAX_STEPS,
};
pub use crate::raw::Method;

use crate::canary::CompiledCanary;
use crate::load_json;
use crate::problem::Problem;

/// Compiles a fleet spec (what [`fleet_spec`] wrote, as an Envoy sent it): its
/// route's name and canary policy with its rollout, or every problem found.
pub fn compile_fleet_spec(spec: &[u8]) -> Result<(String, CompiledCanary), Vec<Problem>> {
    let config = load_json(spec)?;
    config
        .routes
        .into_iter()
        .next()
        .and_then(|r| {
            let canary = r.canary?;
            canary.rollout.as_ref()?;
            Some((r.name, canary))
        })
        .ok_or_else(|| {
            vec![Problem {
                path: "routes".into(),
                reason: "a fleet spec holds one route with a canary rollout (analysis or ramp)"
                    .into(),
            }]
        })
}

#[cfg(test)]
mod tests;
