//! Why meshguard decided what it did: the decision record of one request (built
//! only when `explain` wants it: filter state, the debug log, or a trusted caller
//! that asks) and the live status document answered at `explain.statusPath`.

use std::borrow::Cow;

use meshguard_config::explain::CompiledExplain;
use meshguard_config::report::{
    BreakerStatus, CanaryStatus, Decision, Evidence, LimitDecision, PolicyStatus, RouteStatus,
    Status, TableStatus, VariantStatus, VerdictStatus, WindowCounts, STATUS_SCHEMA,
};

use crate::breaker::shared::in_flight;
use crate::breaker::state::snapshot;
use crate::canary::{source_in, Reason};
use crate::decision::{Event, LocalReply, ReplyReason, RequestEffects, StreamState};
use crate::metrics::{Label, RateLimitOutcome};
use crate::ratelimit::gcra::Bucket;
use crate::ratelimit::table::decode;
use crate::runtime::{Ids, Runtime};
use crate::store::SharedStore;
use crate::view::RequestView;

/// Slots of a rate-limit table the status document reads at most.
pub const STATUS_SAMPLE: u32 = 1024;

/// The `reason` of a decision record.
pub fn reason_label(reason: Reason) -> Cow<'static, str> {
    match reason {
        Reason::Propagated => "propagated".into(),
        Reason::Rule(n) => format!("rule:{n}").into(),
        Reason::Sticky => "sticky".into(),
        Reason::StickyIssued => "sticky_issued".into(),
        Reason::Random => "weighted".into(),
        Reason::RolledBack => "rolled_back".into(),
    }
}

/// The `reply` of a decision record.
pub fn reply_label(reason: ReplyReason) -> &'static str {
    match reason {
        ReplyReason::RateLimited { .. } => "rate_limited",
        ReplyReason::RateLimitStoreError { .. } => "rate_limit_store_error",
        ReplyReason::BreakerOpen => "breaker_open",
        ReplyReason::BreakerHalfOpen => "breaker_half_open",
        ReplyReason::Concurrency => "concurrency",
        ReplyReason::Status => "status",
    }
}

/// Whether the caller's address (as meshguard reads it) lies in `explain`'s
/// trusted blocks.
fn trusted(explain: &CompiledExplain, req: &mut impl RequestView) -> bool {
    source_in(&explain.trusted, req)
}

/// A trusted caller asks for the status document: `:path` (without its query)
/// is the status path. Reads `:path` only when a status path is configured, and
/// the client address only when the path matches.
pub(crate) fn wants_status<I: Ids>(rt: &Runtime<I>, req: &mut impl RequestView) -> bool {
    let Some(e) = &rt.explain else {
        return false;
    };
    let Some(want) = &e.status_path else {
        return false;
    };
    let on_path = req.header(":path").is_some_and(|p| {
        let path = p.split(|b| *b == b'?').next().unwrap_or_default();
        path == want.as_bytes()
    });
    on_path && trusted(e, req)
}

/// A trusted caller asks for the decision header. Reads the ask header only
/// when the header is configured, and the client address only when it is sent.
pub(crate) fn asks_decision<I: Ids>(rt: &Runtime<I>, req: &mut impl RequestView) -> bool {
    let Some(e) = &rt.explain else {
        return false;
    };
    let Some((ask, _)) = &e.header else {
        return false;
    };
    req.header(ask).is_some() && trusted(e, req)
}

/// The status document as a local reply.
pub(crate) fn status_reply<'rt, I: Ids>(
    rt: &'rt Runtime<I>,
    store: &mut impl SharedStore,
    now: Option<u64>,
) -> LocalReply<'rt> {
    let body = status(rt, store, now.unwrap_or(0)).to_json();
    LocalReply {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body: Cow::Owned(body),
        reason: ReplyReason::Status,
        grpc_status: 0,
        grpc: None,
    }
}

