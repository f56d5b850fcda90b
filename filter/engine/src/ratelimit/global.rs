//! Global policies: the rate limit service decides for the whole fleet, through
//! Envoy's RLS API v3. Here: a request's descriptor, the request and answer
//! messages, and what a worker remembers between calls:
//!
//! - **quota leases**: with `lease: {hits: N}` a worker asks for N hits at once
//!   (`hits_addend = N`) and spends the rest locally for `ttlMs`; an `OVER_LIMIT`
//!   answer is remembered per key until the window resets (the service's
//!   `duration_until_reset`, else `overLimitCacheMs`), so a flood does not reach
//!   the service. The price: the fleet can admit up to `Envoys × workers × (N − 1)`
//!   more than the limit per window (hits leased before a window ends, spent after
//!   it), and hits leased but not spent are lost to everyone until the window resets;
//! - **back-off**: after `errorsBeforeBackoff` failures in a row a worker stops
//!   asking for `backoffMs` and applies the policy's local `fallback` limit (or the
//!   service's `onError`).
//!
//! Each worker keeps [`SLOTS`] keys per policy, indexed by fingerprint; a key whose
//! slot holds another key's live lease or rejection simply asks the service.

use meshguard_config::matcher::path_only;
use meshguard_config::ratelimit::{CompiledGlobal, CompiledRateLimitService, KeyPart};
use meshguard_rls_proto::rate_limit_descriptor::Entry;
use meshguard_rls_proto::rate_limit_response::Code;
use meshguard_rls_proto::{RateLimitDescriptor, RateLimitRequest, RateLimitResponse};
use prost::Message;

use super::key::masked_address;
use crate::canary::parse_source_address;
use crate::params::{cookie, query};
use crate::view::RequestView;

/// Keys a worker remembers per global policy.
pub const SLOTS: usize = 64;

/// What the service answered (or why there is no answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Under the limit; headers the service wants added to the request and the
    /// response.
    Ok {
        /// For the upstream request.
        request_headers: Vec<(String, String)>,
        /// For the response.
        response_headers: Vec<(String, String)>,
    },
    /// Over the limit, and when the window resets (if the service said).
    OverLimit {
        /// Nanoseconds until the window resets.
        reset_ns: Option<u64>,
        /// For the rejection.
        response_headers: Vec<(String, String)>,
    },
    /// No usable answer: a timeout, a connection failure, an unknown cluster, a
    /// server error, an undecodable message.
    Error(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Hits leased and not spent yet.
    Lease { left: u64, expires: u64 },
    /// The key is over its limit until `until`.
    OverLimit { until: u64 },
    /// A lease was asked for and is not answered yet (at the latest `until`):
    /// requests for the key meanwhile ask for their own hit only, so a worker holds
    /// at most one lease per key.
    Asking { until: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    fingerprint: u64,
    held: Held,
}

/// One worker's memory of one global policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalState {
    slots: Vec<Option<Slot>>,
    errors_in_row: u32,
    backoff_until: u64,
}

impl GlobalState {
    /// Whether this worker is in back-off from the rate limit service at `now`.
    pub fn in_backoff(&self, now: u64) -> bool {
        now < self.backoff_until
    }
}

/// What the worker can decide without asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pre {
    /// A lease had a hit left.
    Leased,
    /// The key is over its limit for `retry_ns` more.
    Cached {
        /// Until the window resets.
        retry_ns: u64,
    },
    /// The service is in back-off: the fallback decides.
    Backoff,
    /// Ask the service for `hits`.
    Ask {
        /// `hits_addend`.
        hits: u32,
    },
}

/// What an answer means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Allowed; `leased`: the worker now holds hits for the next requests.
    Allowed {
        /// A lease was taken.
        leased: bool,
    },
    /// Over the limit; retry after `retry_ns` (0: unknown).
    OverLimit {
        /// Until the window resets.
        retry_ns: u64,
    },
    /// No answer; `backoff`: this failure started a back-off.
    Error {
        /// A back-off began.
        backoff: bool,
    },
}

impl GlobalState {
    fn slot(&mut self, fp: u64) -> Option<&mut Option<Slot>> {
        if self.slots.is_empty() {
            self.slots = vec![None; SLOTS];
        }
        self.slots.get_mut((fp % SLOTS as u64) as usize)
    }

    /// [`GlobalState::precheck_cost`] for a request of one hit.
    #[cfg(test)]
    pub fn precheck(&mut self, g: &CompiledGlobal, fp: u64, now: u64, timeout_ns: u64) -> Pre {
        self.precheck_cost(g, fp, now, timeout_ns, 1)
    }

