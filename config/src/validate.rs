//! The whole document: raw config → [`CompiledConfig`], or every problem found.
//!
//! One walk does both: each part is checked by its own module ([`crate::route`],
//! [`crate::ratelimit`], and through the route [`crate::canary`] and
//! [`crate::breaker`]), which builds the compiled form when it is valid. Any
//! problem anywhere means no compiled config is returned, so the filter never runs
//! half a config.

use std::collections::HashSet;

use crate::compiled::CompiledConfig;
use crate::explain::compile_explain;
use crate::fleet::compile_fleet_service;
use crate::names::check_header_name;
use crate::problem::{at_most, index, join, Problem, Problems};
use crate::ratelimit::{compile_rate_limit, compile_service};
use crate::raw::{Config, RateLimit, SCHEMA_VERSION};
use crate::reads::resolve_header_reads;
use crate::route::compile_route;
use crate::tuning::compile_tuning;

/// Default request header for the chosen variant.
pub const DEFAULT_VARIANT_HEADER: &str = "x-meshguard-variant";
/// Default request header for the chosen variant's cluster.
pub const DEFAULT_CLUSTER_HEADER: &str = "x-meshguard-cluster";
/// Most routes a config may hold (each route is a metric label value).
pub const MAX_ROUTES: usize = 256;

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
    at_most(&mut p, "routes", raw.routes.len(), MAX_ROUTES, "routes");
    let rate_limit_service = raw
        .rate_limit_service
        .as_ref()
        .and_then(|s| compile_service(s, "rateLimitService", &mut p));
    let has_service = raw.rate_limit_service.is_some();
    let fleet_service = raw
        .fleet_service
        .as_ref()
        .and_then(|s| compile_fleet_service(s, "fleetService", &mut p));
    if raw.fleet_service.is_none() {
        for (i, route) in raw.routes.iter().enumerate() {
            if route.canary.as_ref().is_some_and(|c| c.fleet.is_some()) {
                p.push(
                    join(&join(&index("routes", i), "canary"), "fleet"),
                    "needs fleetService (the service that judges the fleet's counts)",
                );
            }
        }
    }
    let mut seen = HashSet::new();
    let mut limits = Vec::new();
    let mut limit_names = HashSet::new();
    let mut add_limits = |list: &[RateLimit], at: &str, p: &mut Problems| -> Vec<usize> {
        list.iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let c = compile_rate_limit(r, &index(at, i), &mut limit_names, has_service, p)?;
                limits.push(c);
                Some(limits.len() - 1)
            })
            .collect()
    };
    let top_level_rate_limits = add_limits(&raw.rate_limits, "rateLimits", &mut p);
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
    let tuning = compile_tuning(raw, &mut p);
    let taken: Vec<&str> = [
        Some(&variant_header),
        Some(&cluster_header),
        route_header.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(String::as_str)
    .collect();
    let explain = raw
        .explain
        .as_ref()
        .and_then(|e| compile_explain(e, "explain", &taken, &mut p));
    if p.is_empty() {
        let mut config = CompiledConfig {
            count_unmatched,
            has_canary: routes.iter().any(|r| r.canary.is_some()),
            routes,
            route_header,
            variant_header,
            cluster_header,
            rate_limits: limits,
            top_level_rate_limits,
            rate_limit_service,
            fleet_service,
            tuning,
            explain,
            revision: 0,
        };
        resolve_header_reads(raw, &mut config);
        Ok(config)
    } else {
        Err(p.into_vec())
    }
}
