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
