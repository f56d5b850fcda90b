//! The filter's metrics: their ids (defined once, at configure time, never on the
//! request path) and how an engine [`Event`] or RED sample becomes metric calls
//! and log lines.

use meshguard_config::ratelimit::CompiledRateLimit;
use meshguard_engine::metrics::{
    breaker_rejected, breaker_state, breaker_transitions, canary_evidence, canary_shadow_verdict,
    canary_state, canary_transitions, canary_weight, fleet_last_sync, fleet_state,
    fleet_sync_duration, fleet_syncs, grpc_requests_total, ratelimit_cached_rejections,
    ratelimit_leases, ratelimit_overflow, ratelimit_requests, ratelimit_rpc_duration,
    ratelimit_store_conflicts, ratelimit_table_keys, request_duration, request_failures_total,
    requests_in_flight, requests_total,
};
use meshguard_engine::{
    ByLabel, CanaryState, Change, CodeClass, DefineIds, Event, FleetMode, GrpcLabel, Ids, Label,
    Phase, RateLimitOutcome, RedSample, RejectKind, Signal, SyncOutcome, VariantStatus,
};

use super::plugin::Plugin;
use crate::host::{Host, HostError, Level, MetricKind};

/// The Wasm host's metric ids, as the engine's [`Ids`] family.
#[derive(Debug)]
pub struct WasmIds;

impl Ids for WasmIds {
    type Red = RedIds;
    type Breaker = BreakerIds;
    type Policy = PolicyIds;
    type Rollout = RolloutIds;
    type Fleet = FleetIds;
}

/// A rollout's metrics.
#[derive(Debug)]
pub struct RolloutIds {
    /// Per variant, baseline first.
    pub variants: Vec<CanaryIds>,
    /// A fleet rollout's `fleet_state` by mode.
    pub fleet: Option<ByLabel<FleetMode, u32>>,
}

/// The fleet sync's metrics.
#[derive(Debug)]
pub struct FleetIds {
    /// `fleet_syncs_total` by outcome.
    pub syncs: ByLabel<SyncOutcome, u32>,
    /// `fleet_sync_duration_milliseconds`.
    pub duration: u32,
    /// `fleet_last_sync_seconds`.
    pub last: u32,
}

/// A rate-limit policy's metrics.
#[derive(Debug)]
pub struct PolicyIds {
    /// `ratelimit_requests_total` by outcome.
    pub outcomes: ByLabel<RateLimitOutcome, u32>,
    /// A global policy's: the call histogram, leases and cached rejections.
    pub global: Option<GlobalIds>,
    /// `ratelimit_overflow_total`.
    pub overflow: u32,
    /// `ratelimit_table_keys` (a gauge).
    pub keys: u32,
    /// `ratelimit_store_conflicts_total`.
    pub conflicts: u32,
}

/// The metrics of a global policy's calls to the rate limit service.
#[derive(Debug)]
pub struct GlobalIds {
    /// `ratelimit_rpc_duration_milliseconds`.
    pub rpc: u32,
    /// `ratelimit_leases_total`.
    pub leases: u32,
    /// `ratelimit_cached_rejections_total`.
    pub cached: u32,
}

/// A canary variant's rollout metrics.
#[derive(Debug)]
pub struct CanaryIds {
    /// `canary_weight`: its effective weight, basis points.
    pub weight: u32,
    /// The rest, for the variants that are judged (not the baseline).
    pub judged: Option<JudgedIds>,
}

/// The metrics of a judged (non-baseline) variant.
#[derive(Debug)]
pub struct JudgedIds {
    /// `canary_state`: 1 in the current state, 0 in the others.
    pub state: ByLabel<CanaryState, u32>,
    /// `canary_transitions_total` by target state.
    pub transitions: ByLabel<CanaryState, u32>,
    /// `canary_evidence_permille` by signal.
    pub evidence: ByLabel<Signal, u32>,
    /// `canary_shadow_verdict`.
    pub shadow: u32,
}

/// RED metric ids of one route (or of unmatched requests).
#[derive(Debug)]
pub struct RedIds {
    /// Gauge of requests in flight.
    pub in_flight: u32,
    /// Per variant label (the policy's variants, then `none`).
    pub variants: Vec<VariantRed>,
}

