//! Rate-limit policies: the compiled form and its validation.
//!
//! A policy is a token bucket (`burst` capacity, `rate` per `per`) kept per key.
//! Compiled, it carries the bucket's emission interval in nanoseconds, the values
//! its `RateLimit-Policy` header advertises, and a store prefix that changes when
//! the limit changes (so a reload keeps unchanged policies' buckets and starts
//! changed ones afresh).

use std::collections::HashSet;

use crate::names::{check_header_name, check_name};
use crate::problem::{exactly_one, index, join, Problems};
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
    if r.key.len() > MAX_KEY_PARTS {
        local.push(
            join(path, "key"),
            format!("at most {MAX_KEY_PARTS} parts, got {}", r.key.len()),
        );
    }
    let key: Vec<KeyPart> = r
        .key
        .iter()
        .enumerate()
        .filter_map(|(i, d)| key_part(d, &index(&join(path, "key"), i), &mut local))
        .collect();

    let lim = join(path, "limit");
    if r.limit.burst == 0 || r.limit.burst > MAX_AMOUNT {
        local.push(
            join(&lim, "burst"),
            format!("must be 1 to {MAX_AMOUNT}, got {}", r.limit.burst),
        );
    }
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
    if r.limit.rate == 0 || r.limit.rate > MAX_AMOUNT {
        local.push(
            join(&lim, "rate"),
            format!("must be 1 to {MAX_AMOUNT}, got {}", r.limit.rate),
        );
    }
    let interval_ns = period_ns / r.limit.rate.max(1);
    let max_keys = r.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    if max_keys == 0 || max_keys > MAX_MAX_KEYS {
        local.push(
            join(path, "maxKeys"),
            format!("must be 1 to {MAX_MAX_KEYS}, got {max_keys}"),
        );
    }
    let resp = r.response.clone().unwrap_or_default();
    let status = resp.status.unwrap_or(DEFAULT_STATUS);
    if !(400..=599).contains(&status) {
        local.push(
            join(path, "response.status"),
            format!("must be 400 to 599, got {status}"),
        );
    }
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
            limit_fingerprint(r.limit.burst, interval_ns, max_keys)
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
        let mut ok = true;
        if !(1..=32).contains(&v4) {
            p.push(
                join(path, "clientAddress.ipv4Prefix"),
                format!("must be 1 to 32, got {v4}"),
            );
            ok = false;
        }
        if !(1..=128).contains(&v6) {
            p.push(
                join(path, "clientAddress.ipv6Prefix"),
                format!("must be 1 to 128, got {v6}"),
            );
            ok = false;
        }
        return ok.then_some(KeyPart::ClientAddress { v4, v6 });
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

/// FNV-1a over the numbers that define a bucket's meaning and its slot layout.
fn limit_fingerprint(burst: u64, interval_ns: u64, max_keys: u32) -> u64 {
    [burst, interval_ns, u64::from(max_keys)]
        .iter()
        .flat_map(|n| n.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests;