/// Adds the decision record to `fx` (for filter state and the log) and, for a
/// caller that asked, to the reply or the response, when `explain` wants one.
/// `earlier`: rate-limit outcomes of the same request from before a wait for
/// the rate limit service.
pub(crate) fn explain_decision<'rt, I: Ids>(
    rt: &'rt Runtime<I>,
    state: &mut StreamState,
    earlier: &[(usize, &'static str, Option<u64>)],
    fx: &mut RequestEffects<'rt>,
) {
    let Some(e) = &rt.explain else {
        return;
    };
    if !e.always() && !state.asked {
        return;
    }
    let record = decision(rt, state, earlier, &fx.events, fx.reply.as_ref());
    let json = record.to_json();
    if state.asked {
        if let Some((_, name)) = &e.header {
            match &mut fx.reply {
                Some(reply) => reply.headers.push((Cow::Owned(name.clone()), json.clone())),
                None => state.decision_header = Some(json.clone()),
            }
        }
    }
    if e.always() {
        fx.decision = Some(json);
    }
}

/// The decision record of a request decided as `state`, with `events` and
/// `reply`.
pub fn decision<I: Ids>(
    rt: &Runtime<I>,
    state: &StreamState,
    earlier: &[(usize, &'static str, Option<u64>)],
    events: &[Event],
    reply: Option<&LocalReply<'_>>,
) -> Decision {
    let route = state.route.and_then(|i| rt.routes.get(i));
    let policy = route.and_then(|r| r.route.canary.as_ref());
    let variant = policy
        .zip(state.variant)
        .and_then(|(p, v)| p.variants.get(v))
        .map(|v| v.name.clone());
    let reason = if state.fallback {
        Some("fallback".into())
    } else {
        state.reason.map(|r| reason_label(r).into_owned())
    };
    let mut limits: Vec<LimitDecision> = Vec::new();
    let now = events.iter().filter_map(limit_of);
    for (i, outcome, remaining) in earlier.iter().copied().chain(now) {
        let name = rt
            .policies
            .get(i)
            .map(|p| p.policy.name.as_str())
            .unwrap_or_default();
        // A remembered rejection is counted as `limited` too: one entry each.
        if outcome == RateLimitOutcome::Limited.label()
            && limits.last().is_some_and(|l| l.policy == name)
        {
            continue;
        }
        limits.push(LimitDecision {
            policy: name.into(),
            outcome: outcome.into(),
            remaining,
        });
    }
    let breaker = match (reply.map(|r| r.reason), &state.ticket) {
        (Some(ReplyReason::BreakerOpen), _) => Some("open"),
        (Some(ReplyReason::BreakerHalfOpen), _) => Some("half_open"),
        (Some(ReplyReason::Concurrency), _) => Some("at_capacity"),
        (_, Some(_)) if state.fallback => Some("open"),
        (_, Some(t)) if t.probe => Some("probe"),
        (_, Some(_)) => Some("closed"),
        _ => None,
    };
    let analysis = route.and_then(|r| {
        let rollout = r.rollout.as_ref()?;
        let config = r.route.canary.as_ref()?.rollout.as_ref()?;
        let v = state.variant?;
        Some(if v == 0 {
            "baseline"
        } else {
            rollout.state.view.borrow().record.state(config, v).label()
        })
    });
    Decision {
        route: route.map(|r| r.route.name.clone()),
        variant,
        reason,
        limits,
        breaker: breaker.map(Into::into),
        analysis: analysis.map(Into::into),
        reply: reply.map(|r| reply_label(r.reason).into()),
    }
}

/// The live status document at `now`, read from shared data through `store`.
pub fn status<I: Ids>(rt: &Runtime<I>, store: &mut impl SharedStore, now: u64) -> Status {
    let mut routes = Vec::with_capacity(rt.routes.len());
    for r in &rt.routes {
        let mut breakers = Vec::new();
        if let Some(policy) = &r.route.breaker {
            let labels = crate::runtime::breaker_labels(&r.route);
            for (variant, b) in labels.into_iter().zip(&r.breakers) {
                let bytes = store.get(&b.key).ok().and_then(|(v, _)| v);
                let s = snapshot(policy, bytes.as_deref(), now);
                let open = s.phase == crate::Phase::Open;
                breakers.push(BreakerStatus {
                    variant: variant.into(),
                    phase: s.phase.label().into(),
                    open_for_ms: open.then(|| s.open_until.saturating_sub(now) / 1_000_000),
                    window: WindowCounts {
                        calls: s.totals.calls,
                        failures: s.totals.failures,
                        slow: s.totals.slow,
                    },
                });
            }
        }
        let in_flight = r
            .slots
            .as_ref()
            .map(|s| in_flight(store, &s.key, now).map_or(0, u64::from));
        routes.push(RouteStatus {
            name: r.route.name.clone(),
            canary: r.route.canary.as_ref().map(|p| canary_status(r, p, now)),
            breakers,
            in_flight,
        });
    }
    let mut policies = Vec::with_capacity(rt.policies.len());
    for p in &rt.policies {
        let table = &p.table;
        let sampled = table.max_keys.min(STATUS_SAMPLE);
        let mut used = 0;
        for slot in 0..sampled {
            used += u32::from(holds(store, &format!("{}.{slot}", table.prefix), now));
        }
        let overflow_in_use = holds(store, &format!("{}.overflow", table.prefix), now);
        policies.push(PolicyStatus {
            name: p.policy.name.clone(),
            global: p.policy.global.is_some(),
            shadow: p.policy.shadow,
            table: TableStatus {
                max_keys: table.max_keys,
                sampled,
                used,
                overflow_in_use,
            },
            worker: p.counts.get(),
            backoff: p.global.as_ref().map(|g| g.borrow().in_backoff(now)),
        });
    }
    Status {
        schema: STATUS_SCHEMA.into(),
        plugin: rt.store_prefix.clone(),
        revision: format!("{:016x}", rt.revision),
        routes,
        policies,
    }
}

/// A rate-limit event's `(policy, outcome, remaining)` for the decision record.
pub(crate) fn limit_of(ev: &Event) -> Option<(usize, &'static str, Option<u64>)> {
    match ev {
        Event::RateLimit {
            policy,
            outcome,
            remaining,
            ..
        } => Some((*policy, outcome.label(), *remaining)),
        Event::GlobalCachedRejection { policy } => Some((*policy, "cached_limited", None)),
        _ => None,
    }
}

/// Whether the rate-limit slot `key` holds a bucket that is not full at `now`.
fn holds(store: &mut impl SharedStore, key: &str, now: u64) -> bool {
    let value = store.get(key).ok().and_then(|(v, _)| v);
    value
        .as_deref()
        .and_then(decode)
        .is_some_and(|(_, tat)| !Bucket::is_full(tat, now))
}

/// A canary policy's live split: the rollout's view, or the configured weights.
fn canary_status<I: Ids>(
    r: &crate::runtime::RouteRuntime<I>,
    policy: &meshguard_config::canary::CompiledCanary,
    now: u64,
) -> CanaryStatus {
    let mut variants = Vec::with_capacity(policy.variants.len());
    if let (Some(ro), Some(config)) = (&r.rollout, &policy.rollout) {
        let live = ro.state.status(config);
        for (v, s) in policy.variants.iter().zip(live) {
            variants.push(VariantStatus {
                name: v.name.clone(),
                weight: s.weight,
                state: s.state.map_or("baseline", Label::label).into(),
                evidence: match (&config.analysis, s.state) {
                    (Some(_), Some(_)) => Some(Evidence {
                        errors: s.evidence[0],
                        slow: s.evidence[1],
                    }),
                    _ => None,
                },
                shadow_verdict: s.shadow,
                verdict: s.verdict.map(|d| VerdictStatus {
                    cause: d.cause.into(),
                    at_seconds: d.at_s,
                    since_seconds: d.since_s,
                }),
            });
        }
        let step = ro.state.view.borrow().record.step;
        let answered = ro.state.answered.get();
        return CanaryStatus {
            rollout: true,
            step: config.ramp.as_ref().map(|_| u32::from(step)),
            judged_by: ro.state.mode.get().map(|m| m.label().to_owned()),
            fleet_age_ms: (config.fleet.is_some() && answered > 0)
                .then(|| now.saturating_sub(answered) / 1_000_000),
            method: config.analysis.as_ref().map(|a| a.method.name().into()),
            variants,
        };
    }
    for (i, (v, &weight)) in policy.variants.iter().zip(&policy.weights).enumerate() {
        variants.push(VariantStatus {
            name: v.name.clone(),
            weight,
            state: if i == 0 { "baseline" } else { "static" }.into(),
            evidence: None,
            shadow_verdict: false,
            verdict: None,
        });
    }
    CanaryStatus {
        rollout: false,
        variants,
        ..CanaryStatus::default()
    }
}
