//! The host choices as written (`routingHeaders`, `routeCache`, `requestHeaders`,
//! `clientAddress`, `metrics.counters`): compiled by [`crate::tuning`], which also
//! gives them their public paths (`tuning::RouteCache`, ...).

use serde::{Deserialize, Serialize};

/// Which routing headers a canary route writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum RoutingHeaders {
    /// The variant header and the cluster header (default).
    #[default]
    Both,
    /// Only the variant header (Istio VirtualService header matches, services that
    /// propagate the variant).
    Variant,
    /// Only the cluster header (Envoy routes with `cluster_header`).
    Cluster,
}

impl RoutingHeaders {
    /// Whether the variant header is written.
    pub fn variant(self) -> bool {
        self != RoutingHeaders::Cluster
    }
    /// Whether the cluster header is written.
    pub fn cluster(self) -> bool {
        self != RoutingHeaders::Variant
    }
}

/// How Envoy is made to pick the route again after the routing headers change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum RouteCache {
    /// Rely on Envoy clearing the route cache itself when a module built for
    /// Proxy-Wasm ABI 0.2.1 edits request headers; call `clear_route_cache` only
    /// when the module targets another ABI (default).
    #[default]
    Auto,
    /// Always call `clear_route_cache` after writing routing headers.
    Clear,
}

/// How request headers are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum RequestHeaders {
    /// `all` when the config may read [`ALL_HEADERS_FROM`] or more headers per
    /// request, else `each` (default).
    #[default]
    Auto,
    /// One host call per header, when a condition first needs it.
    Each,
    /// Every request header in one host call, on the first read.
    All,
}

/// With `requestHeaders: auto`, configs that may read this many headers per request
/// read them all in one call. Measured (`make bench --prices`, Envoy 1.40): one
/// all-headers call costs 2.1 µs with a mesh call's 8 headers and 2.7 µs with a
/// browser's 15, one single read 1.3 µs; so one call wins from three headers on.
pub const ALL_HEADERS_FROM: usize = 3;

/// When counters (and the in-flight gauge) reach Envoy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum CounterUpdates {
    /// Each worker adds up its counts and hands them to Envoy on its next tick,
    /// at most 50 ms late (default).
    #[default]
    Batched,
    /// One host call per count, as it happens.
    Immediate,
}

/// Where the client address comes from.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientAddress {
    /// A request header that an earlier filter sets to the downstream address
    /// (e.g. `request_headers_to_add` with `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`,
    /// overwriting any client copy). Absent or unparsable: Envoy's `source.address`.
    pub header: String,
}
