//! Rate-limit policies: the compiled form and its validation.
//!
//! A policy is a token bucket (`burst` capacity, `rate` per `per`) kept per key.
//! Compiled, it carries the bucket's emission interval in nanoseconds, the values
//! its `RateLimit-Policy` header advertises, and a store prefix that changes when
//! the limit changes (so a reload keeps unchanged policies' buckets and starts
//! changed ones afresh).

use std::collections::HashSet;

use crate::fingerprint::fingerprint;
use crate::names::{check_header_name, check_name, check_param_name};
use crate::problem::{bounded_list, exactly_one, in_range, join, Problems};
use crate::raw::{Cost, Descriptor, FailureMode, Limit, RateLimit, RateLimitService};

/// Default `maxKeys`.
pub const DEFAULT_MAX_KEYS: u32 = 10_000;
/// Largest `maxKeys` (each key is one shared-data entry of 17 bytes plus its name).
pub const MAX_MAX_KEYS: u32 = 1_000_000;
/// Most key parts per policy.
pub const MAX_KEY_PARTS: usize = 8;
/// Largest burst and rate.
pub const MAX_AMOUNT: u64 = 1_000_000_000;
/// Default status of the limited reply.
pub const DEFAULT_STATUS: u16 = 429;
/// Default body of the limited reply.
pub const DEFAULT_BODY: &str = "rate limited\n";

/// One part of a bucket key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// Client address, grouped by these prefix lengths.
    ClientAddress {
        /// IPv4 prefix length.
        v4: u8,
        /// IPv6 prefix length.
        v6: u8,
    },
    /// A request header.
    Header(String),
    /// The path without query.
    Path,
    /// The method.
    Method,
    /// The route name.
    Route,
    /// A constant.
    Constant(Vec<u8>),
    /// A cookie, by name.
    Cookie(String),
    /// A query parameter, by name.
    Query(String),
}

/// Most hits a global policy's lease asks for at once.
pub const MAX_LEASE_HITS: u32 = 100_000;
/// Longest lease, ms.
pub const MAX_LEASE_TTL_MS: u64 = 60_000;
/// Default lease life, ms.
pub const DEFAULT_LEASE_TTL_MS: u64 = 100;
/// Default time an `OVER_LIMIT` answer is remembered without a reset time, ms.
pub const DEFAULT_OVER_LIMIT_CACHE_MS: u64 = 1_000;
/// Longest wait for the rate limit service, ms.
pub const MAX_RLS_TIMEOUT_MS: u64 = 10_000;
/// Default wait for the rate limit service, ms (as Envoy's own filter).
pub const DEFAULT_RLS_TIMEOUT_MS: u64 = 20;
/// Default failures in a row before a worker backs off.
pub const DEFAULT_ERRORS_BEFORE_BACKOFF: u32 = 5;
/// Default back-off, ms.
pub const DEFAULT_BACKOFF_MS: u64 = 1_000;

/// The compiled rate limit service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRateLimitService {
    /// Envoy cluster (HTTP/2).
    pub cluster: String,
    /// The requests' `domain`.
    pub domain: String,
    /// How long a request waits for the answer, ms.
    pub timeout_ms: u64,
    /// What a failure means.
    pub on_error: FailureMode,
    /// Failures in a row before a worker backs off.
    pub errors_before_backoff: u32,
    /// Back-off, ns.
    pub backoff_ns: u64,
}

/// What makes a compiled policy global.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledGlobal {
    /// The descriptor entry key of each key part, in order.
    pub entry_keys: Vec<String>,
    /// A quota lease: hits asked for at once and how long they live, ns.
    pub lease: Option<(u32, u64)>,
    /// How long an `OVER_LIMIT` answer is remembered without a reset time, ns.
    pub over_limit_cache_ns: u64,
    /// During back-off the policy's bucket fields are this local fallback limit;
    /// without one, back-off follows the service's `onError`.
    pub fallback: bool,
}

/// What one request costs, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompiledCost {
    /// Every request takes this many tokens (1 without `cost`).
    Fixed(u64),
    /// The value of request header `name`, `default` when absent or not a whole
    /// number from 1 up, at most `max`.
    Header {
        /// The header (lowercase).
        name: String,
        /// Cost without a usable value.
        default: u64,
        /// The most one request is charged.
        max: u64,
    },
}

