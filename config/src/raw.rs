//! The configuration as an operator writes it (JSON for Envoy and Istio, YAML for the CLI).
//!
//! These types only describe shape: serde rejects unknown fields and wrong types.
//! Meaning (name charsets, regex syntax, one-of choices) is checked by
//! [`crate::validate`], which reports every problem with its path.

use serde::{Deserialize, Serialize};

/// The current (and only) config schema version.
pub const SCHEMA_VERSION: u32 = 1;

/// Top-level plugin configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Config schema version; must be 1.
    pub schema_version: u32,
    /// Routes in order; the first whose `match` fits a request is that request's route.
    /// Requests that match no route pass through untouched.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// When set, meshguard sets this request header to the matched route's name on the
    /// way upstream, after removing any copy the client sent. Lowercase header name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_header: Option<String>,
    /// Request header that carries the chosen canary variant's name upstream (for
    /// services behind to propagate, and for Istio VirtualService header matches).
    /// Default `x-meshguard-variant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_header: Option<String>,
    /// Request header set to the chosen variant's Envoy cluster, for routes that use
    /// `cluster_header`. Default `x-meshguard-cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_header: Option<String>,
    /// Which routing headers a canary route writes: `both` (default), `variant` or
    /// `cluster`; one fewer header write per request when Envoy's routes use one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_headers: Option<crate::tuning::RoutingHeaders>,
    /// How Envoy re-picks the route after the routing headers change: `auto`
    /// (default; Envoy does it for this module's ABI) or `clear` (always ask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_cache: Option<crate::tuning::RouteCache>,
    /// How request headers are read: `auto` (default: all in one call when the
    /// config may read two or more), `each` or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<crate::tuning::RequestHeaders>,
    /// Where the client address comes from (rate-limit `clientAddress` keys, sticky
    /// `clientAddress`, `trustedSources`); default Envoy's `source.address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<crate::tuning::ClientAddress>,
    /// Rate-limit policies that apply to every route (requests that match no route
    /// are not limited).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimit>,
    /// The rate limit service that global policies ask (Envoy's RLS API v3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_service: Option<RateLimitService>,
    /// The fleet service (`meshguard-rls`) that judges every rollout with
    /// `canary.fleet` for all Envoys at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_service: Option<FleetService>,
    /// RED metrics options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// Decision records and the status document (all off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<crate::explain::Explain>,
}

/// A rate limit service speaking Envoy's `envoy.service.ratelimit.v3` API.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitService {
    /// The Envoy cluster of the service; it must speak HTTP/2.
    pub cluster: String,
    /// The `domain` of every request (the service's namespace for these limits).
    pub domain: String,
    /// How long a request waits for the answer, ms (1 to 10000, default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// When the service fails (timeout, connection, unknown cluster, server error):
    /// `allow` (default) or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<FailureMode>,
    /// After this many failures in a row (default 5) a worker stops asking...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors_before_backoff: Option<u32>,
    /// ...for this long, ms (default 1000), and applies each policy's
    /// `global.fallback` limit (or `onError` without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
}

/// The fleet service: where an Envoy sends its canary counts and reads the
/// fleet's verdicts (meshguard's `meshguard.fleet.v1.Fleet/Sync`, served by
/// `meshguard-rls`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetService {
    /// The Envoy cluster of the service; it must speak HTTP/2.
    pub cluster: String,
    /// How often an Envoy sends its counts and reads the fleet's state, ms
    /// (50 to 10000, default 250).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_ms: Option<u64>,
    /// How long a sync waits for its answer, ms (1 to 10000, default 200); a
    /// sync that timed out is sent again, with the same counts, by the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Without an answer for this long, ms, the service counts as unreachable
    /// and each rollout does what its `fleet.whileUnreachable` says (default
    /// 4 × `syncMs`; at least `syncMs` + `timeoutMs`, at most 600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_after_ms: Option<u64>,
}

/// A rollout judged by the fleet: its counts go to `fleetService`, which judges
/// the counts of every Envoy as one test and steps one ramp for all of them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CanaryFleet {
    /// While the service cannot be reached: `hold` (default: route by the last
    /// fleet state, keep the counts for when it returns) or `local` (also judge
    /// this Envoy's own counts at `alpha`; a local rollback is kept and reported
    /// to the fleet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub while_unreachable: Option<String>,
}

/// What a fleet rollout does while the fleet service cannot be reached
/// (`canary.fleet.whileUnreachable`: read as a string, checked when compiled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhileUnreachable {
    /// Route by the last fleet state; counts wait for the service.
    #[default]
    Hold,
    /// Also judge this Envoy's own counts (rollbacks only; the ramp holds).
    Local,
}

