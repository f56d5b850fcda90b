//! Rate limiting for one request: charge each policy that applies to its route
//! (top-level ones first, stopping at the first rejection), map each charge to its
//! outcome, and build the limited reply with its RateLimit fields.

use meshguard_config::raw::FailureMode;

use super::gcra::Verdict;
use super::headers::{legacy_fields, policy_field, ratelimit_field, PolicyState};
use super::key::build_key;
use super::lease::charge_leased;
use super::table::Charge;
use crate::decision::{Advertised, Event, LocalReply, ReplyReason};
use crate::metrics::RateLimitOutcome;
use crate::runtime::{Ids, PolicyRuntime, RouteRuntime, Runtime};
use crate::store::SharedStore;
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

/// Charges every policy that applies to `route` at `now`. `Ok`: the request may
/// pass, with the states to advertise on its response; `Err`: the reply of the
/// policy that rejected it. Each policy's outcome is pushed to `events`.
pub fn charge_route<'rt, I: Ids>(
    rt: &'rt Runtime<I>,
    route: &RouteRuntime<I>,
    req: &mut impl RequestView,
    store: &mut impl SharedStore,
    now: u64,
    events: &mut Vec<Event>,
) -> Result<Vec<Advertised>, LocalReply<'rt>> {
    let mut passed: Vec<Advertised> = Vec::new();
    let indices = rt
        .top_level_policies
        .iter()
        .chain(route.route.rate_limits.iter());
    for &i in indices {
        let Some(p) = rt.policies.get(i) else {
            continue;
        };
        let Some(key) = build_key(&p.policy.key, &route.route.name, req) else {
            continue;
        };
        let charged = charge_leased(&mut p.leases.borrow_mut(), store, &p.table, &key, now);
        let (outcome, step) = outcome(p, charged);
        events.push(Event::RateLimit { policy: i, outcome });
        match step {
            Step::Pass(Some(v)) => passed.push(advertised(i, &v)),
            Step::Pass(None) => {}
            Step::Reject(limiting) => {
                let limiting = limiting.map(|v| (advertised(i, &v), v.retry_in_ns));
                return Err(reply(rt, i, &passed, limiting));
            }
        }
    }
    passed.retain(|a| {
        rt.policies
            .get(a.policy)
            .is_some_and(|p| p.policy.headers_on_allowed)
    });
    Ok(passed)
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
    let mut headers: Vec<(&'static str, String)> = vec![
        ("retry-after", retry.to_string()),
        ("content-type", "text/plain; charset=utf-8".into()),
    ];
    if !states.is_empty() {
        headers.push(("ratelimit-policy", policy_field(&states)));
        headers.push(("ratelimit", ratelimit_field(&states)));
    }
    let policy = rt.policies.get(limiter).map(|p| &p.policy);
    if policy.is_some_and(|p| p.legacy_headers) {
        headers.extend(legacy_fields(&states).into_iter().flatten());
    }
    LocalReply {
        status: policy.map_or(429, |p| p.status),
        headers,
        body: policy.map_or("", |p| p.body.as_str()),
        reason: if limiting.is_some() {
            ReplyReason::RateLimited { policy: limiter }
        } else {
            ReplyReason::RateLimitStoreError { policy: limiter }
        },
    }
}

/// The RateLimit fields of allowed policies, for the response.
pub fn response_fields<I: Ids>(
    rt: &Runtime<I>,
    advertised: &[Advertised],
) -> Vec<(&'static str, String)> {
    let states = states(rt, advertised);
    if states.is_empty() {
        return Vec::new();
    }
    let mut out = vec![
        ("ratelimit-policy", policy_field(&states)),
        ("ratelimit", ratelimit_field(&states)),
    ];
    let wants_legacy = advertised.iter().any(|a| {
        rt.policies
            .get(a.policy)
            .is_some_and(|p| p.policy.legacy_headers)
    });
    if wants_legacy {
        out.extend(legacy_fields(&states).into_iter().flatten());
    }
    out
}
