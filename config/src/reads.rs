//! Which request headers a compiled config may read, and `requestHeaders: auto`
//! resolved from them. It reads the whole compiled config (routes, canary rules,
//! rate-limit keys, `explain`), so it runs once that is built: [`crate::validate`]
//! calls it last.

use std::collections::BTreeSet;

use crate::canary::{RuleSource, StickyKey};
use crate::compiled::CompiledConfig;
use crate::ratelimit::KeyPart;
use crate::raw::{Config, RequestHeaders};
use crate::tuning::ALL_HEADERS_FROM;

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
        if let crate::ratelimit::CompiledCost::Header { name, .. } = &l.cost {
            names.insert(name.clone());
        }
        for part in &l.key {
            match part {
                KeyPart::Header(h) => {
                    names.insert(h.clone());
                }
                KeyPart::Path | KeyPart::Query(_) => {
                    names.insert(":path".into());
                }
                KeyPart::Cookie(_) => {
                    names.insert("cookie".into());
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

    fn compiled(extra: &str, routes: &str) -> crate::CompiledConfig {
        load_json(format!(r#"{{"schemaVersion":1{extra},"routes":{routes}}}"#).as_bytes()).unwrap()
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
