//! Circuit breaking on the request path: take a concurrency slot, ask the shared
//! breaker for admission (falling back to another variant, or answering, when it
//! says no), and at stream end (`on_log`) record the outcome once.

use meshguard_config::breaker::{CompiledBreaker, OpenAction};
use meshguard_config::compiled::CompiledRoute;
use meshguard_engine::breaker::machine::{Admission, Outcome, Transition};
use meshguard_engine::breaker::shared;
use meshguard_engine::breaker::state::Phase;
use meshguard_engine::ratelimit::headers::ceil_seconds;
use meshguard_engine::store::StoreError;

use super::plugin::Plugin;
use super::ratelimit::HostStore;
use crate::host::{Host, Level};

/// Envoy response flags that mean the upstream failed us: no healthy upstream,
/// request timeout, remote reset, connection failure / termination, overflow,
/// max stream duration, protocol error.
pub const FAILURE_FLAGS: u64 = 0x2 | 0x4 | 0x10 | 0x20 | 0x40 | 0x80 | 0x8_0000 | 0x80_0000;

/// What the stream holds until `on_log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Route index.
    pub route: usize,
    /// Breaker instance (variant index, or 0 for one breaker per route).
    pub instance: usize,
    /// A half-open probe.
    pub probe: bool,
    /// When the request started, ns.
    pub start_ns: u64,
    /// Holds a concurrency slot to give back.
    pub slot: bool,
}

/// The gate's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Go on; record the outcome at the end when a ticket is given.
    Pass(Option<Ticket>),
    /// Go on, but to this variant (the chosen one's breaker is open).
    Fallback(usize, Ticket),
    /// Answered locally.
    Rejected,
}

/// The breaker instance a request on `route` with `variant` belongs to.
pub fn instance(route: &CompiledRoute, b: &CompiledBreaker, variant: Option<usize>) -> usize {
    if b.per_variant && route.canary.is_some() {
        variant.unwrap_or(0)
    } else {
        0
    }
}

fn on_transition(host: &impl Host, plugin: &Plugin, route: usize, inst: usize, t: &Transition) {
    if let Some(ids) = plugin.metrics.breaker(route, inst) {
        let _ = host.record_metric(ids.state, t.to.gauge());
        if let Some(id) = ids.transitions.get(t.to as usize) {
            let _ = host.increment_metric(*id, 1);
        }
    }
    let name = plugin.breaker_name(route, inst);
    host.log(
        Level::Info,
        &format!(
            "meshguard: breaker {name}: {} -> {} ({})",
            t.from.name(),
            t.to.name(),
            t.reason
        ),
    );
}

fn count_rejection(host: &impl Host, plugin: &Plugin, route: usize, inst: usize, why: usize) {
    if let Some(ids) = plugin.metrics.breaker(route, inst) {
        if let Some(id) = ids.rejected.get(why) {
            let _ = host.increment_metric(*id, 1);
        }
    }
}

fn admit(
    host: &impl Host,
    plugin: &Plugin,
    route: usize,
    inst: usize,
    now: u64,
) -> Option<Admission> {
    let b = plugin.config.routes.get(route)?.breaker.as_ref()?;
    let key = plugin.breaker_key(route, inst)?;
    let local = plugin.breaker_local(route, inst)?;
    let result = local.borrow_mut().admit(&mut HostStore(host), key, b, now);
    match result {
        Ok((a, transitions)) => {
            for t in &transitions {
                on_transition(host, plugin, route, inst, t);
            }
            Some(a)
        }
        Err(e) => {
            // Fail open: a store failure must not take the route down.
            host.log(
                Level::Warn,
                &format!("meshguard: breaker state unavailable ({e:?}); request admitted"),
            );
            None
        }
    }
}

fn reply(host: &impl Host, b: &CompiledBreaker, retry_s: u64, why: &str) {
    let retry = retry_s.max(1).to_string();
    let headers = [
        ("retry-after", retry.as_str()),
        ("x-meshguard-breaker", why),
        ("content-type", "text/plain; charset=utf-8"),
    ];
    if let Err(e) = host.send_local_reply(b.status, &headers, b.body.as_bytes()) {
        host.log(Level::Warn, &e.to_string());
    }
}

