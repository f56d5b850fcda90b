//! Canary policies: the compiled form and its validation.
//!
//! The split is precomputed as ascending slices of the 0..10000 bucket space. The
//! first variant (the baseline) owns the bottom slice; the others are stacked from
//! the top down in list order. With the usual two variants, raising the canary's
//! weight only grows its slice downwards into the baseline's: users move from
//! stable to canary and never back (a monotone ramp).
//!
//! A policy's rollout is compiled with it, in `canary::rollout` (and its spec for
//! the fleet service written in `canary::fleet_spec`); other crates name both
//! through [`crate::rollout`].

use std::collections::HashSet;

use crate::cidr::Cidr;
use crate::matcher::{value_condition, ValueCondition};
use crate::names::{check_header_name, check_name, check_param_name, ALL_VARIANTS, NO_VARIANT};
use crate::problem::{bounded_list, exactly_one, in_range, index, join, Problems};
use crate::raw::{Canary, CanaryRule, Sticky};
use rollout::{compile_rollout, CompiledRollout};

pub(crate) mod fleet_spec;
pub(crate) mod rollout;

/// Variant labels meshguard uses itself: `none` (no canary policy) and `all` (one
/// breaker for every variant).
pub const RESERVED_VARIANTS: [&str; 2] = [NO_VARIANT, ALL_VARIANTS];

/// Buckets in the split: weights are basis points.
pub const BUCKETS: u32 = 10_000;
/// Most variants per policy (each is a metric label value).
pub const MAX_VARIANTS: usize = 16;
/// Most override rules per policy.
pub const MAX_RULES: usize = 64;
/// Default `Max-Age` of an issued sticky cookie: 30 days.
pub const DEFAULT_COOKIE_MAX_AGE: u32 = 30 * 24 * 3600;
/// Longest `Max-Age` browsers honour (RFC 6265bis caps it at 400 days).
pub const MAX_COOKIE_MAX_AGE: u32 = 400 * 24 * 3600;

/// A compiled canary policy.
#[derive(Debug, Clone)]
pub struct CompiledCanary {
    /// Variants in config order; index 0 is the baseline.
    pub variants: Vec<CompiledVariant>,
    /// Override rules in order.
    pub rules: Vec<CompiledRule>,
    /// Ascending `(end, variant)` slices covering 0..10000; empty slices left out.
    pub slices: Vec<(u32, usize)>,
    /// Sticky key, if the split is sticky.
    pub sticky: Option<CompiledSticky>,
    /// Trusted caller blocks.
    pub trusted: Vec<Cidr>,
    /// Tag the response with the variant header.
    pub respond_with_variant: bool,
    /// Each variant's weight, basis points, as configured (with a ramp: its first
    /// step); `slices` is laid out from these.
    pub weights: Vec<u32>,
    /// The rollout (analysis, ramp, manual control), if any.
    pub rollout: Option<CompiledRollout>,
}

/// A variant with its cluster resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledVariant {
    /// Variant name.
    pub name: String,
    /// Envoy cluster for `cluster_header` routing.
    pub cluster: String,
}

/// Where a rule looks.
#[derive(Debug, Clone)]
pub enum RuleSource {
    /// A request header (lowercase name).
    Header(String),
    /// A cookie by name.
    Cookie(String),
    /// A query parameter by name (values percent-decoded before matching).
    Query(String),
}

/// A compiled override rule.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Index of the variant it sends to.
    pub variant: usize,
    /// What it looks at.
    pub source: RuleSource,
    /// The condition on the value found there (`None` when absent).
    pub condition: ValueCondition,
    /// Only for trusted callers.
    pub trusted_only: bool,
}

/// The key of a sticky split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    /// A request header.
    Header(String),
    /// A cookie.
    Cookie(String),
    /// The client address (IPv6 grouped by /64).
    ClientAddress,
}

/// A compiled sticky configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledSticky {
    /// Where the key comes from.
    pub key: StickyKey,
    /// Hash salt.
    pub salt: Vec<u8>,
    /// With a cookie key: the `Set-Cookie` attributes to issue a fresh key with,
    /// e.g. `Max-Age=2592000; Path=/; HttpOnly; SameSite=Lax; Secure`.
    pub issue_cookie: Option<String>,
}

