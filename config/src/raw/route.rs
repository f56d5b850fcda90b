//! A route as written: its name, `match`, policies, and how it treats gRPC and
//! latency. Compiled by [`crate::route`]; `Protocol` and `Latency` keep their
//! public paths there and in [`crate::grpc`].

use serde::{Deserialize, Serialize};

use super::breaker::Breaker;
use super::canary::Canary;
use super::matcher::HeaderMatch;
use super::ratelimit::RateLimit;

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
    pub protocol: Option<Protocol>,
    /// What the duration histogram measures: `stream` (default: to the stream's
    /// end) or `headers` (to the response headers, for long streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
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

/// How a route treats gRPC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    /// A 200 response's `grpc-status` (in its headers or trailers) decides its
    /// outcome when present (default).
    #[default]
    Auto,
    /// As `auto`, and the route also counts `meshguard_grpc_requests_total` by
    /// `grpc_status`.
    Grpc,
    /// Never look for `grpc-status` (one host call fewer per 200 response).
    Http,
}

/// What a route's duration histogram measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Latency {
    /// From the request headers to the stream's end (default).
    #[default]
    Stream,
    /// From the request headers to the response headers: for routes of long
    /// streams (server-sent events, gRPC streaming), whose length is not latency.
    Headers,
}
