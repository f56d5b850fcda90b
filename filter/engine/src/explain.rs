//! Why meshguard decided what it did: the decision record of one request (built
//! only when `explain` wants it: filter state, the debug log, or a trusted caller
//! that asks) and the live status document answered at `explain.statusPath`.

use std::borrow::Cow;

use meshguard_config::explain::CompiledExplain;
use meshguard_config::report::{
    BreakerStatus, CanaryStatus, Decision, Evidence, LimitDecision, PolicyStatus, RouteStatus,
    Status, TableStatus, VariantStatus, WindowCounts, STATUS_SCHEMA,
};

use crate::breaker::shared::in_flight;
use crate::breaker::state::snapshot;
use crate::canary::{parse_source_address, Reason};
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
    !explain.trusted.is_empty()
        && req
            .source_address()
            .and_then(parse_source_address)
            .is_some_and(|ip| explain.trusted.iter().any(|c| c.contains(ip)))
}

impl<I: Ids> Runtime<I> {
    /// A trusted caller asks for the status document: `:path` (without its query)
    /// is the status path. Reads `:path` only when a status path is configured, and
    /// the client address only when the path matches.
    pub(crate) fn wants_status(&self, req: &mut impl RequestView) -> bool {
        let Some(e) = &self.explain else {
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
    pub(crate) fn asks_decision(&self, req: &mut impl RequestView) -> bool {
        let Some(e) = &self.explain else {
            return false;
        };
        let Some((ask, _)) = &e.header else {
            return false;
        };
        req.header(ask).is_some() && trusted(e, req)
    }

    /// The status document as a local reply.
    pub(crate) fn status_reply<'rt>(
        &'rt self,
        store: &mut impl SharedStore,
        now: Option<u64>,
    ) -> LocalReply<'rt> {
        let doc = self.status(store, now.unwrap_or(0));
        let body = serde_json::to_string(&doc).unwrap_or_else(|e| {
            format!(
                "{{\"schema\":\"{STATUS_SCHEMA}\",\"error\":{:?}}}",
                e.to_string()
            )
        });
        LocalReply {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: Cow::Owned(body + "\n"),
            reason: ReplyReason::Status,
            grpc_status: 0,
            grpc: None,
        }
    }