/// Validates and compiles `routes[i].canary` (`path` is that field's path).
pub fn compile_canary(
    c: &Canary,
    route_name: &str,
    path: &str,
    p: &mut Problems,
) -> Option<CompiledCanary> {
    let mut local = Problems::default();
    let vpath = join(path, "variants");
    if c.variants.len() < 2 || c.variants.len() > MAX_VARIANTS {
        local.push(
            &vpath,
            format!(
                "need 2 to {MAX_VARIANTS} variants, got {}",
                c.variants.len()
            ),
        );
    }
    let mut names = HashSet::new();
    let mut variants = Vec::with_capacity(c.variants.len());
    let mut sum: u64 = 0;
    let mut weights: Vec<u32> = c.variants.iter().map(|v| v.weight).collect();
    for (i, v) in c.variants.iter().enumerate() {
        let at = index(&vpath, i);
        if let Err(e) = check_name(&v.name) {
            local.push(join(&at, "name"), e);
        } else if RESERVED_VARIANTS.contains(&v.name.as_str()) {
            local.push(
                join(&at, "name"),
                format!(
                    "{:?} is reserved (it labels metrics of routes without variants)",
                    v.name
                ),
            );
        } else if !names.insert(v.name.as_str()) {
            local.push(join(&at, "name"), format!("duplicate variant {:?}", v.name));
        }
        in_range(
            &mut local,
            &join(&at, "weight"),
            v.weight,
            (0, BUCKETS),
            " basis points",
        );
        sum += u64::from(v.weight);
        let cluster = v.cluster.clone().unwrap_or_else(|| v.name.clone());
        if !crate::names::usable_cluster_name(&cluster) {
            local.push(
                join(&at, "cluster"),
                format!("{cluster:?} is not a usable Envoy cluster name"),
            );
        }
        variants.push(CompiledVariant {
            name: v.name.clone(),
            cluster,
        });
    }
    if let Some(ramp) = &c.ramp {
        let first = ramp.steps.first().copied().unwrap_or(0);
        if let Some(i) = c.variants.iter().position(|v| v.weight != 0) {
            local.push(
                join(&index(&vpath, i), "weight"),
                "set by ramp.steps: leave the variants' weights out",
            );
        }
        weights = vec![BUCKETS.saturating_sub(first), first];
    } else if sum != u64::from(BUCKETS) && !c.variants.is_empty() {
        local.push(
            &vpath,
            format!("weights must sum to {BUCKETS} basis points, got {sum}"),
        );
    }
    let find = |name: &str| c.variants.iter().position(|v| v.name == name);
    let rules = bounded_list(
        &mut local,
        &join(path, "rules"),
        &c.rules,
        (MAX_RULES, "rules"),
        |r, at, p| compile_rule(r, at, &find, p),
    );
    let sticky = c
        .sticky
        .as_ref()
        .and_then(|s| compile_sticky(s, route_name, &join(path, "sticky"), &mut local));
    let trusted = crate::cidr::parse_list(
        &c.trusted_sources,
        &join(path, "trustedSources"),
        &mut local,
    );
    if trusted.is_empty() {
        if let Some(i) = c.rules.iter().position(|r| r.trusted_only) {
            local.push(
                join(&index(&join(path, "rules"), i), "trustedOnly"),
                "no caller can be trusted: set trustedSources, or drop trustedOnly",
            );
        }
    }
    let rollout = compile_rollout(c, route_name, path, &mut local);
    let ok = local.merge_into(p);
    ok.then(|| CompiledCanary {
        slices: slices(weights.iter().copied()),
        weights,
        variants,
        rules,
        sticky,
        trusted,
        respond_with_variant: c.respond_with_variant,
        rollout,
    })
}

/// Lays weights out as ascending slices: baseline at the bottom, the others stacked
/// from the top in list order.
pub fn slices(weights: impl Iterator<Item = u32>) -> Vec<(u32, usize)> {
    let w: Vec<u32> = weights.collect();
    let mut out = Vec::with_capacity(w.len());
    let mut end = 0u32;
    let order = std::iter::once(0).chain((1..w.len()).rev());
    for i in order {
        let weight = w.get(i).copied().unwrap_or(0);
        if weight > 0 {
            end = end.saturating_add(weight);
            out.push((end, i));
        }
    }
    out
}

