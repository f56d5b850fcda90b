//! Rate limiting for one request: charge each policy that applies to its route
//! (top-level ones first, stopping at the first rejection), map each charge to its
//! outcome, and build the limited reply with its RateLimit fields.

use std::borrow::Cow;

use meshguard_config::ratelimit::CompiledCost;
use meshguard_config::raw::FailureMode;

use super::gcra::Verdict;
use super::global::{self, Answered, Pre, Reply};
use super::headers::{legacy_fields, policy_field, ratelimit_field, PolicyState};
use super::key::build_key;
use super::lease::charge_leased_cost;
use super::table::Charge;
use crate::decision::{Advertised, Event, LocalReply, ReplyReason};
use crate::metrics::RateLimitOutcome;
use crate::runtime::{Ids, PolicyRuntime, RouteRuntime, Runtime};
use crate::store::{SharedStore, StoreError};
use crate::time::ceil_seconds;
use crate::view::RequestView;

/// What a charge means for the request.
enum Step {
    /// Go on; advertise this verdict when the policy says so.
    Pass(Option<Verdict>),
    /// Stop: rejected by this verdict (`None`: the store failed and the policy denies).
    Reject(Option<Verdict>),
}

/// The outcome of one charge, and what it means for the request.
fn outcome(p: &PolicyRuntime<impl Ids>, charged: Charge) -> (RateLimitOutcome, Step) {
    let policy = &p.policy;
    match charged {
        Charge::Decided { verdict, .. } if verdict.allowed => (
            RateLimitOutcome::Allowed,
            Step::Pass((!policy.shadow).then_some(verdict)),
        ),
        Charge::Decided { .. } if policy.shadow => {
            (RateLimitOutcome::ShadowLimited, Step::Pass(None))
        }
        Charge::Decided { verdict, .. } => (RateLimitOutcome::Limited, Step::Reject(Some(verdict))),
        Charge::StoreFailed(_) if policy.on_store_error == FailureMode::Allow || policy.shadow => {
            (RateLimitOutcome::ErrorAllowed, Step::Pass(None))
        }
        Charge::StoreFailed(_) => (RateLimitOutcome::ErrorDenied, Step::Reject(None)),
    }
}

fn advertised(policy: usize, v: &Verdict) -> Advertised {
    Advertised {
        policy,
        remaining: v.remaining,
        full_in_ns: v.full_in_ns,
    }
}

/// A call to the rate limit service that a request waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCall {
    /// Index of the global policy.
    pub policy: usize,
    /// Its key's fingerprint.
    pub fingerprint: u64,
    /// Hits asked for.
    pub hits: u32,
    /// Of which the request's own cost.
    pub cost: u32,
    /// When it was sent, ns.
    pub sent_at: u64,
    /// The `ShouldRateLimit` request, encoded.
    pub message: Vec<u8>,
}

/// What charging the route's policies decided, short of a rejection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Charged {
    /// The local policies' states to advertise on the response.
    pub advertise: Vec<Advertised>,
    /// Global policies the rate limit service must decide (the request waits).
    pub calls: Vec<PendingCall>,
}

