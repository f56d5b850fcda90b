//! How an engine [`Event`] or RED sample becomes metric writes and log lines:
//! counts (batched or not, as `metrics.counters` says), gauges, histogram
//! values, and the log lines of breaker and canary changes. They are gathered
//! in [`Writes`] and handed to the host in one place ([`Writes::apply`]).

use meshguard_engine::{
    CanaryState, Change, Event, FleetMode, Label, RedSample, Signal, SyncOutcome, VariantStatus,
};

use super::ids::{CanaryIds, GlobalIds, RedIds};
use super::plugin::Plugin;
use crate::host::{Level, Metrics, Process};

/// One metric write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// A counter or gauge delta.
    Count(u32, i64),
    /// A histogram value or a gauge's new value.
    Value(u32, u64),
}

/// Metric writes and log lines gathered from what the engine reported, for
/// the host in one call ([`Writes::apply`]).
#[derive(Debug, Default)]
pub struct Writes {
    metrics: Vec<Write>,
    logs: Vec<(Level, String)>,
}

impl Writes {
    /// Adds 1 to counter `id`, when it exists.
    fn count(&mut self, id: Option<&u32>) {
        if let Some(id) = id {
            self.metrics.push(Write::Count(*id, 1));
        }
    }

    fn value(&mut self, id: u32, value: u64) {
        self.metrics.push(Write::Value(id, value));
    }

    fn log(&mut self, level: Level, message: String) {
        self.logs.push((level, message));
    }

    /// A per-request detail line (the decision log).
    pub fn debug(&mut self, message: String) {
        self.log(Level::Debug, message);
    }

    /// The in-flight gauge of a stream's RED series, up (`1`) or down (`-1`).
    pub fn in_flight(&mut self, red: Option<&RedIds>, delta: i64) {
        if let Some(ids) = red {
            self.metrics.push(Write::Count(ids.in_flight, delta));
        }
    }

    /// Hands every write and log line to the host: counts batched by the host,
    /// or written now with `metrics.counters: immediate`. The only place
    /// recording calls the host.
    pub fn apply(self, host: &(impl Metrics + Process), plugin: &Plugin) {
        let batched = plugin.runtime.tuning.batch_counters;
        for w in self.metrics {
            let _ = match w {
                Write::Count(id, delta) if batched => {
                    host.add(id, delta);
                    Ok(())
                }
                Write::Count(id, delta) => host.increment(id, delta),
                Write::Value(id, value) => host.record(id, value),
            };
        }
        for (level, message) in self.logs {
            host.log(level, &message);
        }
    }
}

/// Counts and logs what the engine reported.
pub fn record_events(host: &(impl Metrics + Process), plugin: &Plugin, events: &[Event]) {
    let mut w = Writes::default();
    w.events(plugin, events);
    w.apply(host, plugin);
}