fn compile_rule(
    r: &CanaryRule,
    path: &str,
    find: &dyn Fn(&str) -> Option<usize>,
    p: &mut Problems,
) -> Option<CompiledRule> {
    let variant = find(&r.variant);
    if variant.is_none() {
        p.push(
            join(path, "variant"),
            format!("unknown variant {:?}", r.variant),
        );
    }
    let choices = [
        ("header", &r.header),
        ("cookie", &r.cookie),
        ("query", &r.query),
    ];
    let kind = exactly_one(path, &choices.map(|(n, m)| (n, m.is_some())), p)?;
    let m = choices
        .iter()
        .find(|(n, _)| *n == kind)
        .and_then(|(_, m)| m.as_ref())?;
    let at = join(path, kind);
    let source = match kind {
        "header" => RuleSource::Header(m.name.clone()),
        "cookie" => RuleSource::Cookie(m.name.clone()),
        _ => RuleSource::Query(m.name.clone()),
    };
    let name_ok = match kind {
        "header" => check_header_name(&m.name, true).map_err(|e| p.push(join(&at, "name"), e)),
        _ => check_param_name(&m.name, kind).map_err(|e| p.push(join(&at, "name"), e)),
    }
    .is_ok();
    let condition = value_condition(m, &at, p).filter(|_| name_ok);
    Some(CompiledRule {
        variant: variant?,
        source,
        condition: condition?,
        trusted_only: r.trusted_only,
    })
}

fn compile_sticky(
    s: &Sticky,
    route_name: &str,
    path: &str,
    p: &mut Problems,
) -> Option<CompiledSticky> {
    let choices = [
        ("header", s.header.is_some()),
        ("cookie", s.cookie.is_some()),
        ("clientAddress", s.client_address),
    ];
    exactly_one(path, &choices, p)?;
    let key = if let Some(h) = &s.header {
        if let Err(e) = check_header_name(h, false) {
            p.push(join(path, "header"), e);
            return None;
        }
        StickyKey::Header(h.clone())
    } else if let Some(c) = &s.cookie {
        if c.is_empty() || !c.chars().all(crate::names::is_tchar) {
            p.push(
                join(path, "cookie"),
                format!("{c:?} is not a valid cookie name"),
            );
            return None;
        }
        StickyKey::Cookie(c.clone())
    } else {
        StickyKey::ClientAddress
    };
    if s.salt.as_deref() == Some("") {
        p.push(
            join(path, "salt"),
            "must not be empty (omit it to use the route name)",
        );
    }
    let issue_cookie = match (&s.issue_cookie, &key) {
        (None, _) => None,
        (Some(ic), StickyKey::Cookie(_)) => {
            let max_age = ic.max_age_seconds.unwrap_or(DEFAULT_COOKIE_MAX_AGE);
            in_range(
                p,
                &join(path, "issueCookie.maxAgeSeconds"),
                max_age,
                (1, MAX_COOKIE_MAX_AGE),
                " (400 days)",
            );
            let cookie_path = ic.path.clone().unwrap_or_else(|| "/".into());
            if !cookie_path.starts_with('/')
                || cookie_path.contains([';', ' ', ','])
                || cookie_path.chars().any(char::is_control)
            {
                p.push(
                    join(path, "issueCookie.path"),
                    "must start with '/' and contain no ';', ',', spaces or control characters",
                );
            }
            let secure = if ic.secure.unwrap_or(true) {
                "; Secure"
            } else {
                ""
            };
            Some(format!(
                "Max-Age={max_age}; Path={cookie_path}; HttpOnly; SameSite=Lax{secure}"
            ))
        }
        (Some(_), _) => {
            p.push(
                join(path, "issueCookie"),
                "needs a cookie key (sticky.cookie)",
            );
            None
        }
    };
    Some(CompiledSticky {
        key,
        salt: s
            .salt
            .clone()
            .unwrap_or_else(|| route_name.to_string())
            .into_bytes(),
        issue_cookie,
    })
}

#[cfg(test)]
mod tests;