/// Charges every policy that applies to `route` at `now`: the local ones first
/// (top-level, then the route's), so that a local limit shields the rate limit
/// service, then the global ones, from what this worker holds or by asking the
/// service. `Err`: the reply of the policy that rejected the request. Each
/// policy's outcome is pushed to `events`.
pub fn charge_route<'rt, I: Ids>(
    rt: &'rt Runtime<I>,
    route: &RouteRuntime<I>,
    req: &mut impl RequestView,
    store: &mut impl SharedStore,
    now: u64,
    events: &mut Vec<Event>,
) -> Result<Charged, LocalReply<'rt>> {
    let mut passed: Vec<Advertised> = Vec::new();
    rt.confirm_secret(store, now);
    let indices: Vec<usize> = rt
        .top_level_policies
        .iter()
        .chain(route.route.rate_limits.iter())
        .copied()
        .collect();
    let is_global = |i: &usize| {
        rt.policies
            .get(*i)
            .is_some_and(|p| p.policy.global.is_some())
    };
    for &i in indices.iter().filter(|i| !is_global(i)) {
        let Some(p) = rt.policies.get(i) else {
            continue;
        };
        let Some(key) = build_key(&p.policy.key, &route.route.name, req) else {
            continue;
        };
        let cost = request_cost(&p.policy.cost, req);
        charge_bucket(rt, p, i, &key, cost, store, now, events, &mut passed)?;
    }
    let mut calls = Vec::new();
    for &i in indices.iter().filter(|i| is_global(i)) {
        let (Some(p), Some(service)) = (rt.policies.get(i), &rt.rate_limit_service) else {
            continue;
        };
        let (Some(g), Some(state)) = (&p.policy.global, &p.global) else {
            continue;
        };
        let Some(key) = build_key(&p.policy.key, &route.route.name, req) else {
            continue;
        };
        let fp = p.table.fingerprint(&key);
        let timeout_ns = service.timeout_ms.saturating_mul(1_000_000);
        let cost = request_cost(&p.policy.cost, req);
        // (Validated: a cost is at most 1,000,000,000 hits.)
        let cost_hits = u32::try_from(cost).unwrap_or(u32::MAX);
        let pre = state
            .borrow_mut()
            .precheck_cost(g, fp, now, timeout_ns, cost_hits);
        match pre {
            Pre::Leased => events.push(Event::RateLimit {
                policy: i,
                outcome: RateLimitOutcome::Allowed,
                remaining: None,
                cost,
            }),
            Pre::Cached { retry_ns } => {
                events.push(Event::GlobalCachedRejection { policy: i });
                limited(rt, i, retry_ns, &[], events)?;
            }
            Pre::Backoff if g.fallback => {
                let mut fallback = Vec::new();
                charge_bucket(rt, p, i, &key, cost, store, now, events, &mut fallback)?;
            }
            Pre::Backoff => failed(rt, i, service, events)?,
            Pre::Ask { hits } => {
                let Some(entries) = global::entries(g, &p.policy.key, &route.route.name, req)
                else {
                    continue;
                };
                calls.push(PendingCall {
                    policy: i,
                    fingerprint: fp,
                    hits,
                    cost: cost_hits,
                    sent_at: now,
                    message: global::request(&service.domain, &entries, hits),
                });
            }
        }
    }
    passed.retain(|a| {
        rt.policies
            .get(a.policy)
            .is_some_and(|p| p.policy.headers_on_allowed)
    });
    Ok(Charged {
        advertise: passed,
        calls,
    })
}

/// What this request costs under `cost`: one header read when the cost comes
/// from a header (the value is validated there; see [`CompiledCost::of`]).
fn request_cost(cost: &CompiledCost, req: &mut impl RequestView) -> u64 {
    match cost {
        CompiledCost::Fixed(c) => *c,
        CompiledCost::Header { name, .. } => cost.of(req.header(name)),
    }
}

/// Charges policy `i`'s local bucket (a local policy's, or a global policy's
/// fallback during back-off) for `key`.
#[allow(clippy::too_many_arguments)] // the charge's inputs plus the outcomes so far
fn charge_bucket<'rt, I: Ids>(
    rt: &'rt Runtime<I>,
    p: &PolicyRuntime<I>,
    i: usize,
    key: &[u8],
    cost: u64,
    store: &mut impl SharedStore,
    now: u64,
    events: &mut Vec<Event>,
    passed: &mut Vec<Advertised>,
) -> Result<(), LocalReply<'rt>> {
    let charged = charge_leased_cost(&mut p.leases.borrow_mut(), store, &p.table, key, now, cost);
    let mut counts = p.counts.get();
    let remaining = match &charged {
        Charge::Decided {
            verdict,
            overflow,
            claimed,
            ..
        } => {
            // More than the request's own cost: this worker took a lease.
            counts.leases += u64::from(verdict.granted > cost);
            if *overflow || *claimed {
                counts.overflow += u64::from(*overflow);
                events.push(Event::TableUse {
                    policy: i,
                    overflow: *overflow,
                    claimed: *claimed,
                });
            }
            Some(verdict.remaining)
        }
        Charge::StoreFailed(e) => {
            counts.store_errors += 1;
            if *e == StoreError::CasMismatch {
                events.push(Event::StoreConflict { policy: i });
            }
            None
        }
    };
    p.counts.set(counts);
    let (mut outcome, step) = outcome(p, charged);
    if p.policy.global.is_some() {
        outcome = match outcome {
            RateLimitOutcome::Allowed => RateLimitOutcome::Fallback,
            RateLimitOutcome::Limited | RateLimitOutcome::ShadowLimited => {
                RateLimitOutcome::FallbackLimited
            }
            other => other,
        };
    }
    let charged = match outcome {
        RateLimitOutcome::Allowed | RateLimitOutcome::Fallback => cost,
        _ => 0,
    };
    events.push(Event::RateLimit {
        policy: i,
        outcome,
        remaining,
        cost: charged,
    });
    match step {
        Step::Pass(Some(v)) => passed.push(advertised(i, &v)),
        Step::Pass(None) => {}
        Step::Reject(limiting) => {
            let limiting = limiting.map(|v| (advertised(i, &v), v.retry_in_ns));
            return Err(reply(rt, i, passed, limiting));
        }
    }
    Ok(())
}

