//! A condition on a request header (or a canary rule's cookie or query
//! parameter), as written: compiled by [`crate::matcher`].

use serde::{Deserialize, Serialize};

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
