//! Validation and compilation: raw config → [`CompiledConfig`], or every problem found.
//!
//! One walk does both: each field is checked, and when it is valid its compiled
//! form is built. Any problem anywhere means no compiled config is returned, so
//! the filter never runs half a config.

use std::collections::HashSet;

use regex::bytes::{Regex, RegexBuilder};

use crate::breaker::compile_breaker;
use crate::canary::compile_canary;
use crate::compiled::{CompiledConfig, CompiledRoute, HeaderCondition, HostPattern, StringMatcher};
use crate::names::{check_header_name, check_name, is_tchar, UNMATCHED_ROUTE};
use crate::problem::{exactly_one, index, join, Problem, Problems};
use crate::ratelimit::compile_rate_limit;
use crate::raw::{Config, HeaderMatch, RateLimit, Route, RouteMatch, SCHEMA_VERSION};

/// Default request header for the chosen variant.
pub const DEFAULT_VARIANT_HEADER: &str = "x-meshguard-variant";
/// Default request header for the chosen variant's cluster.
pub const DEFAULT_CLUSTER_HEADER: &str = "x-meshguard-cluster";
/// Most routes a config may hold (each route is a metric label value).
pub const MAX_ROUTES: usize = 256;
/// Longest regular expression source accepted.
pub const MAX_REGEX_LEN: usize = 1024;
/// Compiled-program size limit per regex (bytes), so no regex can blow up memory.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Most header conditions per route.
pub const MAX_HEADER_MATCHES: usize = 32;
/// Most authority patterns per route.
pub const MAX_AUTHORITIES: usize = 64;

/// Checks `raw` and compiles it, or returns every problem with its field path.
pub fn validate(raw: &Config) -> Result<CompiledConfig, Vec<Problem>> {
    let mut p = Problems::default();
    if raw.schema_version != SCHEMA_VERSION {
        p.push(
            "schemaVersion",
            format!(
                "unsupported schema version {}, this meshguard reads version {SCHEMA_VERSION}",
                raw.schema_version
            ),
        );
    }
    if raw.routes.len() > MAX_ROUTES {
        p.push(
            "routes",
            format!("at most {MAX_ROUTES} routes, got {}", raw.routes.len()),
        );
    }
    let mut seen = HashSet::new();
    let mut limits = Vec::new();
    let mut limit_names = HashSet::new();
    let mut add_limits = |list: &[RateLimit], at: &str, p: &mut Problems| -> Vec<usize> {
        list.iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let c = compile_rate_limit(r, &index(at, i), &mut limit_names, p)?;
                limits.push(c);
                Some(limits.len() - 1)
            })
            .collect()
    };
    let global_rate_limits = add_limits(&raw.rate_limits, "rateLimits", &mut p);
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, route) in raw.routes.iter().enumerate() {
        let path = index("routes", i);
        if !route.name.is_empty() && !seen.insert(route.name.as_str()) {
            p.push(
                join(&path, "name"),
                format!("duplicate route name {:?}", route.name),
            );
        }
        let route_limits = add_limits(&route.rate_limits, &join(&path, "rateLimits"), &mut p);
        if let Some(mut r) = compile_route(route, &path, &mut p) {
            r.rate_limits = route_limits;
            routes.push(r);
        }
    }
    let route_header = raw.route_header.as_ref().and_then(|h| {
        check_header_name(h, false)
            .map_err(|e| p.push("routeHeader", e))
            .ok()
            .map(|()| h.clone())
    });
    let variant_header = raw
        .variant_header
        .clone()
        .unwrap_or_else(|| DEFAULT_VARIANT_HEADER.into());
    let cluster_header = raw
        .cluster_header
        .clone()
        .unwrap_or_else(|| DEFAULT_CLUSTER_HEADER.into());
    for (field, h) in [
        ("variantHeader", &variant_header),
        ("clusterHeader", &cluster_header),
    ] {
        if let Err(e) = check_header_name(h, false) {
            p.push(field, e);
        }
    }
    if variant_header == cluster_header {
        p.push(
            "clusterHeader",
            format!("must differ from variantHeader ({variant_header:?})"),
        );
    }
    if let Some(rh) = &route_header {
        if *rh == variant_header || *rh == cluster_header {
            p.push(
                "routeHeader",
                format!("{rh:?} is already the variant or cluster header"),
            );
        }
    }
    let count_unmatched = match raw.metrics.as_ref().and_then(|m| m.unmatched.as_deref()) {
        None | Some("count") => true,
        Some("skip") => false,
        Some(other) => {
            p.push(
                "metrics.unmatched",
                format!("must be count or skip, got {other:?}"),
            );
            true
        }
    };
    if p.is_empty() {
        Ok(CompiledConfig {
            count_unmatched,
            has_canary: routes.iter().any(|r| r.canary.is_some()),
            routes,
            route_header,
            variant_header,
            cluster_header,
            rate_limits: limits,
            global_rate_limits,
        })
    } else {
        Err(p.into_vec())
    }
}