/// Global policy `i` is over its limit for `retry_ns` (0: unknown): counted, and
/// rejected unless in shadow mode.
fn limited<'rt, I: Ids>(
    rt: &'rt Runtime<I>,
    i: usize,
    retry_ns: u64,
    service_headers: &[(String, String)],
    events: &mut Vec<Event>,
) -> Result<(), LocalReply<'rt>> {
    let shadow = rt.policies.get(i).is_some_and(|p| p.policy.shadow);
    let outcome = if shadow {
        RateLimitOutcome::ShadowLimited
    } else {
        RateLimitOutcome::Limited
    };
    events.push(Event::RateLimit {
        policy: i,
        outcome,
        remaining: None,
        cost: 0,
    });
    if shadow {
        return Ok(());
    }
    let mut r = reply(rt, i, &[], None);
    r.reason = ReplyReason::RateLimited { policy: i };
    if let Some(h) = r.headers.iter_mut().find(|(k, _)| k == "retry-after") {
        h.1 = ceil_seconds(retry_ns).max(1).to_string();
    }
    r.headers.extend(
        service_headers
            .iter()
            .map(|(k, v)| (Cow::Owned(k.clone()), v.clone())),
    );
    Err(r)
}

/// The rate limit service could not decide for global policy `i`: its `onError`.
fn failed<'rt, I: Ids>(
    rt: &'rt Runtime<I>,
    i: usize,
    service: &meshguard_config::ratelimit::CompiledRateLimitService,
    events: &mut Vec<Event>,
) -> Result<(), LocalReply<'rt>> {
    let shadow = rt.policies.get(i).is_some_and(|p| p.policy.shadow);
    if service.on_error == FailureMode::Allow || shadow {
        events.push(Event::RateLimit {
            policy: i,
            outcome: RateLimitOutcome::ErrorAllowed,
            remaining: None,
            cost: 0,
        });
        return Ok(());
    }
    events.push(Event::RateLimit {
        policy: i,
        outcome: RateLimitOutcome::ErrorDenied,
        remaining: None,
        cost: 0,
    });
    Err(reply(rt, i, &[], None))
}

/// Headers a global policy's answer asks to add.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServiceHeaders {
    /// To the upstream request.
    pub request: Vec<(String, String)>,
    /// To the response.
    pub response: Vec<(String, String)>,
}

/// The service's `replies` to `calls` (in order), at `now`: what each means,
/// counted, with the headers to add; `Err`: the reply of the first policy that
/// rejects the request.
pub fn answer_calls<'rt, I: Ids>(
    rt: &'rt Runtime<I>,
    calls: &[PendingCall],
    replies: &[Reply],
    now: u64,
    events: &mut Vec<Event>,
) -> Result<ServiceHeaders, LocalReply<'rt>> {
    let mut added = ServiceHeaders::default();
    let Some(service) = &rt.rate_limit_service else {
        return Ok(added);
    };
    for (call, r) in calls.iter().zip(replies) {
        let i = call.policy;
        let Some(p) = rt.policies.get(i) else {
            continue;
        };
        let (Some(g), Some(state)) = (&p.policy.global, &p.global) else {
            continue;
        };
        events.push(Event::GlobalCall {
            policy: i,
            duration_ms: now.saturating_sub(call.sent_at) / 1_000_000,
        });
        let answered = state.borrow_mut().answer_cost(
            service,
            g,
            call.fingerprint,
            call.hits,
            call.cost,
            r,
            now,
        );
        match (answered, r) {
            (
                Answered::Allowed { leased },
                Reply::Ok {
                    request_headers,
                    response_headers,
                },
            ) => {
                if leased {
                    let mut counts = p.counts.get();
                    counts.leases += 1;
                    p.counts.set(counts);
                    events.push(Event::GlobalLease { policy: i });
                }
                events.push(Event::RateLimit {
                    policy: i,
                    outcome: RateLimitOutcome::Allowed,
                    remaining: None,
                    cost: u64::from(call.cost),
                });
                added.request.extend(request_headers.iter().cloned());
                added.response.extend(response_headers.iter().cloned());
            }
            (
                Answered::OverLimit { retry_ns },
                Reply::OverLimit {
                    response_headers, ..
                },
            ) => {
                limited(rt, i, retry_ns, response_headers, events)?;
            }
            (Answered::Error { backoff }, Reply::Error(why)) => {
                let mut counts = p.counts.get();
                counts.rpc_errors += 1;
                p.counts.set(counts);
                events.push(Event::Warning(format!(
                    "meshguard: rate limit service failed for policy {} ({why}){}",
                    p.policy.name,
                    if backoff {
                        format!("; backing off for {} ms", service.backoff_ns / 1_000_000)
                    } else {
                        String::new()
                    }
                )));
                failed(rt, i, service, events)?;
            }
            _ => {}
        }
    }
    Ok(added)
}

