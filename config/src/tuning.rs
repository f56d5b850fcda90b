//! How meshguard talks to its host: which routing headers it writes, whether it
//! asks Envoy to re-pick the route, how it reads request headers, where the client
//! address comes from, and when counters reach Envoy. Each choice trades a host
//! call per request against something a user may want (docs/src/performance.md).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::canary::{RuleSource, StickyKey};
use crate::compiled::CompiledConfig;
use crate::names::check_header_name;
use crate::problem::Problems;
use crate::ratelimit::KeyPart;
use crate::raw::Config;

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

/// The compiled choices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuning {
    /// Which routing headers canary routes write.
    pub routing_headers: RoutingHeaders,
    /// How the route is re-picked.
    pub route_cache: RouteCache,
    /// Read every request header in one call (`auto` resolved).
    pub read_all_headers: bool,
    /// The header the client address is read from, if any.
    pub client_address_header: Option<String>,
    /// Counters batched per worker and flushed on the tick.
    pub batch_counters: bool,
}

/// Checks the raw choices and returns them; `auto` header reads are resolved by
/// [`resolve_header_reads`] once the rest is compiled.
pub fn compile_tuning(raw: &Config, p: &mut Problems) -> Tuning {
    let client_address_header = raw.client_address.as_ref().and_then(|c| {
        check_header_name(&c.header, false)
            .map_err(|e| p.push("clientAddress.header", e))
            .ok()
            .map(|()| c.header.clone())
    });
    Tuning {
        routing_headers: raw.routing_headers.unwrap_or_default(),
        route_cache: raw.route_cache.unwrap_or_default(),
        read_all_headers: raw.request_headers == Some(RequestHeaders::All),
        client_address_header,
        batch_counters: raw
            .metrics
            .as_ref()
            .and_then(|m| m.counters)
            .unwrap_or_default()
            == CounterUpdates::Batched,
    }
}

/// With `requestHeaders: auto`, configs that may read this many headers per request
/// read them all in one call. Measured (`make bench --prices`, Envoy 1.40): one
/// all-headers call costs 2.1 µs with a mesh call's 8 headers and 2.7 µs with a
/// browser's 15, one single read 1.3 µs; so one call wins from three headers on.
pub const ALL_HEADERS_FROM: usize = 3;

/// Resolves `requestHeaders: auto` (see [`ALL_HEADERS_FROM`]).
pub fn resolve_header_reads(raw: &Config, config: &mut CompiledConfig) {
    if raw.request_headers.unwrap_or_default() == RequestHeaders::Auto {
        config.tuning.read_all_headers = headers_read(config).len() >= ALL_HEADERS_FROM;
    }
}

