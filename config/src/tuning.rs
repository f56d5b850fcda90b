//! How meshguard talks to its host: which routing headers it writes, whether it
//! asks Envoy to re-pick the route, how it reads request headers, where the client
//! address comes from, and when counters reach Envoy. Each choice trades a host
//! call per request against something a user may want (docs/src/performance.md).

use crate::names::check_header_name;
use crate::problem::Problems;
use crate::raw::Config;

// The choices as written live with the rest of the raw config; these are the
// paths other crates name them by.
pub use crate::raw::tuning::{
    ClientAddress, CounterUpdates, RequestHeaders, RouteCache, RoutingHeaders, ALL_HEADERS_FROM,
};

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
/// [`resolve_header_reads`](crate::reads::resolve_header_reads) once the rest is
/// compiled.
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
}