fn states<'a, I: Ids>(rt: &'a Runtime<I>, advertised: &[Advertised]) -> Vec<PolicyState<'a>> {
    advertised
        .iter()
        .filter_map(|a| {
            let p = &rt.policies.get(a.policy)?.policy;
            Some(PolicyState {
                name: &p.name,
                quota: p.burst,
                window_s: p.window_s,
                remaining: a.remaining,
                full_in_ns: a.full_in_ns,
            })
        })
        .collect()
}

/// The limited reply of policy `limiter`: `retry-after`, and the RateLimit fields of
/// the policies charged so far plus the limiting one (unknown after a store
/// failure: then only `retry-after: 1`).
fn reply<'rt, I: Ids>(
    rt: &'rt Runtime<I>,
    limiter: usize,
    passed: &[Advertised],
    limiting: Option<(Advertised, u64)>,
) -> LocalReply<'rt> {
    let mut charged = passed.to_vec();
    charged.extend(limiting.map(|(a, _)| a));
    let states = states(rt, &charged);
    let retry = limiting.map_or(1, |(_, retry_ns)| ceil_seconds(retry_ns).max(1));
    let mut headers: Vec<(Cow<'static, str>, String)> = vec![
        ("retry-after".into(), retry.to_string()),
        ("content-type".into(), "text/plain; charset=utf-8".into()),
    ];
    if !states.is_empty() {
        headers.push(("ratelimit-policy".into(), policy_field(&states)));
        headers.push(("ratelimit".into(), ratelimit_field(&states)));
    }
    let policy = rt.policies.get(limiter).map(|p| &p.policy);
    if policy.is_some_and(|p| p.legacy_headers) {
        headers.extend(
            legacy_fields(&states)
                .into_iter()
                .flatten()
                .map(|(k, v)| (Cow::Borrowed(k), v)),
        );
    }
    LocalReply {
        status: policy.map_or(429, |p| p.status),
        headers,
        body: Cow::Borrowed(policy.map_or("", |p| p.body.as_str())),
        reason: if limiting.is_some() {
            ReplyReason::RateLimited { policy: limiter }
        } else {
            ReplyReason::RateLimitStoreError { policy: limiter }
        },
        grpc_status: policy.map_or(meshguard_config::grpc::RESOURCE_EXHAUSTED, |p| {
            p.grpc_status
        }),
        grpc: None,
    }
}

/// The RateLimit fields of allowed policies, for the response.
pub fn response_fields<I: Ids>(
    rt: &Runtime<I>,
    advertised: &[Advertised],
) -> Vec<(Cow<'static, str>, String)> {
    let states = states(rt, advertised);
    if states.is_empty() {
        return Vec::new();
    }
    let mut out = vec![
        ("ratelimit-policy".into(), policy_field(&states)),
        ("ratelimit".into(), ratelimit_field(&states)),
    ];
    let wants_legacy = advertised.iter().any(|a| {
        rt.policies
            .get(a.policy)
            .is_some_and(|p| p.policy.legacy_headers)
    });
    if wants_legacy {
        out.extend(
            legacy_fields(&states)
                .into_iter()
                .flatten()
                .map(|(k, v)| (Cow::Borrowed(k), v)),
        );
    }
    out
}

#[cfg(test)]
mod tests;