/// The RED series of one variant label.
#[derive(Debug)]
pub struct VariantRed {
    /// `requests_total` per status class.
    pub requests: ByLabel<CodeClass, u32>,
    /// `request_failures_total`.
    pub failures: u32,
    /// `grpc_requests_total` per gRPC status (routes with `protocol: grpc`).
    pub grpc: Option<ByLabel<GrpcLabel, u32>>,
    /// The duration histogram.
    pub duration: u32,
}

/// Metric ids of one breaker instance.
#[derive(Debug)]
pub struct BreakerIds {
    /// Gauge: 0 closed, 1 half-open, 2 open.
    pub state: u32,
    /// Transitions into each phase.
    pub transitions: ByLabel<Phase, u32>,
    /// Rejections by kind.
    pub rejected: ByLabel<RejectKind, u32>,
}

/// Defines metrics through a [`Host`].
pub struct Definer<'h, H: Host>(pub &'h H);

impl<H: Host> DefineIds<WasmIds> for Definer<'_, H> {
    type Error = HostError;

    fn red(&mut self, route: &str, variants: &[&str], grpc: bool) -> Result<RedIds, HostError> {
        let host = self.0;
        Ok(RedIds {
            in_flight: host.define_metric(MetricKind::Gauge, &requests_in_flight(route))?,
            variants: variants
                .iter()
                .map(|v| {
                    Ok(VariantRed {
                        requests: ByLabel::try_new(|class| {
                            host.define_metric(
                                MetricKind::Counter,
                                &requests_total(route, v, class),
                            )
                        })?,
                        failures: host.define_metric(
                            MetricKind::Counter,
                            &request_failures_total(route, v),
                        )?,
                        grpc: if grpc {
                            Some(ByLabel::try_new(|status| {
                                host.define_metric(
                                    MetricKind::Counter,
                                    &grpc_requests_total(route, v, status),
                                )
                            })?)
                        } else {
                            None
                        },
                        duration: host
                            .define_metric(MetricKind::Histogram, &request_duration(route, v))?,
                    })
                })
                .collect::<Result<_, HostError>>()?,
        })
    }

    fn breaker(&mut self, route: &str, variant: &str) -> Result<BreakerIds, HostError> {
        let host = self.0;
        Ok(BreakerIds {
            state: host.define_metric(MetricKind::Gauge, &breaker_state(route, variant))?,
            transitions: ByLabel::try_new(|phase| {
                host.define_metric(
                    MetricKind::Counter,
                    &breaker_transitions(route, variant, phase),
                )
            })?,
            rejected: ByLabel::try_new(|kind| {
                host.define_metric(MetricKind::Counter, &breaker_rejected(route, variant, kind))
            })?,
        })
    }

    fn policy(&mut self, policy: &CompiledRateLimit) -> Result<PolicyIds, HostError> {
        let host = self.0;
        let name = policy.name.as_str();
        let global = match policy.global {
            None => None,
            Some(_) => Some(GlobalIds {
                rpc: host.define_metric(MetricKind::Histogram, &ratelimit_rpc_duration(name))?,
                leases: host.define_metric(MetricKind::Counter, &ratelimit_leases(name))?,
                cached: host
                    .define_metric(MetricKind::Counter, &ratelimit_cached_rejections(name))?,
            }),
        };
        Ok(PolicyIds {
            outcomes: ByLabel::try_new(|outcome| {
                host.define_metric(MetricKind::Counter, &ratelimit_requests(name, outcome))
            })?,
            global,
            overflow: host.define_metric(MetricKind::Counter, &ratelimit_overflow(name))?,
            keys: host.define_metric(MetricKind::Gauge, &ratelimit_table_keys(name))?,
            conflicts: host.define_metric(MetricKind::Counter, &ratelimit_store_conflicts(name))?,
        })
    }

    fn fleet(&mut self) -> Result<FleetIds, HostError> {
        let host = self.0;
        Ok(FleetIds {
            syncs: ByLabel::try_new(|o| host.define_metric(MetricKind::Counter, &fleet_syncs(o)))?,
            duration: host.define_metric(MetricKind::Histogram, &fleet_sync_duration())?,
            last: host.define_metric(MetricKind::Gauge, &fleet_last_sync())?,
        })
    }

    fn rollout(
        &mut self,
        route: &str,
        variants: &[&str],
        fleet: bool,
    ) -> Result<RolloutIds, HostError> {
        let host = self.0;
        let gauge = |name: &str| host.define_metric(MetricKind::Gauge, name);
        let counter = |name: &str| host.define_metric(MetricKind::Counter, name);
        let fleet = if fleet {
            Some(ByLabel::try_new(|m| gauge(&fleet_state(route, m)))?)
        } else {
            None
        };
        let variants = variants
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let judged = if i == 0 {
                    None
                } else {
                    Some(JudgedIds {
                        state: ByLabel::try_new(|s| gauge(&canary_state(route, v, s)))?,
                        transitions: ByLabel::try_new(|s| {
                            counter(&canary_transitions(route, v, s))
                        })?,
                        evidence: ByLabel::try_new(|s| gauge(&canary_evidence(route, v, s)))?,
                        shadow: gauge(&canary_shadow_verdict(route, v))?,
                    })
                };
                Ok(CanaryIds {
                    weight: gauge(&canary_weight(route, v))?,
                    judged,
                })
            })
            .collect::<Result<_, HostError>>()?;
        Ok(RolloutIds { variants, fleet })
    }
}