    /// What the worker knows about the key with fingerprint `fp` at `now` for a
    /// request that costs `cost` hits (at least 1); an answer to a lease asked for
    /// now is awaited at most `timeout_ns`. A lease is asked for only by a request
    /// of one hit; a costlier one spends a live lease holding its cost, or asks for
    /// its cost alone.
    pub fn precheck_cost(
        &mut self,
        g: &CompiledGlobal,
        fp: u64,
        now: u64,
        timeout_ns: u64,
        cost: u32,
    ) -> Pre {
        if now < self.backoff_until {
            return Pre::Backoff;
        }
        let cost = cost.max(1);
        let lease = match g.lease {
            Some((hits, _)) if cost == 1 => hits,
            _ => cost,
        };
        let Some(slot) = self.slot(fp) else {
            return Pre::Ask { hits: cost };
        };
        let mine = slot.filter(|s| s.fingerprint == fp);
        let pre = match mine.map(|s| s.held) {
            Some(Held::Lease { left, expires }) if left >= u64::from(cost) && now < expires => {
                if let Some(Slot {
                    held: Held::Lease { left, .. },
                    ..
                }) = slot
                {
                    *left -= u64::from(cost);
                }
                return Pre::Leased;
            }
            Some(Held::OverLimit { until }) if now < until => {
                return Pre::Cached {
                    retry_ns: until - now,
                }
            }
            Some(Held::Asking { until }) if now < until => return Pre::Ask { hits: cost },
            _ => Pre::Ask { hits: lease },
        };
        let free = slot.is_none_or(|s| s.fingerprint == fp || !s.live(now));
        match pre {
            Pre::Ask { hits } if hits > cost && free => {
                *slot = Some(Slot {
                    fingerprint: fp,
                    held: Held::Asking {
                        until: now.saturating_add(timeout_ns),
                    },
                });
                pre
            }
            // (Equivalent to an unguarded arm, as cargo-mutants finds: the arm
            // above took every free lease ask, so what reaches here asks one hit
            // or finds the slot busy, and either way asks one hit. The guard
            // says why.)
            Pre::Ask { .. } if !free => Pre::Ask { hits: cost },
            other => other,
        }
    }

    /// [`GlobalState::answer_cost`] for a request of one hit.
    #[cfg(test)]
    pub fn answer(
        &mut self,
        service: &CompiledRateLimitService,
        g: &CompiledGlobal,
        fp: u64,
        hits: u32,
        reply: &Reply,
        now: u64,
    ) -> Answered {
        self.answer_cost(service, g, fp, hits, 1, reply, now)
    }

    /// Takes in the service's `reply` to a request for `hits` hits for the key
    /// with fingerprint `fp`, made by a request that costs `cost` of them, at
    /// `now`.
    #[allow(clippy::too_many_arguments)] // the call as asked, and its answer
    pub fn answer_cost(
        &mut self,
        service: &CompiledRateLimitService,
        g: &CompiledGlobal,
        fp: u64,
        hits: u32,
        cost: u32,
        reply: &Reply,
        now: u64,
    ) -> Answered {
        let remember = |state: &mut Self, held: Held| {
            if let Some(slot) = state.slot(fp) {
                let taken = slot.is_some_and(|s| s.fingerprint != fp && s.live(now));
                if !taken {
                    *slot = Some(Slot {
                        fingerprint: fp,
                        held,
                    });
                }
            }
        };
        // Only a lease's own answer settles its slot (the answers to the single
        // hits asked for meanwhile leave it be).
        let cost = cost.max(1);
        let lease_answer = hits > cost;
        match reply {
            Reply::Ok { .. } => {
                self.errors_in_row = 0;
                let leased = match g.lease {
                    Some((_, ttl)) if lease_answer => {
                        let held = Held::Lease {
                            left: u64::from(hits - cost),
                            expires: now.saturating_add(ttl),
                        };
                        remember(self, held);
                        true
                    }
                    _ => false,
                };
                Answered::Allowed { leased }
            }
            Reply::OverLimit { reset_ns, .. } => {
                self.errors_in_row = 0;
                let retry_ns = reset_ns.unwrap_or(g.over_limit_cache_ns);
                if g.lease.is_some() && cost == 1 {
                    // Any answer says the key is over: remember it (a lease asked for
                    // when fewer hits than it were left is refused too, and those
                    // last hits of the window go unused). A costlier request's
                    // refusal says nothing of a cheaper one's chances.
                    let until = now.saturating_add(retry_ns);
                    remember(self, Held::OverLimit { until });
                }
                Answered::OverLimit {
                    retry_ns: reset_ns.unwrap_or(0),
                }
            }
            Reply::Error(_) => {
                if lease_answer {
                    if let Some(slot) = self.slot(fp) {
                        if slot.is_some_and(|s| s.fingerprint == fp) {
                            *slot = None;
                        }
                    }
                }
                self.errors_in_row = self.errors_in_row.saturating_add(1);
                let backoff = self.errors_in_row >= service.errors_before_backoff;
                if backoff {
                    self.errors_in_row = 0;
                    self.backoff_until = now.saturating_add(service.backoff_ns);
                }
                Answered::Error { backoff }
            }
        }
    }
}