fn compile_route(route: &Route, path: &str, p: &mut Problems) -> Option<CompiledRoute> {
    let mut ok = true;
    if let Err(e) = check_name(&route.name) {
        p.push(join(path, "name"), e);
        ok = false;
    } else if route.name == UNMATCHED_ROUTE {
        p.push(
            join(path, "name"),
            format!("{UNMATCHED_ROUTE:?} is reserved for requests that match no route"),
        );
        ok = false;
    }
    let m = compile_match(&route.matcher, &join(path, "match"), p);
    let canary = match &route.canary {
        Some(c) => match compile_canary(c, &route.name, &join(path, "canary"), p) {
            Some(c) => Some(c),
            None => return None,
        },
        None => None,
    };
    let breaker = match &route.breaker {
        Some(b) => Some(compile_breaker(
            b,
            canary.as_ref(),
            &join(path, "breaker"),
            p,
        )?),
        None => None,
    };
    match (ok, m) {
        (true, Some((authority, path_m, methods, headers))) => Some(CompiledRoute {
            name: route.name.clone(),
            authority,
            path: path_m,
            methods,
            headers,
            canary,
            rate_limits: Vec::new(),
            breaker,
        }),
        _ => None,
    }
}

type CompiledMatch = (
    Option<Vec<HostPattern>>,
    Option<StringMatcher>,
    Option<Vec<Vec<u8>>>,
    Vec<(String, HeaderCondition)>,
);

fn compile_match(m: &RouteMatch, path: &str, p: &mut Problems) -> Option<CompiledMatch> {
    let mut problems_here = Problems::default();

    let authority = m.authority.as_ref().map(|list| {
        let at = join(path, "authority");
        if list.is_empty() {
            problems_here.push(
                &at,
                "must list at least one host pattern (omit the field to match any)",
            );
        }
        if list.len() > MAX_AUTHORITIES {
            problems_here.push(
                &at,
                format!("at most {MAX_AUTHORITIES} patterns, got {}", list.len()),
            );
        }
        list.iter()
            .enumerate()
            .filter_map(|(i, h)| {
                host_pattern(h)
                    .map_err(|e| problems_here.push(index(&at, i), e))
                    .ok()
            })
            .collect::<Vec<_>>()
    });

    let path_choices = [
        ("pathExact", &m.path_exact),
        ("pathPrefix", &m.path_prefix),
        ("pathRegex", &m.path_regex),
    ];
    let given: Vec<&str> = path_choices
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(n, _)| *n)
        .collect();
    if given.len() > 1 {
        problems_here.push(
            path,
            format!(
                "give at most one of pathExact, pathPrefix, pathRegex; got {}",
                given.join(", ")
            ),
        );
    }
    let mut path_m = None;
    if let Some(v) = &m.path_exact {
        if !v.starts_with('/') {
            problems_here.push(join(path, "pathExact"), "must start with '/'");
        }
        path_m = Some(StringMatcher::Exact(v.as_bytes().to_vec()));
    }
    if let Some(v) = &m.path_prefix {
        if !v.starts_with('/') {
            problems_here.push(join(path, "pathPrefix"), "must start with '/'");
        }
        path_m = Some(StringMatcher::Prefix(v.as_bytes().to_vec()));
    }
    if let Some(v) = &m.path_regex {
        if let Some(re) = compile_regex(v, &join(path, "pathRegex"), &mut problems_here) {
            path_m = Some(StringMatcher::Regex(re));
        }
    }

    let methods = m.methods.as_ref().map(|list| {
        let at = join(path, "methods");
        if list.is_empty() {
            problems_here.push(
                &at,
                "must list at least one method (omit the field to allow any)",
            );
        }
        let mut seen = HashSet::new();
        for (i, meth) in list.iter().enumerate() {
            if meth.is_empty() || !meth.chars().all(is_tchar) {
                problems_here.push(
                    index(&at, i),
                    format!("{meth:?} is not a valid HTTP method token"),
                );
            } else if meth.chars().any(|c| c.is_ascii_lowercase()) {
                problems_here.push(
                    index(&at, i),
                    format!(
                        "methods are case-sensitive and uppercase: use {:?}",
                        meth.to_ascii_uppercase()
                    ),
                );
            } else if !seen.insert(meth.as_str()) {
                problems_here.push(index(&at, i), format!("duplicate method {meth:?}"));
            }
        }
        list.iter()
            .map(|s| s.as_bytes().to_vec())
            .collect::<Vec<_>>()
    });

    let at = join(path, "headers");
    if m.headers.len() > MAX_HEADER_MATCHES {
        problems_here.push(
            &at,
            format!(
                "at most {MAX_HEADER_MATCHES} header conditions, got {}",
                m.headers.len()
            ),
        );
    }
    let headers = m
        .headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| header_condition(h, &index(&at, i), &mut problems_here))
        .collect();

    let clean = problems_here.merge_into(p);
    clean.then_some((authority, path_m, methods, headers))
}