fn count(host: &impl Host, plugin: &Plugin, id: Option<&u32>) {
    if let Some(id) = id {
        plugin.add(host, *id, 1);
    }
}

/// Counts and logs what the engine reported.
pub fn record_events(host: &impl Host, plugin: &Plugin, events: &[Event]) {
    for e in events {
        match e {
            Event::TableUse {
                policy,
                overflow,
                claimed,
            } => {
                let ids = plugin.policies.get(*policy).map(|p| &p.ids);
                if *overflow {
                    count(host, plugin, ids.map(|i| &i.overflow));
                }
                if *claimed {
                    count(host, plugin, ids.map(|i| &i.keys));
                }
            }
            Event::StoreConflict { policy } => count(
                host,
                plugin,
                plugin.policies.get(*policy).map(|p| &p.ids.conflicts),
            ),
            Event::RateLimit {
                policy, outcome, ..
            } => count(
                host,
                plugin,
                plugin
                    .policies
                    .get(*policy)
                    .and_then(|p| p.ids.outcomes.get(*outcome)),
            ),
            Event::GlobalCall {
                policy,
                duration_ms,
            } => {
                if let Some(g) = global_ids(plugin, *policy) {
                    let _ = host.record_metric(g.rpc, *duration_ms);
                }
            }
            Event::GlobalLease { policy } => {
                count(host, plugin, global_ids(plugin, *policy).map(|g| &g.leases))
            }
            Event::GlobalCachedRejection { policy } => {
                count(host, plugin, global_ids(plugin, *policy).map(|g| &g.cached))
            }
            Event::BreakerTransition {
                route,
                instance,
                transition: t,
            } => {
                let Some(b) = plugin
                    .routes
                    .get(*route)
                    .and_then(|r| r.breakers.get(*instance))
                else {
                    continue;
                };
                let _ = host.record_metric(b.ids.state, t.to.gauge());
                count(host, plugin, b.ids.transitions.get(t.to));
                host.log(
                    Level::Info,
                    &format!(
                        "meshguard: breaker {}: {} -> {} ({})",
                        b.name,
                        t.from.label(),
                        t.to.label(),
                        t.reason
                    ),
                );
            }
            Event::BreakerRejected {
                route,
                instance,
                kind,
            } => count(
                host,
                plugin,
                plugin
                    .routes
                    .get(*route)
                    .and_then(|r| r.breakers.get(*instance))
                    .and_then(|b| b.ids.rejected.get(*kind)),
            ),
            Event::Rollout { route, change } => rollout_change(host, plugin, *route, change),
            Event::RolloutStatus {
                route,
                variants,
                fleet,
            } => {
                if let Some(ids) = plugin.routes.get(*route).and_then(|r| r.rollout.as_ref()) {
                    for (ids, status) in ids.ids.variants.iter().zip(variants) {
                        publish(host, ids, status);
                    }
                    if let (Some(gauges), Some(mode)) = (&ids.ids.fleet, fleet) {
                        for m in FleetMode::ALL {
                            if let Some(id) = gauges.get(*m) {
                                let _ = host.record_metric(*id, u64::from(m == mode));
                            }
                        }
                    }
                }
            }
            Event::FleetSync {
                duration_ms,
                error,
                now,
            } => {
                if let Some(ids) = &plugin.fleet_ids {
                    let outcome = if error.is_some() {
                        SyncOutcome::Error
                    } else {
                        SyncOutcome::Ok
                    };
                    count(host, plugin, ids.syncs.get(outcome));
                    let _ = host.record_metric(ids.duration, *duration_ms);
                    if error.is_none() {
                        let _ = host.record_metric(ids.last, now / 1_000_000_000);
                    }
                }
            }
            Event::Warning(message) => host.log(Level::Warn, message),
        }
    }
}