/// What makes a rate-limit policy global: the rate limit service decides, for
/// every Envoy of the fleet at once.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GlobalLimit {
    /// Ask for hits in blocks and spend them locally (see docs/src/global-limits.md, quota leases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<GlobalLease>,
    /// How long a key's `OVER_LIMIT` answer is remembered when the service says
    /// nothing about its window, ms (default 1000; with a lease only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_limit_cache_ms: Option<u64>,
    /// The local limit (per Envoy) while the service is in back-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Limit>,
}

/// A quota lease: a worker asks for `hits` at once and spends them for up to `ttlMs`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GlobalLease {
    /// Hits asked for at once (`hits_addend`), 1 to 100000.
    pub hits: u32,
    /// How long unspent hits may be used, ms (1 to 60000, default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// RED metrics options.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsConfig {
    /// Requests that match no route: `count` them under route `other` (default) or `skip` them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched: Option<String>,
    /// When counters and the in-flight gauge reach Envoy: `batched` (default; on
    /// the worker's next tick, at most 50 ms late) or `immediate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<crate::tuning::CounterUpdates>,
}

/// A rate-limit policy: a token bucket per key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    /// Policy name, unique in the config (same charset as route names); a metric label
    /// and the policy name in the `RateLimit` headers.
    pub name: String,
    /// The parts the bucket key is built from, in order. A request missing any part
    /// (e.g. the header is absent) is not subject to this policy. Empty: one bucket.
    #[serde(default)]
    pub key: Vec<Descriptor>,
    /// The bucket: `burst` tokens, refilled at `rate` per `per` (local policies;
    /// a global policy's limit is the rate limit service's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
    /// Make the policy global: the rate limit service decides (`rateLimitService`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<GlobalLimit>,
    /// Most keys tracked at once (default 10000, at most 1000000). See docs/src/rate-limits.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<u32>,
    /// Decide and count, never reject.
    #[serde(default)]
    pub shadow: bool,
    /// What to do when the shared bucket cannot be updated (retries exhausted or a
    /// host error): `allow` (default) or `deny`. Counted either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_store_error: Option<FailureMode>,
    /// The answer when limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<LimitResponse>,
    /// Which headers to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<LimitHeaders>,
}

/// One part of a rate-limit key. Exactly one field.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Descriptor {
    /// The client address from Envoy's `source.address` (never `X-Forwarded-For`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<ClientAddress>,
    /// A request header's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The request path (without query string).
    #[serde(default)]
    pub path: bool,
    /// The request method.
    #[serde(default)]
    pub method: bool,
    /// The matched route's name.
    #[serde(default)]
    pub route: bool,
    /// A fixed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constant: Option<String>,
    /// For global policies: the descriptor entry's key (defaults: `remote_address`,
    /// the header's name, `path`, `method`, `route`, `generic_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor_key: Option<String>,
}

/// How client addresses are grouped.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientAddress {
    /// IPv6 prefix length that forms one client (default 64; 128 for exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_prefix: Option<u8>,
    /// IPv4 prefix length that forms one client (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_prefix: Option<u8>,
}

/// A token bucket.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limit {
    /// Bucket capacity: how many requests may arrive at once (at least 1).
    pub burst: u64,
    /// Tokens added per `per` (at least 1).
    pub rate: u64,
    /// `second`, `minute` or `hour`.
    pub per: String,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum FailureMode {
    /// Let the request through.
    #[default]
    Allow,
    /// Reject it as limited.
    Deny,
}

/// The local reply for limited requests.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitResponse {
    /// HTTP status, 400–599; default 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Body; default `rate limited\n`; a gRPC request gets it as `grpc-message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The status a gRPC request gets (default `RESOURCE_EXHAUSTED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
}

/// Header options.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitHeaders {
    /// Also add `RateLimit-Policy` / `RateLimit` to allowed responses (default false).
    #[serde(default)]
    pub on_allowed: bool,
    /// Also send `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset`.
    #[serde(default)]
    pub legacy: bool,
}

/// A named route: the unit that policies and metrics attach to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Route {
    /// Route name: 1 to 63 of `A-Z a-z 0-9 _ -`, starting with a letter or digit.
    /// It becomes a metric label. `other` is reserved for unmatched requests.
    pub name: String,
    /// What a request must look like to belong to this route; empty matches everything.
    #[serde(default, rename = "match")]
    pub matcher: RouteMatch,
    /// Canary policy: which variant (upstream version) serves each request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Rate-limit policies for this route only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimit>,
    /// Circuit breaker for this route (kept per variant by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<Breaker>,
    /// How the route treats gRPC: `auto` (default: a `grpc-status` decides the
    /// outcome when present), `grpc` (also counts by gRPC status) or `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<crate::grpc::Protocol>,
    /// What the duration histogram measures: `stream` (default: to the stream's
    /// end) or `headers` (to the response headers, for long streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<crate::route::Latency>,
}

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

