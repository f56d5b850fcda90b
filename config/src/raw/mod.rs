//! The configuration as an operator writes it (JSON for Envoy and Istio, YAML for the CLI).
//!
//! These types only describe shape: serde rejects unknown fields and wrong types.
//! Meaning (name charsets, regex syntax, one-of choices) is checked by
//! [`crate::validate`], which reports every problem with its path.
//!
//! The bottom layer of the crate: it imports no other module of it, and each
//! module that compiles a part of the config imports that part from here. One
//! file per part, named after the module that compiles it ([`crate::route`] reads
//! `raw::route`, and so on). Every type is `raw::Type`, but for the `clientAddress`
//! choice: its name is also the rate-limit key part's, so it stays
//! [`crate::tuning::ClientAddress`].

use serde::{Deserialize, Serialize};

mod breaker;
mod canary;
mod explain;
mod fleet;
mod matcher;
mod ratelimit;
mod rollout;
mod route;
pub(crate) mod tuning;

pub use breaker::{Breaker, BreakerWindow, SlowCall, WhenOpen};
pub use canary::{Canary, CanaryRule, IssueCookie, Sticky, Variant};
pub use explain::Explain;
pub use fleet::{CanaryFleet, FleetService, WhileUnreachable};
pub use matcher::HeaderMatch;
pub use ratelimit::{
    ClientAddress, Cost, Descriptor, FailureMode, GlobalLease, GlobalLimit, HeaderCost, Limit,
    LimitHeaders, LimitResponse, RateLimit, RateLimitService,
};
pub use rollout::{Analysis, Method, Ramp, SuccessRateGate, ZTestGate};
pub use route::{Latency, Protocol, Route, RouteMatch};
pub use tuning::{CounterUpdates, RequestHeaders, RouteCache, RoutingHeaders};

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
    pub routing_headers: Option<RoutingHeaders>,
    /// How Envoy re-picks the route after the routing headers change: `auto`
    /// (default; Envoy does it for this module's ABI) or `clear` (always ask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_cache: Option<RouteCache>,
    /// How request headers are read: `auto` (default: all in one call when the
    /// config may read two or more), `each` or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<RequestHeaders>,
    /// Where the client address comes from (rate-limit `clientAddress` keys, sticky
    /// `clientAddress`, `trustedSources`); default Envoy's `source.address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<tuning::ClientAddress>,
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
    pub explain: Option<Explain>,
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
    pub counters: Option<CounterUpdates>,
}
