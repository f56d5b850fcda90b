//! How an engine [`Event`] or RED sample becomes metric writes and log lines:
//! counts (batched or not, as `metrics.counters` says), gauges, histogram
//! values, and the log lines of breaker and canary changes.

use meshguard_engine::{
    CanaryState, Change, Event, FleetMode, Label, RedSample, Signal, SyncOutcome, VariantStatus,
};

use super::ids::{CanaryIds, GlobalIds, RedIds};
use super::plugin::Plugin;
use crate::host::{Level, Metrics, Process};

/// Adds `delta` to counter or gauge `id`: batched by the host, or now with
/// `metrics.counters: immediate`.
pub fn add(host: &impl Metrics, plugin: &Plugin, id: u32, delta: i64) {
    if plugin.runtime.tuning.batch_counters {
        host.add(id, delta);
    } else {
        let _ = host.increment(id, delta);
    }
}

fn count(host: &impl Metrics, plugin: &Plugin, id: Option<&u32>) {
    if let Some(id) = id {
        add(host, plugin, *id, 1);
    }
}

/// Counts and logs what the engine reported.
pub fn record_events(host: &(impl Metrics + Process), plugin: &Plugin, events: &[Event]) {
    for e in events {
        match e {
            Event::TableUse {
                policy,
                overflow,
                claimed,
            } => {
                let ids = plugin.runtime.policies.get(*policy).map(|p| &p.ids);
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
                plugin
                    .runtime
                    .policies
                    .get(*policy)
                    .map(|p| &p.ids.conflicts),
            ),
            Event::RateLimit {
                policy, outcome, ..
            } => count(
                host,
                plugin,
                plugin
                    .runtime
                    .policies
                    .get(*policy)
                    .and_then(|p| p.ids.outcomes.get(*outcome)),
            ),
            Event::GlobalCall {
                policy,
                duration_ms,
            } => {
                if let Some(g) = global_ids(plugin, *policy) {
                    let _ = host.record(g.rpc, *duration_ms);
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
                    .runtime
                    .routes
                    .get(*route)
                    .and_then(|r| r.breakers.get(*instance))
                else {
                    continue;
                };
                let _ = host.record(b.ids.state, t.to.gauge());
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
                    .runtime
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
                if let Some(ids) = plugin
                    .runtime
                    .routes
                    .get(*route)
                    .and_then(|r| r.rollout.as_ref())
                {
                    for (ids, status) in ids.ids.variants.iter().zip(variants) {
                        publish(host, ids, status);
                    }
                    if let (Some(gauges), Some(mode)) = (&ids.ids.fleet, fleet) {
                        for m in FleetMode::ALL {
                            if let Some(id) = gauges.get(*m) {
                                let _ = host.record(*id, u64::from(m == mode));
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
                if let Some(ids) = &plugin.runtime.fleet_ids {
                    let outcome = if error.is_some() {
                        SyncOutcome::Error
                    } else {
                        SyncOutcome::Ok
                    };
                    count(host, plugin, ids.syncs.get(outcome));
                    let _ = host.record(ids.duration, *duration_ms);
                    if error.is_none() {
                        let _ = host.record(ids.last, now / 1_000_000_000);
                    }
                }
            }
            Event::Warning(message) => host.log(Level::Warn, message),
        }
    }
}

fn global_ids(plugin: &Plugin, policy: usize) -> Option<&GlobalIds> {
    plugin.runtime.policies.get(policy)?.ids.global.as_ref()
}

/// `route/variant` of a canary variant, for logs.
fn variant_name(plugin: &Plugin, route: usize, variant: usize) -> String {
    let r = plugin.runtime.routes.get(route);
    let v = r
        .and_then(|r| r.route.canary.as_ref())
        .and_then(|c| c.variants.get(variant));
    format!(
        "{}/{}",
        r.map_or("?", |r| r.route.name.as_str()),
        v.map_or("?", |v| v.name.as_str())
    )
}

fn rollout_change(host: &(impl Metrics + Process), plugin: &Plugin, route: usize, change: &Change) {
    match change {
        Change::State {
            variant,
            from,
            to,
            reason,
        } => {
            let ids = plugin
                .runtime
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
fn publish(host: &(impl Metrics + Process), ids: &CanaryIds, status: &VariantStatus) {
    let _ = host.record(ids.weight, u64::from(status.weight));
    let Some(j) = &ids.judged else { return };
    for s in CanaryState::ALL {
        if let Some(id) = j.state.get(*s) {
            let _ = host.record(*id, u64::from(status.state == Some(*s)));
        }
    }
    for (s, value) in Signal::ALL.iter().zip(status.evidence) {
        if let Some(id) = j.evidence.get(*s) {
            let _ = host.record(*id, u64::from(value));
        }
    }
    let _ = host.record(j.shadow, u64::from(status.shadow));
}

/// The in-flight gauge of a stream's RED series, up (`1`) or down (`-1`).
pub fn in_flight(
    host: &(impl Metrics + Process),
    plugin: &Plugin,
    red: Option<&RedIds>,
    delta: i64,
) {
    if let Some(ids) = red {
        add(host, plugin, ids.in_flight, delta);
    }
}

/// Records one RED sample: the in-flight gauge down, the request counted under
/// its variant and class, its duration.
pub fn record_red(host: &(impl Metrics + Process), plugin: &Plugin, sample: &RedSample) {
    let ids = plugin.runtime.red(sample.slot);
    in_flight(host, plugin, ids, -1);
    let Some(ids) = ids else { return };
    // The chosen variant's series, or the trailing `none` series.
    let slot = sample
        .variant
        .unwrap_or(ids.variants.len().saturating_sub(1));
    if let Some(v) = ids.variants.get(slot) {
        count(host, plugin, v.requests.get(sample.class));
        if sample.failed {
            add(host, plugin, v.failures, 1);
        }
        if let (Some(grpc), Some(label)) = (&v.grpc, sample.grpc) {
            count(host, plugin, grpc.get(label));
        }
        if let Some(ms) = sample.duration_ms {
            let _ = host.record(v.duration, ms);
        }
    }
}
