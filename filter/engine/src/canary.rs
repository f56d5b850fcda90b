//! Choosing a canary variant for one request.
//!
//! Order, first hit wins: a trusted caller's own variant header (propagation inside
//! the mesh) → override rules in config order → the weighted split, sticky when the
//! policy's key is present (a pure function of salt and key, so the same on every
//! worker and every Envoy), otherwise the caller-supplied random roll.

use std::borrow::Cow;
use std::net::IpAddr;

use meshguard_config::canary::{CompiledCanary, RuleSource, StickyKey, BUCKETS};

use crate::hash::sticky_bucket;
use crate::params::{cookie, query};
use crate::rng::Rng;
use crate::view::RequestView;

/// Why a variant was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A trusted caller named it in the variant header.
    Propagated,
    /// Override rule number `n` matched.
    Rule(usize),
    /// The sticky key hashed into its slice.
    Sticky,
    /// The sticky key was absent; a fresh key was made up (and should be issued).
    StickyIssued,
    /// No key: the random roll fell into its slice.
    Random,
    /// The rule, propagated header or fallback chose a variant that was rolled
    /// back: the baseline serves instead.
    RolledBack,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index into the policy's variants.
    pub variant: usize,
    /// Why.
    pub reason: Reason,
}

/// What the glue supplies besides the request itself.
#[derive(Debug, Clone, Copy)]
pub struct Draw<'a> {
    /// The caller is trusted (see [`is_trusted`]).
    pub trusted: bool,
    /// A uniformly random number, used only when no sticky key exists.
    pub roll: u64,
    /// A freshly made-up sticky key, used (and reported) when the key is absent and
    /// the policy issues cookies.
    pub fresh_key: Option<&'a [u8]>,
}

/// The client's IP address from Envoy's `source.address` (`1.2.3.4:5678`, `[::1]:80`).
pub fn parse_source_address(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?;
    s.parse::<std::net::SocketAddr>()
        .map(|sa| sa.ip())
        .or_else(|_| s.parse::<IpAddr>())
        .ok()
}

/// Whether the caller's address lies in one of the policy's trusted blocks.
/// Reads the address only when the policy trusts anyone.
pub fn is_trusted(policy: &CompiledCanary, req: &mut impl RequestView) -> bool {
    source_in(&policy.trusted, req)
}

/// Whether the caller's address lies in `blocks`; reads it only when there are any.
pub fn source_in(blocks: &[meshguard_config::cidr::Cidr], req: &mut impl RequestView) -> bool {
    !blocks.is_empty()
        && req
            .source_address()
            .and_then(parse_source_address)
            .is_some_and(|ip| meshguard_config::cidr::any_contains(blocks, ip))
}

/// The variant whose slice of `split` holds `bucket` (0..10000).
pub fn variant_for_bucket(split: &[(u32, usize)], bucket: u32) -> usize {
    split
        .iter()
        .find(|(end, _)| bucket < *end)
        .map_or(0, |(_, v)| *v)
}

/// Chooses the variant for a request, splitting by the policy's configured weights.
#[cfg(test)]
pub fn choose_variant(
    policy: &CompiledCanary,
    variant_header: &str,
    req: &mut impl RequestView,
    draw: Draw<'_>,
) -> Choice {
    choose_in(policy, &policy.slices, variant_header, req, draw)
}

