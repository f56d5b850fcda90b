//! The filter's metric ids, as the engine's [`Ids`] family: defined once, while
//! the configuration loads, never on the request path.

use meshguard_config::ratelimit::{CompiledCost, CompiledRateLimit};
use meshguard_engine::metrics::{
    breaker_rejected, breaker_state, breaker_transitions, canary_analysis, canary_evidence,
    canary_shadow_verdict, canary_state, canary_transitions, canary_weight, fleet_last_sync,
    fleet_state, fleet_sync_duration, fleet_syncs, grpc_requests_total,
    ratelimit_cached_rejections, ratelimit_cost, ratelimit_leases, ratelimit_overflow,
    ratelimit_requests, ratelimit_rpc_duration, ratelimit_store_conflicts, ratelimit_table_keys,
    request_duration, request_failures_total, requests_in_flight, requests_total, Series,
};
use meshguard_engine::{
    ByLabel, CanaryState, CodeClass, DefineIds, FleetMode, GrpcLabel, Ids, Phase, RateLimitOutcome,
    RejectKind, Signal, SyncOutcome,
};

use crate::host::{Configuration, HostError, MetricKind};

/// The host's metric ids, as the engine's [`Ids`] family.
#[derive(Debug)]
pub struct HostIds;

impl Ids for HostIds {
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
    /// `ratelimit_cost_total`, for a policy with a `cost`.
    pub cost: Option<u32>,
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
    /// `canary_analysis` of the analysis' method, with an analysis.
    pub method: Option<u32>,
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

/// Defines metrics through a [`Configuration`].
pub struct Definer<'h, H: Configuration>(pub &'h H);

impl<H: Configuration> DefineIds<HostIds> for Definer<'_, H> {
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
            cost: match policy.cost {
                CompiledCost::Fixed(1) => None,
                _ => Some(host.define_metric(MetricKind::Counter, &ratelimit_cost(name))?),
            },
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
        method: Option<&str>,
    ) -> Result<RolloutIds, HostError> {
        let host = self.0;
        let gauge = |series: &Series| host.define_metric(MetricKind::Gauge, series);
        let counter = |series: &Series| host.define_metric(MetricKind::Counter, series);
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
                        method: match method {
                            Some(m) => Some(gauge(&canary_analysis(route, v, m))?),
                            None => None,
                        },
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