/// Compiles one header condition, or records why it cannot be.
pub fn header_condition(
    h: &HeaderMatch,
    path: &str,
    p: &mut Problems,
) -> Option<(String, HeaderCondition)> {
    let mut ok = true;
    if let Err(e) = check_header_name(&h.name, true) {
        p.push(join(path, "name"), e);
        ok = false;
    }
    let choices = [
        ("exact", h.exact.is_some()),
        ("prefix", h.prefix.is_some()),
        ("suffix", h.suffix.is_some()),
        ("regex", h.regex.is_some()),
        ("present", h.present.is_some()),
    ];
    exactly_one(path, &choices, p)?;
    let cond = if let Some(v) = &h.exact {
        HeaderCondition::Value(StringMatcher::Exact(v.as_bytes().to_vec()))
    } else if let Some(v) = &h.prefix {
        HeaderCondition::Value(StringMatcher::Prefix(v.as_bytes().to_vec()))
    } else if let Some(v) = &h.suffix {
        HeaderCondition::Value(StringMatcher::Suffix(v.as_bytes().to_vec()))
    } else if let Some(v) = &h.regex {
        HeaderCondition::Value(StringMatcher::Regex(compile_regex(
            v,
            &join(path, "regex"),
            p,
        )?))
    } else {
        HeaderCondition::Present(h.present.unwrap_or(true))
    };
    ok.then(|| (h.name.clone(), cond))
}

/// Compiles a whole-value regex with size limits, or records why it cannot be.
pub fn compile_regex(src: &str, path: &str, p: &mut Problems) -> Option<Regex> {
    if src.len() > MAX_REGEX_LEN {
        p.push(
            path,
            format!("regex longer than {MAX_REGEX_LEN} characters"),
        );
        return None;
    }
    RegexBuilder::new(&format!("^(?:{src})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let msg = match e {
                regex::Error::CompiledTooBig(_) => {
                    format!("regex compiles larger than the {REGEX_SIZE_LIMIT}-byte limit")
                }
                other => format!("invalid regex: {}", one_line(&other.to_string())),
            };
            p.push(path, msg);
        })
        .ok()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses an Envoy-style domain pattern.
fn host_pattern(h: &str) -> Result<HostPattern, String> {
    if h == "*" {
        return Ok(HostPattern::Any);
    }
    if h.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(bad) = h
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-.:[]*_".contains(*c)))
    {
        return Err(format!("{h:?} is not a host pattern: {bad:?} not allowed"));
    }
    let with_port = crate::compiled::strip_port(h.as_bytes()).len() != h.len();
    let lower = h.to_ascii_lowercase().into_bytes();
    let stars = h.matches('*').count();
    match (stars, h.strip_prefix('*'), h.strip_suffix('*')) {
        (0, _, _) => Ok(HostPattern::Exact {
            host: lower,
            with_port,
        }),
        (1, Some(rest), _) if !rest.is_empty() => Ok(HostPattern::Suffix {
            suffix: rest.to_ascii_lowercase().into_bytes(),
            with_port,
        }),
        (1, _, Some(rest)) if !rest.is_empty() => Ok(HostPattern::Prefix {
            prefix: rest.to_ascii_lowercase().into_bytes(),
            with_port,
        }),
        _ => Err(format!(
            "{h:?}: a wildcard '*' may appear once, at the start or the end, or alone"
        )),
    }
}
