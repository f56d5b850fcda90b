//! The compiled configuration: what the request path uses, built by
//! [`crate::validate`] once at configure time (regexes compiled, host patterns
//! split, policies resolved to indices).

use crate::breaker::CompiledBreaker;
use crate::canary::CompiledCanary;
use crate::matcher::{HeaderMatcher, HostPattern, StringMatcher};
use crate::ratelimit::CompiledRateLimit;
use crate::raw::{Latency, Protocol};

/// A validated, compiled plugin configuration.
#[derive(Debug, Clone)]
pub struct CompiledConfig {
    /// Routes in match order.
    pub routes: Vec<CompiledRoute>,
    /// Request header that carries the matched route's name upstream, if configured.
    pub route_header: Option<String>,
    /// Request (and optionally response) header carrying the chosen variant.
    pub variant_header: String,
    /// Request header carrying the chosen variant's cluster.
    pub cluster_header: String,
    /// Whether any route has a canary policy (then client copies of the variant and
    /// cluster headers are removed from every request).
    pub has_canary: bool,
    /// Every rate-limit policy (top-level and per route), in config order.
    pub rate_limits: Vec<CompiledRateLimit>,
    /// Indices into `rate_limits` of the top-level policies (they apply to every route).
    pub top_level_rate_limits: Vec<usize>,
    /// Count requests that match no route (under route `other`).
    pub count_unmatched: bool,
    /// The rate limit service global policies ask.
    pub rate_limit_service: Option<crate::ratelimit::CompiledRateLimitService>,
    /// The fleet service rollouts with `canary.fleet` sync with.
    pub fleet_service: Option<crate::fleet::CompiledFleetService>,
    /// How the filter uses its host (routing headers, route cache, header reads,
    /// client address, counters).
    pub tuning: crate::tuning::Tuning,
    /// Decision records and the status document, when any is on.
    pub explain: Option<crate::explain::CompiledExplain>,
    /// The config's revision: a fingerprint of its bytes (0 until
    /// [`crate::load_json`] sets it).
    pub revision: u64,
}

/// A route with its matchers prepared.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    /// The route's name (a metric label).
    pub name: String,
    /// `:authority` patterns; `None` matches any authority.
    pub authority: Option<Vec<HostPattern>>,
    /// Path condition; `None` matches any path.
    pub path: Option<StringMatcher>,
    /// Allowed methods; `None` allows any.
    pub methods: Option<Vec<Vec<u8>>>,
    /// Header conditions.
    pub headers: Vec<HeaderMatcher>,
    /// Canary policy, if any.
    pub canary: Option<CompiledCanary>,
    /// Indices into the config's `rate_limits` of this route's own policies.
    pub rate_limits: Vec<usize>,
    /// Circuit breaker, if any.
    pub breaker: Option<CompiledBreaker>,
    /// How the route treats gRPC.
    pub protocol: Protocol,
    /// What its duration histogram measures.
    pub latency: Latency,
}