/// A canary policy: variants, override rules, and a (sticky) weighted split.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Canary {
    /// Two to 16 variants. The first is the baseline (e.g. `stable`); weights are in
    /// basis points and must sum to 10000.
    pub variants: Vec<Variant>,
    /// Override rules in order; the first that matches picks its variant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<CanaryRule>,
    /// Where the key for a sticky split comes from; without it each request is a fresh
    /// random draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// Callers (by client address, CIDR) whose own variant header is honoured, and
    /// for whom `trustedOnly` rules apply. Everyone else's copies are removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_sources: Vec<String>,
    /// Also tag the response with the variant header. Off by default (edges).
    #[serde(default)]
    pub respond_with_variant: bool,
    /// The rollout's name. Analysis and ramp state (the step, a verdict) is kept
    /// while it stays the same, across config reloads and VM restarts, and starts
    /// fresh when it changes: give each release its own. Required with `analysis`
    /// or `ramp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Judge every non-baseline variant against the baseline as traffic flows, and
    /// roll it back (its weight to 0) on a verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// Step the canary's weight up over time (two variants only; the variants'
    /// weights are then left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<Ramp>,
    /// Manual control: hold the ramp at its current step (the analysis goes on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
    /// Manual control: roll every non-baseline variant back now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// Judge this rollout with the fleet (needs `fleetService`): every Envoy's
    /// counts pooled into one test, one ramp clock. Without it each Envoy judges
    /// its own traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<CanaryFleet>,
}

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
    /// Roll back when the variant's success rate stays below `min` percent for
    /// `intervals` consecutive intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRateGate>,
    /// Roll back when a two-proportion z-test of the variant's error rate against the
    /// baseline's, re-run every interval, exceeds `z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z_test: Option<ZTestGate>,
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

/// One version of the upstream.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Variant {
    /// Variant name (same charset as route names); it becomes a metric label and the
    /// value of the variant header (an Istio subset name, typically).
    pub name: String,
    /// Envoy cluster for `cluster_header` routing; default: the variant's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Share of the weighted split in basis points (0–10000).
    #[serde(default)]
    pub weight: u32,
}

/// Sends matching requests to a variant. Exactly one of `header`, `cookie`, `query`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CanaryRule {
    /// The variant to send matching requests to.
    pub variant: String,
    /// A request header condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderMatch>,
    /// A cookie condition (`name` is the cookie name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<HeaderMatch>,
    /// A query-parameter condition (`name` is the parameter; values are percent-decoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<HeaderMatch>,
    /// Apply this rule only to trusted callers (see `trustedSources`).
    #[serde(default)]
    pub trusted_only: bool,
}

/// The key of a sticky split. Exactly one of `header`, `cookie`, `clientAddress`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sticky {
    /// Request header holding the key, e.g. `x-user-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Cookie holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Use the client address (Envoy's `source.address`; IPv6 grouped by /64).
    #[serde(default)]
    pub client_address: bool,
    /// Mixed into the hash so two policies split independently; default: the route name.
    /// Changing it reshuffles every user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// With `cookie`: when the cookie is absent, make up a random key, use it, and
    /// answer with `Set-Cookie` so the browser stays pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_cookie: Option<IssueCookie>,
}

/// How the sticky cookie is issued.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IssueCookie {
    /// `Max-Age` in seconds (1 to 400 days); default 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u32>,
    /// `Path` attribute; default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Add `Secure`. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
}

/// Conditions on a request; all given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteMatch {
    /// Host patterns for `:authority`, as Envoy's virtual-host `domains`: `example.com`,
    /// `*.example.com`, `api.*`, or `*`. Case-insensitive; a pattern without a port
    /// ignores the request's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<Vec<String>>,
    /// The path (without query string) must equal this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_exact: Option<String>,
    /// The path (without query string) must start with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The whole path (without query string) must match this regular expression
    /// (RE2-like syntax, linear time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// Allowed methods, such as `GET`; any method when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Header conditions; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// A condition on one request header. Exactly one of `exact`, `prefix`, `suffix`,
/// `regex`, `present` must be given.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderMatch {
    /// Header name, lowercase (pseudo-headers `:authority`, `:path`, `:method`, `:scheme` allowed).
    pub name: String,
    /// The value must equal this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value must start with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The value must end with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// The whole value must match this regular expression (linear time; the value's
    /// bytes need not be UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: the header must be present; `false`: it must be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}