impl CompiledCost {
    /// The cost of a request whose cost header (if the policy reads one) is
    /// `value`.
    pub fn of(&self, value: Option<&[u8]>) -> u64 {
        match self {
            CompiledCost::Fixed(c) => *c,
            CompiledCost::Header { default, max, .. } => value
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                // All digits: too long to parse means larger than any `max`.
                .map(|v| v.parse::<u64>().unwrap_or(u64::MAX))
                .filter(|&c| c >= 1)
                .map_or(*default, |c| c.min(*max)),
        }
    }
}

/// A compiled rate-limit policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRateLimit {
    /// Policy name.
    pub name: String,
    /// Key parts in order.
    pub key: Vec<KeyPart>,
    /// Bucket capacity.
    pub burst: u64,
    /// Nanoseconds per token (the period divided by the rate).
    pub interval_ns: u64,
    /// `w` of `RateLimit-Policy`: seconds to refill an empty bucket, at least 1.
    pub window_s: u64,
    /// Keys tracked at once.
    pub max_keys: u32,
    /// Count, never reject.
    pub shadow: bool,
    /// Outcome when the store cannot be updated.
    pub on_store_error: FailureMode,
    /// Reply status when limited.
    pub status: u16,
    /// Reply body when limited.
    pub body: String,
    /// The gRPC status of the reply to a gRPC request.
    pub grpc_status: u32,
    /// Headers on allowed responses too.
    pub headers_on_allowed: bool,
    /// The legacy `x-ratelimit-*` trio.
    pub legacy_headers: bool,
    /// Store key prefix: `<name>.<hex of burst, interval and maxKeys>`.
    pub store_id: String,
    /// What one request costs.
    pub cost: CompiledCost,
    /// Global: the rate limit service decides (the bucket fields above are then
    /// the local fallback limit, if it has one).
    pub global: Option<CompiledGlobal>,
}

/// The default descriptor entry key of a key part.
pub fn default_entry_key(part: &KeyPart) -> &str {
    match part {
        KeyPart::ClientAddress { .. } => "remote_address",
        KeyPart::Header(name) => name,
        KeyPart::Path => "path",
        KeyPart::Method => "method",
        KeyPart::Route => "route",
        KeyPart::Constant(_) => "generic_key",
        KeyPart::Cookie(name) | KeyPart::Query(name) => name,
    }
}

/// Validates and compiles `rateLimitService`.
pub fn compile_service(
    s: &RateLimitService,
    path: &str,
    p: &mut Problems,
) -> Option<CompiledRateLimitService> {
    let mut local = Problems::default();
    if !crate::names::usable_cluster_name(&s.cluster) {
        local.push(
            join(path, "cluster"),
            format!("{:?} is not a usable Envoy cluster name", s.cluster),
        );
    }
    if s.domain.is_empty() || s.domain.chars().any(char::is_control) {
        local.push(join(path, "domain"), "must be a non-empty name");
    }
    let timeout_ms = s.timeout_ms.unwrap_or(DEFAULT_RLS_TIMEOUT_MS);
    let at = join(path, "timeoutMs");
    in_range(&mut local, &at, timeout_ms, (1, MAX_RLS_TIMEOUT_MS), "");
    let errors = s
        .errors_before_backoff
        .unwrap_or(DEFAULT_ERRORS_BEFORE_BACKOFF);
    let at = join(path, "errorsBeforeBackoff");
    in_range(&mut local, &at, errors, (1, 1_000), "");
    let backoff_ms = s.backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS);
    let at = join(path, "backoffMs");
    in_range(&mut local, &at, backoff_ms, (1, 600_000), "");
    local.merge_into(p).then(|| CompiledRateLimitService {
        cluster: s.cluster.clone(),
        domain: s.domain.clone(),
        timeout_ms,
        on_error: s.on_error.unwrap_or_default(),
        errors_before_backoff: errors,
        backoff_ns: backoff_ms * 1_000_000,
    })
}

/// A bucket's emission interval and `w` (seconds to refill an empty bucket),
/// checking its fields at `path`.
fn bucket(l: &Limit, path: &str, p: &mut Problems) -> (u64, u64) {
    let amount = (1, MAX_AMOUNT);
    in_range(p, &join(path, "burst"), l.burst, amount, "");
    let period_ns: u64 = match l.per.as_str() {
        "second" => 1_000_000_000,
        "minute" => 60_000_000_000,
        "hour" => 3_600_000_000_000,
        "day" => 86_400_000_000_000,
        other => {
            p.push(
                join(path, "per"),
                format!("must be second, minute, hour or day, got {other:?}"),
            );
            1_000_000_000
        }
    };
    in_range(p, &join(path, "rate"), l.rate, amount, "");
    let interval_ns = period_ns / l.rate.max(1);
    let refill_ns = u128::from(interval_ns) * u128::from(l.burst);
    let window_s = u64::try_from(refill_ns.div_ceil(1_000_000_000))
        .unwrap_or(u64::MAX)
        .max(1);
    (interval_ns, window_s)
}

