//! Rate-limit policies: the compiled form and its validation.
//!
//! A policy is a token bucket (`burst` capacity, `rate` per `per`) kept per key.
//! Compiled, it carries the bucket's emission interval in nanoseconds, the values
//! its `RateLimit-Policy` header advertises, and a store prefix that changes when
//! the limit changes (so a reload keeps unchanged policies' buckets and starts
//! changed ones afresh).

use std::collections::HashSet;

use crate::fingerprint::fingerprint;
use crate::names::{check_header_name, check_name};
use crate::problem::{bounded_list, exactly_one, in_range, join, Problems};
use crate::raw::{Descriptor, FailureMode, RateLimit};

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
    /// Headers on allowed responses too.
    pub headers_on_allowed: bool,
    /// The legacy `x-ratelimit-*` trio.
    pub legacy_headers: bool,
    /// Store key prefix: `<name>.<hex of burst, interval and maxKeys>`.
    pub store_id: String,
}

/// Validates and compiles one policy at `path`, checking its name against `seen`.
pub fn compile_rate_limit(
    r: &RateLimit,
    path: &str,
    seen: &mut HashSet<String>,
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

    let lim = join(path, "limit");
    let amount = (1, MAX_AMOUNT);
    in_range(&mut local, &join(&lim, "burst"), r.limit.burst, amount, "");
    let period_ns: u64 = match r.limit.per.as_str() {
        "second" => 1_000_000_000,
        "minute" => 60_000_000_000,
        "hour" => 3_600_000_000_000,
        other => {
            local.push(
                join(&lim, "per"),
                format!("must be second, minute or hour, got {other:?}"),
            );
            1_000_000_000
        }
    };
    in_range(&mut local, &join(&lim, "rate"), r.limit.rate, amount, "");
    let interval_ns = period_ns / r.limit.rate.max(1);
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
    let headers = r.headers.clone().unwrap_or_default();
    let ok = local.merge_into(p);
    let refill_ns = u128::from(interval_ns) * u128::from(r.limit.burst);
    let window_s = u64::try_from(refill_ns.div_ceil(1_000_000_000))
        .unwrap_or(u64::MAX)
        .max(1);
    ok.then(|| CompiledRateLimit {
        store_id: format!(
            "{}.{:016x}",
            r.name,
            fingerprint(&[r.limit.burst, interval_ns, u64::from(max_keys)])
        ),
        name: r.name.clone(),
        key,
        burst: r.limit.burst,
        interval_ns,
        window_s,
        max_keys,
        shadow: r.shadow,
        on_store_error: r.on_store_error.unwrap_or_default(),
        status,
        body,
        headers_on_allowed: headers.on_allowed,
        legacy_headers: headers.legacy,
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
    ];
    exactly_one(path, &choices, p)?;
    if let Some(ca) = &d.client_address {
        let v4 = ca.ipv4_prefix.unwrap_or(32);
        let v6 = ca.ipv6_prefix.unwrap_or(64);
        let ok4 = in_range(p, &join(path, "clientAddress.ipv4Prefix"), v4, (1, 32), "");
        let ok6 = in_range(p, &join(path, "clientAddress.ipv6Prefix"), v6, (1, 128), "");
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

#[cfg(test)]
mod tests;