/// Every request header (pseudo-headers included) the config may read for some
/// request: route conditions, canary rules and sticky keys, the routing header of
/// trusted callers, rate-limit keys, the client-address header, and what
/// `explain` reads (its ask header, `:path` for the status path).
pub fn headers_read(config: &CompiledConfig) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let client_address = |names: &mut BTreeSet<String>| {
        if let Some(h) = &config.tuning.client_address_header {
            names.insert(h.clone());
        }
    };
    // Several routes: choosing one reads what their conditions need.
    for r in &config.routes {
        if r.authority.is_some() {
            names.insert(":authority".into());
        }
        if r.path.is_some() {
            names.insert(":path".into());
        }
        if r.methods.is_some() {
            names.insert(":method".into());
        }
        names.extend(r.headers.iter().map(|h| h.name.clone()));
        let Some(c) = &r.canary else { continue };
        for rule in &c.rules {
            names.insert(match &rule.source {
                RuleSource::Header(h) => h.clone(),
                RuleSource::Cookie(_) => "cookie".into(),
                RuleSource::Query(_) => ":path".into(),
            });
        }
        match c.sticky.as_ref().map(|s| &s.key) {
            Some(StickyKey::Header(h)) => {
                names.insert(h.clone());
            }
            Some(StickyKey::Cookie(_)) => {
                names.insert("cookie".into());
            }
            Some(StickyKey::ClientAddress) => client_address(&mut names),
            None => {}
        }
        if !c.trusted.is_empty() {
            names.insert(config.variant_header.clone());
            client_address(&mut names);
        }
    }
    if let Some(e) = &config.explain {
        if let Some((ask, _)) = &e.header {
            names.insert(ask.clone());
        }
        if e.status_path.is_some() {
            names.insert(":path".into());
        }
        if e.header.is_some() || e.status_path.is_some() {
            client_address(&mut names);
        }
    }
    for l in &config.rate_limits {
        for part in &l.key {
            match part {
                KeyPart::Header(h) => {
                    names.insert(h.clone());
                }
                KeyPart::Path => {
                    names.insert(":path".into());
                }
                KeyPart::Method => {
                    names.insert(":method".into());
                }
                KeyPart::ClientAddress { .. } => client_address(&mut names),
                KeyPart::Route | KeyPart::Constant(_) => {}
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use crate::load_json;

    fn problems(json: &str) -> Vec<String> {
        match load_json(json.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(list) => list.iter().map(ToString::to_string).collect(),
        }
    }

    fn compiled(extra: &str, routes: &str) -> crate::CompiledConfig {
        load_json(format!(r#"{{"schemaVersion":1{extra},"routes":{routes}}}"#).as_bytes()).unwrap()
    }

    #[test]
    fn each_routing_headers_choice_writes_its_headers() {
        use super::RoutingHeaders::{Both, Cluster, Variant};
        let writes: Vec<(bool, bool)> = [Both, Variant, Cluster]
            .iter()
            .map(|h| (h.variant(), h.cluster()))
            .collect();
        assert_eq!(writes, vec![(true, true), (true, false), (false, true)]);
    }

    #[test]
    fn defaults_are_both_headers_auto_cache_and_batched_counters() {
        let c = compiled("", r#"[{"name":"web"}]"#);
        assert_eq!(c.tuning.routing_headers, super::RoutingHeaders::Both);
        assert_eq!(c.tuning.route_cache, super::RouteCache::Auto);
        assert!(c.tuning.batch_counters && !c.tuning.read_all_headers);
        assert_eq!(c.tuning.client_address_header, None);
        let c = compiled(
            r#","routingHeaders":"cluster","routeCache":"clear","requestHeaders":"all","clientAddress":{"header":"x-client-ip"},"metrics":{"counters":"immediate"}"#,
            r#"[{"name":"web"}]"#,
        );
        assert_eq!(c.tuning.routing_headers, super::RoutingHeaders::Cluster);
        assert_eq!(c.tuning.route_cache, super::RouteCache::Clear);
        assert!(!c.tuning.batch_counters && c.tuning.read_all_headers);
        assert_eq!(
            c.tuning.client_address_header.as_deref(),
            Some("x-client-ip")
        );
    }

    #[test]
    fn each_bad_choice_names_its_field() {
        for (json, want) in [
            (
                r#"{"schemaVersion":1,"routingHeaders":"none"}"#,
                "routingHeaders: unknown variant `none`",
            ),
            (
                r#"{"schemaVersion":1,"routeCache":"never"}"#,
                "routeCache: unknown variant `never`",
            ),
            (
                r#"{"schemaVersion":1,"requestHeaders":"some"}"#,
                "requestHeaders: unknown variant `some`",
            ),
            (
                r#"{"schemaVersion":1,"metrics":{"counters":"later"}}"#,
                "metrics.counters: unknown variant `later`",
            ),
            (
                r#"{"schemaVersion":1,"clientAddress":{}}"#,
                "clientAddress: missing field `header`",
            ),
            (
                r#"{"schemaVersion":1,"clientAddress":{"header":"X-Client"}}"#,
                "clientAddress.header: ",
            ),
            (
                r#"{"schemaVersion":1,"clientAddress":{"header":"x","from":"y"}}"#,
                "clientAddress.from: unknown field",
            ),
        ] {
            let got = problems(json);
            assert!(
                got.len() == 1 && got[0].starts_with(want),
                "{json}: {got:?}"
            );
        }
    }

    #[test]
    fn auto_reads_all_headers_from_three_names_on() {
        let canary = |rules: &str| {
            format!(
                r#"[{{"name":"web","match":{{"pathPrefix":"/"}},"canary":{{"variants":[{{"name":"a","weight":5000}},{{"name":"b","weight":5000}}],"sticky":{{"header":"x-user-id"}}{rules}}}}}]"#
            )
        };
        let two = compiled("", &canary(""));
        assert_eq!(
            super::headers_read(&two).into_iter().collect::<Vec<_>>(),
            [":path", "x-user-id"]
        );
        assert!(!two.tuning.read_all_headers);
        let three = compiled(
            "",
            &canary(r#","rules":[{"variant":"b","cookie":{"name":"beta","present":true}}]"#),
        );
        assert_eq!(super::headers_read(&three).len(), 3);
        assert!(three.tuning.read_all_headers);
        let each = compiled(r#","requestHeaders":"each""#, &three_routes());
        assert!(!each.tuning.read_all_headers);
        // The client-address header counts once a policy reads the address.
        let limited = compiled(
            r#","clientAddress":{"header":"x-client-ip"},"rateLimits":[{"name":"per-ip","key":[{"clientAddress":{}},{"header":"x-tenant"}],"limit":{"burst":5,"rate":5,"per":"second"}}]"#,
            r#"[{"name":"web","match":{"pathPrefix":"/"}}]"#,
        );
        assert_eq!(
            super::headers_read(&limited)
                .into_iter()
                .collect::<Vec<_>>(),
            [":path", "x-client-ip", "x-tenant"]
        );
        assert!(limited.tuning.read_all_headers);
    }

    #[test]
    fn explain_reads_the_client_address_for_its_header_or_its_status_path() {
        let read = |explain: &str| {
            let c = compiled(
                &format!(
                    r#","clientAddress":{{"header":"x-client-ip"}},"explain":{{"trustedSources":["10.0.0.0/8"]{explain}}}"#
                ),
                r#"[{"name":"web"}]"#,
            );
            super::headers_read(&c)
        };
        assert!(read(r#","header":true"#).contains("x-client-ip"));
        let status = read(r#","statusPath":"/.well-known/meshguard/status""#);
        assert!(status.contains("x-client-ip") && status.contains(":path"));
        assert!(!read("").contains("x-client-ip"));
    }

    fn three_routes() -> String {
        r#"[{"name":"a","match":{"pathPrefix":"/a","authority":["a.example"]}},{"name":"b","match":{"methods":["GET"]}}]"#.into()
    }
}
