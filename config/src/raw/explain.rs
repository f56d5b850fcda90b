//! `explain` as written: compiled by [`crate::explain`], which also gives it its
//! public path (`explain::Explain`).

use serde::{Deserialize, Serialize};

/// How meshguard explains itself (all off by default).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Explain {
    /// Callers (CIDR blocks or addresses, from the client address meshguard uses)
    /// who may ask for the decision header and read the status document.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_sources: Vec<String>,
    /// Write every decision to Envoy filter state `wasm.meshguard.decision`, for
    /// access logs: `%FILTER_STATE(wasm.meshguard.decision:PLAIN)%`.
    #[serde(default)]
    pub filter_state: bool,
    /// Answer a trusted caller that sends `askHeader` with the decision record in
    /// the `decisionHeader` response header.
    #[serde(default)]
    pub header: bool,
    /// The request header that asks (any value; default `x-meshguard-explain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask_header: Option<String>,
    /// The response header that answers (default `x-meshguard-decision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_header: Option<String>,
    /// Log every decision at debug level (Envoy's `wasm` logger).
    #[serde(default)]
    pub log: bool,
    /// The path (without query) where trusted callers read the status document,
    /// e.g. `/.well-known/meshguard/status`. Others get the path's normal treatment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_path: Option<String>,
}