impl Slot {
    fn live(&self, now: u64) -> bool {
        match self.held {
            Held::Lease { left, expires } => left > 0 && now < expires,
            Held::OverLimit { until } | Held::Asking { until } => now < until,
        }
    }
}

/// A descriptor entry's value from raw bytes: as is when UTF-8 (protobuf strings
/// must be), else with `%` and every byte of 0x80 or more written `%XX`.
fn entry_value(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes
            .iter()
            .map(|&b| {
                if b >= 0x80 || b == b'%' {
                    format!("%{b:02X}")
                } else {
                    char::from(b).to_string()
                }
            })
            .collect(),
    }
}

/// The client address as a descriptor value: the IP (as Envoy's `remote_address`
/// gives it) when the prefix keeps every bit, else `network/prefix`.
fn address_value(raw: &[u8], v4: u8, v6: u8) -> Option<String> {
    let ip = parse_source_address(raw)?;
    let ip = match ip {
        std::net::IpAddr::V6(v) => v.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v => v,
    };
    let (full, prefix) = match ip {
        std::net::IpAddr::V4(_) => (32, v4),
        std::net::IpAddr::V6(_) => (128, v6),
    };
    if prefix >= full {
        return Some(ip.to_string());
    }
    let masked = masked_address(ip, v4, v6);
    let bytes = masked.get(..masked.len().saturating_sub(1))?;
    let net = match ip {
        std::net::IpAddr::V4(_) => {
            let b: [u8; 4] = bytes.try_into().ok()?;
            std::net::IpAddr::from(b)
        }
        std::net::IpAddr::V6(_) => {
            let b: [u8; 16] = bytes.try_into().ok()?;
            std::net::IpAddr::from(b)
        }
    };
    Some(format!("{net}/{prefix}"))
}

/// The descriptor entries of a request for a global policy with `parts`, on route
/// `route`; `None` when a part is missing (the policy then does not apply).
pub fn entries(
    g: &CompiledGlobal,
    parts: &[KeyPart],
    route: &str,
    req: &mut impl RequestView,
) -> Option<Vec<(String, String)>> {
    parts
        .iter()
        .zip(&g.entry_keys)
        .map(|(part, key)| {
            let value = match part {
                KeyPart::ClientAddress { v4, v6 } => {
                    address_value(req.source_address()?, *v4, *v6)?
                }
                KeyPart::Header(name) => entry_value(req.header(name)?),
                KeyPart::Path => entry_value(path_only(req.header(":path")?)),
                KeyPart::Method => entry_value(req.header(":method")?),
                KeyPart::Route => route.to_string(),
                KeyPart::Constant(c) => entry_value(c),
                KeyPart::Cookie(name) => entry_value(cookie(req.header("cookie")?, name)?),
                KeyPart::Query(name) => entry_value(&query(req.header(":path")?, name)?),
            };
            Some((key.clone(), value))
        })
        .collect()
}

/// The `ShouldRateLimit` request: one descriptor, `hits` hits.
pub fn request(domain: &str, entries: &[(String, String)], hits: u32) -> Vec<u8> {
    RateLimitRequest {
        domain: domain.to_string(),
        descriptors: vec![RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(key, value)| Entry {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        }],
        hits_addend: hits,
    }
    .encode_to_vec()
}

fn headers(list: Vec<meshguard_rls_proto::HeaderValue>) -> Vec<(String, String)> {
    list.into_iter()
        .filter(|h| !h.key.is_empty())
        .map(|h| (h.key.to_ascii_lowercase(), h.value))
        .collect()
}

/// What a `ShouldRateLimit` answer (protobuf bytes) says.
pub fn reply(bytes: &[u8]) -> Reply {
    let r = match RateLimitResponse::decode(bytes) {
        Ok(r) => r,
        Err(e) => return Reply::Error(format!("undecodable answer: {e}")),
    };
    match Code::try_from(r.overall_code) {
        Ok(Code::Ok) => Reply::Ok {
            request_headers: headers(r.request_headers_to_add),
            response_headers: headers(r.response_headers_to_add),
        },
        Ok(Code::OverLimit) => Reply::OverLimit {
            reset_ns: r
                .statuses
                .iter()
                .filter_map(|s| s.duration_until_reset.as_ref())
                .filter_map(|d| {
                    let secs = u64::try_from(d.seconds).ok()?;
                    let nanos = u64::try_from(d.nanos).ok()?;
                    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
                })
                .max(),
            response_headers: headers(r.response_headers_to_add),
        },
        _ => Reply::Error(format!(
            "answer without a decision (code {})",
            r.overall_code
        )),
    }
}

#[cfg(test)]
mod tests;
