//! A canary policy as written (`routes[].canary`): variants, override rules, the
//! sticky key, and the fields of its rollout. Compiled by [`crate::canary`].

use serde::{Deserialize, Serialize};

use super::fleet::CanaryFleet;
use super::matcher::HeaderMatch;
use super::rollout::{Analysis, Ramp};

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
