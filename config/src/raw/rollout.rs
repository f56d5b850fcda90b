//! A canary policy's rollout as written: the analysis with its gates, and the
//! ramp. Compiled with the canary policy ([`crate::canary`]).

use serde::{Deserialize, Serialize};

/// The canary analysis: which calls count against a variant, the false-rollback
/// bound, and optional classical gates.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Analysis {
    /// Probability that a variant as good as the baseline is ever rolled back by the
    /// sequential test, however long it runs: above 0 and below 0.5, default 0.01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Requests a variant must have served before any verdict (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
    /// Statuses that count as errors (classes like `5xx`, codes like `429`); default:
    /// the route breaker's `failureStatuses`, else `["5xx"]`. Resets, timeouts and
    /// overflows always count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_statuses: Option<Vec<String>>,
    /// gRPC codes that count as errors; default: the route breaker's
    /// `failureGrpcCodes`, else its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_grpc_codes: Option<Vec<String>>,
    /// Also judge slow calls: a call longer than this many milliseconds is slow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call_ms: Option<u64>,
    /// Judge, report and log, but never roll back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// The anytime-valid sequential test (default true); turn it off to judge by the
    /// gates alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<bool>,
    /// How the sequential evidence is judged. `test` (default): one test over the
    /// whole rollout; a variant as good as the baseline is rolled back with
    /// probability at most `alpha` however long the rollout runs, but healthy
    /// traffic piles up evidence of health, so a variant that turns bad late is
    /// caught more slowly. `changepoint`: a change detector; a variant that turns
    /// bad is caught as fast after hours of health as when fresh, and one as good
    /// as the baseline is rolled back with probability at most `alpha` within
    /// `horizonSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// With `method: changepoint`: the time over which the false-rollback bound
    /// `alpha` holds (60 to 2592000 seconds, default 3600); on average a variant as
    /// good as the baseline is falsely rolled back no sooner than
    /// `horizonSeconds / alpha`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon_seconds: Option<u32>,
    /// Roll back when the variant's success rate stays below `min` percent for
    /// `intervals` consecutive intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRateGate>,
    /// Roll back when a two-proportion z-test of the variant's error rate against the
    /// baseline's, re-run every interval, exceeds `z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z_test: Option<ZTestGate>,
}

/// How the sequential evidence is judged (`analysis.method`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// One anytime-valid test over the whole rollout.
    #[default]
    Test,
    /// A change detector (an e-detector of Shiryaev-Roberts type).
    Changepoint,
}

impl Method {
    /// Its name in config, logs, metrics and the status document.
    pub fn name(self) -> &'static str {
        match self {
            Method::Test => "test",
            Method::Changepoint => "changepoint",
        }
    }
}

/// An absolute success-rate floor, judged per interval.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SuccessRateGate {
    /// Lowest acceptable success rate, percent (e.g. 99.5).
    pub min: f64,
    /// Length of an interval, seconds (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u32>,
    /// Consecutive intervals below `min` that roll back (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<u32>,
}

/// The classical two-proportion z-test, re-run at fixed intervals.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ZTestGate {
    /// Threshold of the one-sided statistic (default 1.96).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z: Option<f64>,
    /// How often the test is re-run, seconds (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u32>,
}

/// A progressive ramp of the canary's weight.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ramp {
    /// The canary's weight at each step, basis points, strictly increasing (e.g.
    /// `[500, 2500, 5000, 10000]`); reaching the last step is "promoted".
    pub steps: Vec<u32>,
    /// Least time at each step before the next, seconds (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_seconds: Option<u32>,
    /// Least canary requests at each step before the next (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
}
