//! A route's circuit breaker as written (`routes[].breaker`): compiled by
//! [`crate::breaker`].

use serde::{Deserialize, Serialize};

/// A circuit breaker policy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Breaker {
    /// Keep one breaker per canary variant (default true), so a failing canary trips
    /// its own breaker and not stable's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_variant: Option<bool>,
    /// Statuses that count as failures: classes like `5xx` or codes like `429`.
    /// Default `["5xx"]`. Upstream resets, timeouts and overflows always count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_statuses: Option<Vec<String>>,
    /// gRPC codes that count as failures (names such as `UNAVAILABLE`, or numbers).
    /// Default `UNKNOWN`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_grpc_codes: Option<Vec<String>>,
    /// Open when at least this percentage of calls in the window failed (1–100,
    /// default 50), once `minimumCalls` calls are in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate_threshold: Option<u32>,
    /// Open when this many calls in a row failed (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Calls slower than `durationMs` are slow; open when at least `rateThreshold`
    /// percent of the window's calls are slow (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call: Option<SlowCall>,
    /// The sliding window: exactly one of `calls` (the last N calls) or `seconds`.
    /// Default: the last 100 calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<BreakerWindow>,
    /// Calls the window needs before rates are judged (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_calls: Option<u32>,
    /// How long the breaker stays open, in milliseconds (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_duration_ms: Option<u64>,
    /// With a value above `openDurationMs`: each trip that follows a failed probe
    /// doubles the open duration, up to this cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_duration_ms: Option<u64>,
    /// Probe requests admitted in half-open (default 3); all must succeed to close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_probes: Option<u32>,
    /// Most requests in flight on this route at once (a bulkhead; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// What a rejected request gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_open: Option<WhenOpen>,
}

/// Slow-call trip.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlowCall {
    /// A call longer than this (milliseconds) is slow.
    pub duration_ms: u64,
    /// Percentage of slow calls that opens the breaker (1–100).
    pub rate_threshold: u32,
}

/// The breaker's sliding window.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BreakerWindow {
    /// The last N calls (1–1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<u32>,
    /// The last N seconds (1–3600), in ten buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u32>,
}

/// The answer while open (or past the concurrency limit).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WhenOpen {
    /// Status, 400–599 (default 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Body (default `circuit open\n`); a gRPC request gets it as `grpc-message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The status a gRPC request gets (default `UNAVAILABLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// Instead of answering, send the request to this variant of the route's canary
    /// policy (e.g. `stable` when canary's breaker is open). Needs `perVariant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_variant: Option<String>,
}