/// Validates and compiles one policy at `path`, checking its name against `seen`;
/// `service` says whether a rate limit service is configured (global policies
/// need one).
pub fn compile_rate_limit(
    r: &RateLimit,
    path: &str,
    seen: &mut HashSet<String>,
    service: bool,
    p: &mut Problems,
) -> Option<CompiledRateLimit> {
    let mut local = Problems::default();
    if let Err(e) = check_name(&r.name) {
        local.push(join(path, "name"), e);
    } else if !seen.insert(r.name.clone()) {
        local.push(
            join(path, "name"),
            format!("duplicate rate-limit policy name {:?}", r.name),
        );
    }
    let key = bounded_list(
        &mut local,
        &join(path, "key"),
        &r.key,
        (MAX_KEY_PARTS, "parts"),
        key_part,
    );
    let global = r.global.as_ref().map(|g| {
        let at = join(path, "global");
        if !service {
            local.push(
                &at,
                "needs rateLimitService (the service that decides for the fleet)",
            );
        }
        let lease = g.lease.as_ref().map(|l| {
            let at = join(&at, "lease");
            in_range(
                &mut local,
                &join(&at, "hits"),
                l.hits,
                (1, MAX_LEASE_HITS),
                "",
            );
            let ttl = l.ttl_ms.unwrap_or(DEFAULT_LEASE_TTL_MS);
            in_range(
                &mut local,
                &join(&at, "ttlMs"),
                ttl,
                (1, MAX_LEASE_TTL_MS),
                "",
            );
            (l.hits, ttl * 1_000_000)
        });
        let cache_ms = g.over_limit_cache_ms.unwrap_or(DEFAULT_OVER_LIMIT_CACHE_MS);
        let cache_at = join(&at, "overLimitCacheMs");
        in_range(&mut local, &cache_at, cache_ms, (1, 3_600_000), "");
        if r.headers.as_ref().is_some_and(|h| h.on_allowed) {
            local.push(
                join(path, "headers.onAllowed"),
                "not for global policies: the service's response headers are passed through",
            );
        }
        CompiledGlobal {
            entry_keys: r
                .key
                .iter()
                .zip(&key)
                .map(|(d, part)| {
                    d.descriptor_key
                        .clone()
                        .unwrap_or_else(|| default_entry_key(part).to_string())
                })
                .collect(),
            lease,
            over_limit_cache_ns: cache_ms * 1_000_000,
            fallback: g.fallback.is_some(),
        }
    });
    if global.is_none() {
        if let Some(i) = r.key.iter().position(|d| d.descriptor_key.is_some()) {
            local.push(
                join(
                    &crate::problem::index(&join(path, "key"), i),
                    "descriptorKey",
                ),
                "only for global policies (the rate limit service's descriptor entries)",
            );
        }
    }
    let limit = match (
        &r.limit,
        r.global.as_ref().and_then(|g| g.fallback.as_ref()),
    ) {
        (Some(l), None) if global.is_none() => Some((l, join(path, "limit"))),
        (Some(_), _) => {
            local.push(
                join(path, "limit"),
                "a global policy's limit is set on the rate limit service; give global.fallback for the local limit during outages",
            );
            None
        }
        (None, Some(f)) => Some((f, join(path, "global.fallback"))),
        (None, None) if global.is_none() => {
            local.push(
                join(path, "limit"),
                "required: the bucket, e.g. {burst: 10, rate: 10, per: second}",
            );
            None
        }
        (None, None) => None,
    };
    let limit_given = limit.is_some();
    let (burst, (interval_ns, window_s)) = match limit {
        Some((l, at)) => (l.burst, bucket(l, &at, &mut local)),
        None => (1, (1, 1)),
    };
    // A request costlier than the bucket holds could never pass.
    let most = if limit_given { burst } else { MAX_AMOUNT };
    let cost = compile_cost(r.cost.as_ref(), most, &join(path, "cost"), &mut local);
    let max_keys = r.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    let at = join(path, "maxKeys");
    in_range(&mut local, &at, max_keys, (1, MAX_MAX_KEYS), "");
    let resp = r.response.clone().unwrap_or_default();
    let status = resp.status.unwrap_or(DEFAULT_STATUS);
    in_range(
        &mut local,
        &join(path, "response.status"),
        status,
        (400, 599),
        "",
    );
    let body = resp.body.unwrap_or_else(|| DEFAULT_BODY.to_string());
    if body.len() > 4096 {
        local.push(join(path, "response.body"), "must be at most 4096 bytes");
    }
    let grpc_status = crate::grpc::reply_code(
        resp.grpc_status.as_ref(),
        crate::grpc::RESOURCE_EXHAUSTED,
        &join(path, "response.grpcStatus"),
        &mut local,
    );
    let headers = r.headers.clone().unwrap_or_default();
    let ok = local.merge_into(p);
    ok.then(|| CompiledRateLimit {
        store_id: format!(
            "{}.{:016x}",
            r.name,
            fingerprint(&[burst, interval_ns, u64::from(max_keys)])
        ),
        name: r.name.clone(),
        key,
        cost,
        burst,
        interval_ns,
        window_s,
        max_keys,
        shadow: r.shadow,
        on_store_error: r.on_store_error.unwrap_or_default(),
        status,
        grpc_status,
        body,
        headers_on_allowed: headers.on_allowed,
        legacy_headers: headers.legacy,
        global,
    })
}