fn global_ids(plugin: &Plugin, policy: usize) -> Option<&GlobalIds> {
    plugin.policies.get(policy)?.ids.global.as_ref()
}

/// `route/variant` of a canary variant, for logs.
fn variant_name(plugin: &Plugin, route: usize, variant: usize) -> String {
    let r = plugin.routes.get(route);
    let v = r
        .and_then(|r| r.route.canary.as_ref())
        .and_then(|c| c.variants.get(variant));
    format!(
        "{}/{}",
        r.map_or("?", |r| r.route.name.as_str()),
        v.map_or("?", |v| v.name.as_str())
    )
}

fn rollout_change(host: &impl Host, plugin: &Plugin, route: usize, change: &Change) {
    match change {
        Change::State {
            variant,
            from,
            to,
            reason,
        } => {
            let ids = plugin
                .routes
                .get(route)
                .and_then(|r| r.rollout.as_ref())
                .and_then(|r| r.ids.variants.get(*variant))
                .and_then(|v| v.judged.as_ref());
            count(host, plugin, ids.and_then(|j| j.transitions.get(*to)));
            host.log(
                Level::Info,
                &format!(
                    "meshguard: canary {}: {} -> {} ({reason})",
                    variant_name(plugin, route, *variant),
                    from.label(),
                    to.label()
                ),
            );
        }
        Change::Shadow { variant, reason } => host.log(
            Level::Info,
            &format!(
                "meshguard: canary {}: shadow verdict, would roll back ({reason})",
                variant_name(plugin, route, *variant)
            ),
        ),
        Change::Step {
            step,
            weight,
            reason,
        } => host.log(
            Level::Info,
            &format!(
                "meshguard: canary {}: ramp to step {} at {weight} bp ({reason})",
                variant_name(plugin, route, 1),
                step + 1
            ),
        ),
    }
}

/// Sets a variant's gauges to its status.
fn publish(host: &impl Host, ids: &CanaryIds, status: &VariantStatus) {
    let _ = host.record_metric(ids.weight, u64::from(status.weight));
    let Some(j) = &ids.judged else { return };
    for s in CanaryState::ALL {
        if let Some(id) = j.state.get(*s) {
            let _ = host.record_metric(*id, u64::from(status.state == Some(*s)));
        }
    }
    for (s, value) in Signal::ALL.iter().zip(status.evidence) {
        if let Some(id) = j.evidence.get(*s) {
            let _ = host.record_metric(*id, u64::from(value));
        }
    }
    let _ = host.record_metric(j.shadow, u64::from(status.shadow));
}

/// The in-flight gauge of a stream's RED series, up (`1`) or down (`-1`).
pub fn in_flight(host: &impl Host, plugin: &Plugin, red: Option<&RedIds>, delta: i64) {
    if let Some(ids) = red {
        plugin.add(host, ids.in_flight, delta);
    }
}

/// Records one RED sample: the in-flight gauge down, the request counted under
/// its variant and class, its duration.
pub fn record_red(host: &impl Host, plugin: &Plugin, sample: &RedSample) {
    let ids = plugin.red(sample.slot);
    in_flight(host, plugin, ids, -1);
    let Some(ids) = ids else { return };
    // The chosen variant's series, or the trailing `none` series.
    let slot = sample
        .variant
        .unwrap_or(ids.variants.len().saturating_sub(1));
    if let Some(v) = ids.variants.get(slot) {
        count(host, plugin, v.requests.get(sample.class));
        if sample.failed {
            plugin.add(host, v.failures, 1);
        }
        if let (Some(grpc), Some(label)) = (&v.grpc, sample.grpc) {
            count(host, plugin, grpc.get(label));
        }
        if let Some(ms) = sample.duration_ms {
            let _ = host.record_metric(v.duration, ms);
        }
    }
}