impl Writes {
    /// Gathers the writes and log lines of `events`.
    pub fn events(&mut self, plugin: &Plugin, events: &[Event]) {
        for e in events {
            match e {
                Event::TableUse {
                    policy,
                    overflow,
                    claimed,
                } => {
                    let ids = plugin.runtime.policies.get(*policy).map(|p| &p.ids);
                    if *overflow {
                        self.count(ids.map(|i| &i.overflow));
                    }
                    if *claimed {
                        self.count(ids.map(|i| &i.keys));
                    }
                }
                Event::StoreConflict { policy } => self.count(
                    plugin
                        .runtime
                        .policies
                        .get(*policy)
                        .map(|p| &p.ids.conflicts),
                ),
                Event::RateLimit {
                    policy,
                    outcome,
                    cost,
                    ..
                } => {
                    let ids = plugin.runtime.policies.get(*policy).map(|p| &p.ids);
                    self.count(ids.and_then(|i| i.outcomes.get(*outcome)));
                    if let Some(id) = ids.and_then(|i| i.cost).filter(|_| *cost > 0) {
                        self.metrics
                            .push(Write::Count(id, i64::try_from(*cost).unwrap_or(i64::MAX)));
                    }
                }
                Event::GlobalCall {
                    policy,
                    duration_ms,
                } => {
                    if let Some(g) = global_ids(plugin, *policy) {
                        self.value(g.rpc, *duration_ms);
                    }
                }
                Event::GlobalLease { policy } => {
                    self.count(global_ids(plugin, *policy).map(|g| &g.leases))
                }
                Event::GlobalCachedRejection { policy } => {
                    self.count(global_ids(plugin, *policy).map(|g| &g.cached))
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
                    self.value(b.ids.state, t.to.gauge());
                    self.count(b.ids.transitions.get(t.to));
                    self.log(
                        Level::Info,
                        format!(
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
                } => self.count(
                    plugin
                        .runtime
                        .routes
                        .get(*route)
                        .and_then(|r| r.breakers.get(*instance))
                        .and_then(|b| b.ids.rejected.get(*kind)),
                ),
                Event::Rollout { route, change } => self.rollout_change(plugin, *route, change),
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
                            self.publish(ids, status);
                        }
                        if let (Some(gauges), Some(mode)) = (&ids.ids.fleet, fleet) {
                            for m in FleetMode::ALL {
                                if let Some(id) = gauges.get(*m) {
                                    self.value(*id, u64::from(m == mode));
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
                        self.count(ids.syncs.get(outcome));
                        self.value(ids.duration, *duration_ms);
                        if error.is_none() {
                            self.value(ids.last, now / 1_000_000_000);
                        }
                    }
                }
                Event::Warning(message) => self.log(Level::Warn, message.clone()),
            }
        }
    }

    fn rollout_change(&mut self, plugin: &Plugin, route: usize, change: &Change) {
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
                self.count(ids.and_then(|j| j.transitions.get(*to)));
                self.log(
                    Level::Info,
                    format!(
                        "meshguard: canary {}: {} -> {} ({reason})",
                        variant_name(plugin, route, *variant),
                        from.label(),
                        to.label()
                    ),
                );
            }
            Change::Shadow { variant, reason } => self.log(
                Level::Info,
                format!(
                    "meshguard: canary {}: shadow verdict, would roll back ({reason})",
                    variant_name(plugin, route, *variant)
                ),
            ),
            Change::Step {
                step,
                weight,
                reason,
            } => self.log(
                Level::Info,
                format!(
                    "meshguard: canary {}: ramp to step {} at {weight} bp ({reason})",
                    variant_name(plugin, route, 1),
                    step + 1
                ),
            ),
        }
    }

    /// Sets a variant's gauges to its status.
    fn publish(&mut self, ids: &CanaryIds, status: &VariantStatus) {
        self.value(ids.weight, u64::from(status.weight));
        let Some(j) = &ids.judged else { return };
        for s in CanaryState::ALL {
            if let Some(id) = j.state.get(*s) {
                self.value(*id, u64::from(status.state == Some(*s)));
            }
        }
        for (s, value) in Signal::ALL.iter().zip(status.evidence) {
            if let Some(id) = j.evidence.get(*s) {
                self.value(*id, u64::from(value));
            }
        }
        self.value(j.shadow, u64::from(status.shadow));
        if let Some(id) = j.method {
            self.value(id, 1);
        }
    }

    /// Gathers one RED sample: the in-flight gauge down, the request counted
    /// under its variant and class, its duration.
    pub fn red(&mut self, plugin: &Plugin, sample: &RedSample) {
        let ids = plugin.runtime.red(sample.slot);
        self.in_flight(ids, -1);
        let Some(ids) = ids else { return };
        // The chosen variant's series, or the trailing `none` series.
        let slot = sample
            .variant
            .unwrap_or(ids.variants.len().saturating_sub(1));
        if let Some(v) = ids.variants.get(slot) {
            self.count(v.requests.get(sample.class));
            if sample.failed {
                self.metrics.push(Write::Count(v.failures, 1));
            }
            if let (Some(grpc), Some(label)) = (&v.grpc, sample.grpc) {
                self.count(grpc.get(label));
            }
            if let Some(ms) = sample.duration_ms {
                self.value(v.duration, ms);
            }
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