fn key_part(d: &Descriptor, path: &str, p: &mut Problems) -> Option<KeyPart> {
    let choices = [
        ("clientAddress", d.client_address.is_some()),
        ("header", d.header.is_some()),
        ("path", d.path),
        ("method", d.method),
        ("route", d.route),
        ("constant", d.constant.is_some()),
        ("cookie", d.cookie.is_some()),
        ("query", d.query.is_some()),
    ];
    exactly_one(path, &choices, p)?;
    if let Some(ca) = &d.client_address {
        let v4 = ca.ipv4_prefix.unwrap_or(32);
        let v6 = ca.ipv6_prefix.unwrap_or(64);
        let ok4 = in_range(p, &join(path, "clientAddress.ipv4Prefix"), v4, (1, 32), "");
        let ok6 = in_range(p, &join(path, "clientAddress.ipv6Prefix"), v6, (1, 128), "");
        // (`||` would be the same: a prefix out of range already rejects the config.)
        return (ok4 && ok6).then_some(KeyPart::ClientAddress { v4, v6 });
    }
    if let Some(h) = &d.header {
        return match check_header_name(h, false) {
            Ok(()) => Some(KeyPart::Header(h.clone())),
            Err(e) => {
                p.push(join(path, "header"), e);
                None
            }
        };
    }
    if let Some(name) = &d.cookie {
        return param_name(name, "cookie", "cookie", path, p).map(KeyPart::Cookie);
    }
    if let Some(name) = &d.query {
        return param_name(name, "query", "query parameter", path, p).map(KeyPart::Query);
    }
    if let Some(c) = &d.constant {
        if c.is_empty() {
            p.push(join(path, "constant"), "must not be empty");
            return None;
        }
        return Some(KeyPart::Constant(c.as_bytes().to_vec()));
    }
    Some(if d.path {
        KeyPart::Path
    } else if d.method {
        KeyPart::Method
    } else {
        KeyPart::Route
    })
}

/// A policy's `cost` at `path`: at most `most` tokens (the bucket's burst).
fn compile_cost(c: Option<&Cost>, most: u64, path: &str, p: &mut Problems) -> CompiledCost {
    let why = if most == MAX_AMOUNT {
        ""
    } else {
        " (the bucket's burst: a costlier request could never pass)"
    };
    match c {
        None => CompiledCost::Fixed(1),
        Some(Cost::Tokens(n)) => {
            in_range(p, path, *n, (1, most), why);
            CompiledCost::Fixed(*n)
        }
        Some(Cost::Header(h)) => {
            if let Err(e) = check_header_name(&h.header, false) {
                p.push(join(path, "header"), e);
            }
            in_range(p, &join(path, "max"), h.max, (1, most), why);
            let default = h.default.unwrap_or(1);
            in_range(
                p,
                &join(path, "default"),
                default,
                (1, h.max.max(1)),
                " (at most max)",
            );
            CompiledCost::Header {
                name: h.header.clone(),
                default,
                max: h.max,
            }
        }
    }
}

/// `name` if it can name a cookie or query parameter, else a problem at `field`.
fn param_name(name: &str, field: &str, kind: &str, path: &str, p: &mut Problems) -> Option<String> {
    match check_param_name(name, kind) {
        Ok(()) => Some(name.to_owned()),
        Err(e) => {
            p.push(join(path, field), e);
            None
        }
    }
}

#[cfg(test)]
mod tests;