    /// Adds the decision record to `fx` (for filter state and the log) and, for a
    /// caller that asked, to the reply or the response, when `explain` wants one.
    /// `earlier`: rate-limit events of the same request from before a wait for
    /// the rate limit service.
    pub(crate) fn explain_decision<'rt>(
        &'rt self,
        state: &mut StreamState,
        earlier: &[Event],
        fx: &mut RequestEffects<'rt>,
    ) {
        let Some(e) = &self.explain else {
            return;
        };
        if !e.always() && !state.asked {
            return;
        }
        let record = self.decision(state, earlier.iter().chain(&fx.events), fx.reply.as_ref());
        let json = serde_json::to_string(&record).unwrap_or_default();
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
    pub fn decision<'a>(
        &self,
        state: &StreamState,
        events: impl Iterator<Item = &'a Event>,
        reply: Option<&LocalReply<'_>>,
    ) -> Decision {
        let route = state.route.and_then(|i| self.routes.get(i));
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
        let limits = events
            .filter_map(|ev| match ev {
                Event::RateLimit {
                    policy,
                    outcome,
                    remaining,
                } => Some((*policy, outcome.label(), *remaining)),
                Event::GlobalCachedRejection { policy } => Some((*policy, "cached_limited", None)),
                _ => None,
            })
            // A remembered rejection is counted as `limited` too: one entry each.
            .fold(
                Vec::<LimitDecision>::new(),
                |mut acc, (i, outcome, remaining)| {
                    let name = self
                        .policies
                        .get(i)
                        .map(|p| p.policy.name.clone())
                        .unwrap_or_default();
                    let again = acc.last().is_some_and(|l| l.policy == name);
                    if !(again && outcome == RateLimitOutcome::Limited.label()) {
                        acc.push(LimitDecision {
                            policy: name,
                            outcome: outcome.into(),
                            remaining,
                        });
                    }
                    acc
                },
            );
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
    pub fn status(&self, store: &mut impl SharedStore, now: u64) -> Status {
        let routes = self
            .routes
            .iter()
            .map(|r| {
                let canary = r.route.canary.as_ref().map(|policy| {
                    let names = policy.variants.iter().map(|v| v.name.clone());
                    let config = policy.rollout.as_ref();
                    match (&r.rollout, config) {
                        (Some(ro), Some(config)) => {
                            let live = ro.state.status(config);
                            CanaryStatus {
                                rollout: true,
                                step: config
                                    .ramp
                                    .as_ref()
                                    .map(|_| u32::from(ro.state.view.borrow().record.step)),
                                variants: names
                                    .zip(live)
                                    .map(|(name, s)| VariantStatus {
                                        name,
                                        weight: s.weight,
                                        state: s.state.map_or("baseline", Label::label).into(),
                                        evidence: config.analysis.as_ref().and(s.state).map(|_| {
                                            Evidence {
                                                errors: s.evidence[0],
                                                slow: s.evidence[1],
                                            }
                                        }),
                                        shadow_verdict: s.shadow,
                                    })
                                    .collect(),
                            }
                        }
                        _ => CanaryStatus {
                            rollout: false,
                            step: None,
                            variants: names
                                .zip(&policy.weights)
                                .enumerate()
                                .map(|(i, (name, &weight))| VariantStatus {
                                    name,
                                    weight,
                                    state: if i == 0 { "baseline" } else { "static" }.into(),
                                    evidence: None,
                                    shadow_verdict: false,
                                })
                                .collect(),
                        },
                    }
                });
                let breakers = match &r.route.breaker {
                    Some(policy) => crate::runtime::breaker_labels(&r.route)
                        .into_iter()
                        .zip(&r.breakers)
                        .map(|(variant, b)| {
                            let bytes = store.get(&b.key).ok().and_then(|(v, _)| v);
                            let s = snapshot(policy, bytes.as_deref(), now);
                            BreakerStatus {
                                variant: variant.into(),
                                phase: s.phase.label().into(),
                                open_for_ms: (s.phase == crate::Phase::Open)
                                    .then(|| s.open_until.saturating_sub(now) / 1_000_000),
                                window: WindowCounts {
                                    calls: s.totals.calls,
                                    failures: s.totals.failures,
                                    slow: s.totals.slow,
                                },
                            }
                        })
                        .collect(),
                    None => Vec::new(),
                };
                let in_flight = r
                    .slots
                    .as_ref()
                    .map(|key| in_flight(store, key).map_or(0, u64::from));
                RouteStatus {
                    name: r.route.name.clone(),
                    canary,
                    breakers,
                    in_flight,
                }
            })
            .collect();
        let policies = self
            .policies
            .iter()
            .map(|p| {
                let table = &p.table;
                let sampled = table.max_keys.min(STATUS_SAMPLE);
                let holds = |v: Option<Vec<u8>>| {
                    v.as_deref()
                        .and_then(decode)
                        .is_some_and(|(_, tat)| !Bucket::is_full(tat, now))
                };
                let used = (0..sampled)
                    .filter(|slot| {
                        holds(
                            store
                                .get(&format!("{}.{slot}", table.prefix))
                                .ok()
                                .and_then(|(v, _)| v),
                        )
                    })
                    .count();
                let overflow_in_use = holds(
                    store
                        .get(&format!("{}.overflow", table.prefix))
                        .ok()
                        .and_then(|(v, _)| v),
                );
                PolicyStatus {
                    name: p.policy.name.clone(),
                    global: p.policy.global.is_some(),
                    shadow: p.policy.shadow,
                    table: TableStatus {
                        max_keys: table.max_keys,
                        sampled,
                        used: u32::try_from(used).unwrap_or(u32::MAX),
                        overflow_in_use,
                    },
                    worker: p.counts.get(),
                    backoff: p.global.as_ref().map(|g| g.borrow().in_backoff(now)),
                }
            })
            .collect();
        Status {
            schema: STATUS_SCHEMA.into(),
            plugin: self.store_prefix.clone(),
            revision: format!("{:016x}", self.revision),
            routes,
            policies,
        }
    }
}
