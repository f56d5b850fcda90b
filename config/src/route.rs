//! One route: its name and match conditions checked and compiled, with its canary
//! policy and breaker. Every problem of the route is reported, also when one part
//! is invalid (a broken canary policy does not hide the breaker's problems).

use std::collections::HashSet;

use crate::breaker::compile_breaker;
use crate::canary::compile_canary;
use crate::compiled::CompiledRoute;
use crate::matcher::{
    compile_regex, header_condition, host_pattern, HeaderMatcher, HostPattern, StringMatcher,
};
use crate::names::{check_name, is_tchar, UNMATCHED_ROUTE};
use crate::problem::{bounded_list, index, join, Problems};
use crate::raw::{Route, RouteMatch};

// What a route's duration histogram measures (`routes[].latency`): a raw config type.
pub use crate::raw::Latency;

/// Most header conditions per route.
pub const MAX_HEADER_MATCHES: usize = 32;
/// Most authority patterns per route.
pub const MAX_AUTHORITIES: usize = 64;

/// Validates and compiles `routes[i]` (`path` is that entry's path).
pub fn compile_route(route: &Route, path: &str, p: &mut Problems) -> Option<CompiledRoute> {
    let mut local = Problems::default();
    if let Err(e) = check_name(&route.name) {
        local.push(join(path, "name"), e);
    } else if route.name == UNMATCHED_ROUTE {
        local.push(
            join(path, "name"),
            format!("{UNMATCHED_ROUTE:?} is reserved for requests that match no route"),
        );
    }
    let m = compile_match(&route.matcher, &join(path, "match"), &mut local);
    let canary = route
        .canary
        .as_ref()
        .and_then(|c| compile_canary(c, &route.name, &join(path, "canary"), &mut local));
    // The breaker names variants by name; it is checked against the raw policy so
    // its problems are reported even when the canary policy itself is invalid.
    let variant_names: Option<Vec<&str>> = route
        .canary
        .as_ref()
        .map(|c| c.variants.iter().map(|v| v.name.as_str()).collect());
    let breaker = route.breaker.as_ref().and_then(|b| {
        compile_breaker(
            b,
            variant_names.as_deref(),
            &join(path, "breaker"),
            &mut local,
        )
    });
    // An analysis without statuses of its own counts errors as the breaker does.
    let mut canary = canary;
    if let (Some(b), Some(a)) = (
        &breaker,
        canary
            .as_mut()
            .and_then(|c| c.rollout.as_mut())
            .and_then(|r| r.analysis.as_mut()),
    ) {
        if !a.own_failures {
            a.failures.classes = b.failures.classes.clone();
            a.failures.codes = b.failures.codes.clone();
        }
        if !a.own_grpc {
            a.failures.grpc = b.failures.grpc.clone();
        }
    }
    let clean = local.merge_into(p);
    let m = m?;
    clean.then(|| CompiledRoute {
        name: route.name.clone(),
        authority: m.authority,
        path: m.path,
        methods: m.methods,
        headers: m.headers,
        canary,
        rate_limits: Vec::new(),
        breaker,
        protocol: route.protocol.unwrap_or_default(),
        latency: route.latency.unwrap_or_default(),
    })
}

/// A route's compiled `match`.
struct CompiledMatch {
    authority: Option<Vec<HostPattern>>,
    path: Option<StringMatcher>,
    methods: Option<Vec<Vec<u8>>>,
    headers: Vec<HeaderMatcher>,
}

fn compile_match(m: &RouteMatch, path: &str, p: &mut Problems) -> Option<CompiledMatch> {
    let mut here = Problems::default();

    let authority = m.authority.as_ref().map(|list| {
        let at = join(path, "authority");
        if list.is_empty() {
            here.push(
                &at,
                "must list at least one host pattern (omit the field to match any)",
            );
        }
        bounded_list(
            &mut here,
            &at,
            list,
            (MAX_AUTHORITIES, "patterns"),
            |h, at, p| host_pattern(h).map_err(|e| p.push(at, e)).ok(),
        )
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
        here.push(
            path,
            format!(
                "give at most one of pathExact, pathPrefix, pathRegex; got {}",
                given.join(", ")
            ),
        );
    }
    let mut path_m = None;
    for (field, value, make) in [
        (
            "pathExact",
            &m.path_exact,
            StringMatcher::Exact as fn(Vec<u8>) -> StringMatcher,
        ),
        ("pathPrefix", &m.path_prefix, StringMatcher::Prefix),
    ] {
        if let Some(v) = value {
            if !v.starts_with('/') {
                here.push(join(path, field), "must start with '/'");
            }
            path_m = Some(make(v.as_bytes().to_vec()));
        }
    }
    if let Some(v) = &m.path_regex {
        if let Some(re) = compile_regex(v, &join(path, "pathRegex"), &mut here) {
            path_m = Some(StringMatcher::Regex(re));
        }
    }

    let methods = m.methods.as_ref().map(|list| {
        let at = join(path, "methods");
        if list.is_empty() {
            here.push(
                &at,
                "must list at least one method (omit the field to allow any)",
            );
        }
        let mut seen = HashSet::new();
        for (i, meth) in list.iter().enumerate() {
            if meth.is_empty() || !meth.chars().all(is_tchar) {
                here.push(
                    index(&at, i),
                    format!("{meth:?} is not a valid HTTP method token"),
                );
            } else if meth.chars().any(|c| c.is_ascii_lowercase()) {
                here.push(
                    index(&at, i),
                    format!(
                        "methods are case-sensitive and uppercase: use {:?}",
                        meth.to_ascii_uppercase()
                    ),
                );
            } else if !seen.insert(meth.as_str()) {
                here.push(index(&at, i), format!("duplicate method {meth:?}"));
            }
        }
        list.iter()
            .map(|s| s.as_bytes().to_vec())
            .collect::<Vec<_>>()
    });

    let headers = bounded_list(
        &mut here,
        &join(path, "headers"),
        &m.headers,
        (MAX_HEADER_MATCHES, "header conditions"),
        header_condition,
    );

    here.merge_into(p).then_some(CompiledMatch {
        authority,
        path: path_m,
        methods,
        headers,
    })
}