/// Chooses the variant for a request, splitting by `split`.
fn choose_in(
    policy: &CompiledCanary,
    split: &[(u32, usize)],
    variant_header: &str,
    req: &mut impl RequestView,
    draw: Draw<'_>,
) -> Choice {
    if draw.trusted {
        if let Some(v) = req.header(variant_header) {
            if let Some(i) = policy.variants.iter().position(|x| x.name.as_bytes() == v) {
                return Choice {
                    variant: i,
                    reason: Reason::Propagated,
                };
            }
        }
    }
    for (n, rule) in policy.rules.iter().enumerate() {
        if rule.trusted_only && !draw.trusted {
            continue;
        }
        let hit = match &rule.source {
            RuleSource::Header(name) => rule.condition.matches(req.header(name)),
            RuleSource::Cookie(name) => {
                let value = req.header("cookie").and_then(|h| cookie(h, name));
                rule.condition.matches(value)
            }
            RuleSource::Query(name) => {
                let value = req.header(":path").and_then(|p| query(p, name));
                rule.condition.matches(value.as_deref())
            }
        };
        if hit {
            return Choice {
                variant: rule.variant,
                reason: Reason::Rule(n),
            };
        }
    }
    let Some(sticky) = &policy.sticky else {
        return random(split, draw.roll);
    };
    let key = sticky_key(&sticky.key, req);
    match (key, draw.fresh_key) {
        (Some(k), _) => Choice {
            variant: variant_for_bucket(split, sticky_bucket(&sticky.salt, &k)),
            reason: Reason::Sticky,
        },
        (None, Some(fresh)) => Choice {
            variant: variant_for_bucket(split, sticky_bucket(&sticky.salt, fresh)),
            reason: Reason::StickyIssued,
        },
        (None, None) => random(split, draw.roll),
    }
}

/// How a policy splits right now: the slices to draw from, and the variants no
/// request may reach (rolled back). Without a rollout: the configured split.
#[derive(Debug, Clone, Copy)]
pub struct Split<'a> {
    /// Ascending `(end, variant)` slices of 0..10000.
    pub slices: &'a [(u32, usize)],
    /// `rolled_back[v]`: variant `v` serves nothing.
    pub rolled_back: &'a [bool],
}

/// The variant of a request on a route with `policy`, split by `split`, drawing
/// from `rng` what the choice may need; and the `Set-Cookie` value to answer with
/// when a fresh sticky key was issued.
pub fn decide(
    policy: &CompiledCanary,
    split: Split<'_>,
    variant_header: &str,
    req: &mut impl RequestView,
    rng: &Rng,
) -> (Choice, Option<String>) {
    let trusted = is_trusted(policy, req);
    let issue = policy
        .sticky
        .as_ref()
        .and_then(|s| match (&s.key, &s.issue_cookie) {
            (StickyKey::Cookie(name), Some(attrs)) => Some((name, attrs)),
            _ => None,
        });
    let fresh = issue.map(|_| rng.fresh_key());
    let draw = Draw {
        trusted,
        roll: rng.next_u64(),
        fresh_key: fresh.as_ref().map(|k| &k[..]),
    };
    let mut choice = choose_in(policy, split.slices, variant_header, req, draw);
    if split
        .rolled_back
        .get(choice.variant)
        .copied()
        .unwrap_or(false)
    {
        choice = Choice {
            variant: 0,
            reason: Reason::RolledBack,
        };
    }
    let cookie = match (choice.reason, issue, &fresh) {
        (Reason::StickyIssued, Some((name, attrs)), Some(key)) => {
            Some(format!("{name}={}; {attrs}", String::from_utf8_lossy(key)))
        }
        _ => None,
    };
    (choice, cookie)
}

fn random(split: &[(u32, usize)], roll: u64) -> Choice {
    let bucket = (roll % u64::from(BUCKETS)) as u32;
    Choice {
        variant: variant_for_bucket(split, bucket),
        reason: Reason::Random,
    }
}

/// The sticky key of this request; an empty value counts as absent.
fn sticky_key<'r>(key: &StickyKey, req: &'r mut impl RequestView) -> Option<Cow<'r, [u8]>> {
    let k: Option<Cow<'r, [u8]>> = match key {
        StickyKey::Header(name) => req.header(name).map(Cow::Borrowed),
        StickyKey::Cookie(name) => req
            .header("cookie")
            .and_then(|h| cookie(h, name))
            .map(Cow::Borrowed),
        StickyKey::ClientAddress => req
            .source_address()
            .and_then(parse_source_address)
            .map(|ip| Cow::Owned(address_key(ip))),
    };
    k.filter(|k| !k.is_empty())
}

/// The client-address key: all of an IPv4 address, the /64 of an IPv6 one (a
/// household or host usually owns a whole /64, and rotates inside it).
pub fn address_key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets().get(..8).map(<[u8]>::to_vec).unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests;