/// The breaker gate for a request on `route` headed for `variant`.
pub fn gate(
    host: &impl Host,
    plugin: &Plugin,
    route_index: usize,
    variant: Option<usize>,
    now: u64,
) -> Gate {
    let Some(route) = plugin.config.routes.get(route_index) else {
        return Gate::Pass(None);
    };
    let Some(b) = &route.breaker else {
        return Gate::Pass(None);
    };
    let inst = instance(route, b, variant);
    let mut slot = false;
    if let (Some(max), Some(key)) = (b.max_concurrent, plugin.slot_key(route_index)) {
        match shared::acquire(&mut HostStore(host), key, max) {
            Ok(true) => slot = true,
            Ok(false) => {
                count_rejection(host, plugin, route_index, inst, 2);
                reply(host, b, 1, "concurrency");
                return Gate::Rejected;
            }
            Err(e) => host.log(
                Level::Warn,
                &format!("meshguard: concurrency count unavailable ({e:?}); request admitted"),
            ),
        }
    }
    let ticket = |inst, probe| Ticket {
        route: route_index,
        instance: inst,
        probe,
        start_ns: now,
        slot,
    };
    let (phase, retry_ns) = match admit(host, plugin, route_index, inst, now) {
        None => return Gate::Pass(Some(ticket(inst, false))),
        Some(Admission::Allow { probe }) => return Gate::Pass(Some(ticket(inst, probe))),
        Some(Admission::Reject { phase, retry_in_ns }) => (phase, retry_in_ns),
    };
    count_rejection(
        host,
        plugin,
        route_index,
        inst,
        usize::from(phase == Phase::HalfOpen),
    );
    if let OpenAction::Fallback(fallback) = b.when_open {
        if Some(fallback) != variant {
            match admit(host, plugin, route_index, fallback, now) {
                None => return Gate::Fallback(fallback, ticket(fallback, false)),
                Some(Admission::Allow { probe }) => {
                    return Gate::Fallback(fallback, ticket(fallback, probe))
                }
                Some(Admission::Reject { .. }) => {}
            }
        }
    }
    if slot {
        if let Some(key) = plugin.slot_key(route_index) {
            let _ = shared::release(&mut HostStore(host), key);
        }
    }
    reply(
        host,
        b,
        ceil_seconds(retry_ns),
        if phase == Phase::Open {
            "open"
        } else {
            "half-open"
        },
    );
    Gate::Rejected
}

/// `on_log`: give the concurrency slot back and record the outcome once, given the
/// final status (0: none sent), whether the response reached its end, and the time now.
pub fn on_log(host: &impl Host, plugin: &Plugin, t: &Ticket, code: u64, complete: bool, now: u64) {
    if t.slot {
        if let Some(key) = plugin.slot_key(t.route) {
            if let Err(e) = shared::release(&mut HostStore(host), key) {
                host.log(
                    Level::Warn,
                    &format!("meshguard: concurrency slot not returned ({e:?})"),
                );
            }
        }
    }
    let Some(b) = plugin
        .config
        .routes
        .get(t.route)
        .and_then(|r| r.breaker.as_ref())
    else {
        return;
    };
    let (Some(key), Some(local)) = (
        plugin.breaker_key(t.route, t.instance),
        plugin.breaker_local(t.route, t.instance),
    ) else {
        return;
    };
    // Envoy's failure flags come with a local 4xx/5xx reply or with a response cut
    // short; a response that completed with a status below 400 cannot carry them,
    // so that (common) case skips the property read.
    let flags = if complete && (100..400).contains(&code) {
        0
    } else {
        host.property_u64(&["response", "flags"])
            .ok()
            .flatten()
            .unwrap_or(0)
    };
    let outcome = Outcome {
        failed: (code != 0 && b.is_failure_status(code as u16)) || flags & FAILURE_FLAGS != 0,
        slow: b
            .slow
            .is_some_and(|(ns, _)| now.saturating_sub(t.start_ns) > ns),
    };
    let result = local
        .borrow_mut()
        .record(&mut HostStore(host), key, b, outcome, t.probe, now);
    report(host, plugin, t.route, t.instance, result);
}

fn report(
    host: &impl Host,
    plugin: &Plugin,
    route: usize,
    inst: usize,
    result: Result<Vec<Transition>, StoreError>,
) {
    match result {
        Ok(transitions) => {
            for t in &transitions {
                on_transition(host, plugin, route, inst, t);
            }
        }
        Err(e) => host.log(
            Level::Warn,
            &format!("meshguard: breaker outcomes not recorded ({e:?})"),
        ),
    }
}

/// The root context's tick: writes the outcomes an idle worker still holds once
/// they are due.
pub fn on_tick(host: &impl Host, plugin: &Plugin, now: u64) {
    for (route, r) in plugin.config.routes.iter().enumerate() {
        let Some(b) = &r.breaker else { continue };
        for inst in 0.. {
            let (Some(key), Some(local)) = (
                plugin.breaker_key(route, inst),
                plugin.breaker_local(route, inst),
            ) else {
                break;
            };
            if local.borrow().pending() == 0 {
                continue;
            }
            let result = local
                .borrow_mut()
                .flush_due(&mut HostStore(host), key, b, now);
            report(host, plugin, route, inst, result);
        }
    }
}

#[cfg(test)]
mod tests;
