//! Rate-limit policies as written (`rateLimits`, per route and top level) and the
//! rate limit service they may ask (`rateLimitService`): compiled by
//! [`crate::ratelimit`].

use serde::{Deserialize, Serialize};

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
    /// Tokens (hits, for a global policy) one request takes: a number, or
    /// `{header, default, max}` to read it from a request header. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

/// What one request costs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum Cost {
    /// The same number of tokens for every request.
    Tokens(u64),
    /// The integer value of a request header.
    Header(HeaderCost),
}

/// A cost read from a request header.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderCost {
    /// The request header holding the cost (lowercase).
    pub header: String,
    /// The cost of a request without the header, or with a value that is not a
    /// whole number from 1 up (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<u64>,
    /// The most one request is charged: a larger value is charged this much.
    pub max: u64,
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
    /// A cookie's value, by the cookie's name (from the `Cookie` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// A query parameter's first value, percent-decoded, by the parameter's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// For global policies: the descriptor entry's key (defaults: `remote_address`,
    /// the header's name, `path`, `method`, `route`, `generic_key`, the cookie's
    /// name, the query parameter's name).
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
    /// `second`, `minute`, `hour` or `day`.
    pub per: String,
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
