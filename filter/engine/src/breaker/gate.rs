//! Circuit breaking for one request: take a concurrency slot, ask the breaker
//! instance for admission (falling back to another variant, or answering, when it
//! says no); at stream end give the slot back and record the outcome once; on the
//! tick write what an idle worker still holds.

use std::borrow::Cow;

use meshguard_config::breaker::{CompiledBreaker, OpenAction};

use super::machine::{Admission, Outcome, Transition};
use super::shared;
use super::state::Phase;
use crate::decision::{Completion, Event, LocalReply, ReplyReason};
use crate::metrics::RejectKind;
use crate::outcome::is_failure;
use crate::runtime::{Ids, RouteRuntime};
use crate::store::{SharedStore, StoreError};
use crate::time::ceil_seconds;

/// What the stream holds until it ends.
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
    /// Holds a concurrency slot to give back, taken from the entry of this epoch.
    pub slot: Option<u64>,
}

/// The gate's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate<'rt> {
    /// Go on; record the outcome at the end when a ticket is given.
    Pass(Option<Ticket>),
    /// Go on, but to this variant (the chosen one's breaker is open).
    Fallback(usize, Ticket),
    /// Answer locally.
    Rejected(LocalReply<'rt>),
}

/// The breaker instance a request on `route` with `variant` belongs to.
pub fn instance<I: Ids>(
    route: &RouteRuntime<I>,
    b: &CompiledBreaker,
    variant: Option<usize>,
) -> usize {
    if b.per_variant && route.route.canary.is_some() {
        variant.unwrap_or(0)
    } else {
        0
    }
}

fn transitions(events: &mut Vec<Event>, route: usize, instance: usize, ts: Vec<Transition>) {
    events.extend(ts.into_iter().map(|transition| Event::BreakerTransition {
        route,
        instance,
        transition,
    }));
}

/// Admission by instance `inst`; `None` when its state is unavailable (the request
/// is then admitted: a store failure must not take the route down).
fn admit<I: Ids>(
    route: &RouteRuntime<I>,
    index: usize,
    b: &CompiledBreaker,
    inst: usize,
    store: &mut impl SharedStore,
    now: u64,
    events: &mut Vec<Event>,
) -> Option<Admission> {
    let breaker = route.breakers.get(inst)?;
    let result = breaker
        .local
        .borrow_mut()
        .admit(store, &breaker.key, b, now);
    match result {
        Ok((a, ts)) => {
            transitions(events, index, inst, ts);
            Some(a)
        }
        Err(e) => {
            events.push(Event::Warning(format!(
                "meshguard: breaker state unavailable ({e:?}); request admitted"
            )));
            None
        }
    }
}

fn reply(b: &CompiledBreaker, retry_s: u64, reason: ReplyReason) -> LocalReply<'_> {
    let why = match reason {
        ReplyReason::BreakerOpen => "open",
        ReplyReason::BreakerHalfOpen => "half-open",
        _ => "concurrency",
    };
    LocalReply {
        status: b.status,
        headers: vec![
            ("retry-after".into(), retry_s.max(1).to_string()),
            ("x-meshguard-breaker".into(), why.to_string()),
            (
                "content-type".into(),
                "text/plain; charset=utf-8".to_string(),
            ),
        ],
        body: Cow::Borrowed(&b.body),
        reason,
        grpc_status: b.grpc_status,
        grpc: None,
    }
}

/// The gate for a request on route `index` headed for `variant`.
pub fn gate<'rt, I: Ids>(
    route: &'rt RouteRuntime<I>,
    index: usize,
    variant: Option<usize>,
    store: &mut impl SharedStore,
    now: u64,
    events: &mut Vec<Event>,
) -> Gate<'rt> {
    let Some(b) = &route.route.breaker else {
        return Gate::Pass(None);
    };
    let inst = instance(route, b, variant);
    let reject = |kind: RejectKind| Event::BreakerRejected {
        route: index,
        instance: inst,
        kind,
    };
    let mut slot = None;
    if let (Some(max), Some(slots)) = (b.max_concurrent, &route.slots) {
        match shared::acquire(store, slots, max, now) {
            Ok(Some(epoch)) => slot = Some(epoch),
            Ok(None) => {
                events.push(reject(RejectKind::Concurrency));
                return Gate::Rejected(reply(b, 1, ReplyReason::Concurrency));
            }
            Err(e) => events.push(Event::Warning(format!(
                "meshguard: concurrency count unavailable ({e:?}); request admitted"
            ))),
        }
    }
    let ticket = |instance, probe| Ticket {
        route: index,
        instance,
        probe,
        start_ns: now,
        slot,
    };
    let (phase, retry_ns) = match admit(route, index, b, inst, store, now, events) {
        None => return Gate::Pass(Some(ticket(inst, false))),
        Some(Admission::Allow { probe }) => return Gate::Pass(Some(ticket(inst, probe))),
        Some(Admission::Reject { phase, retry_in_ns }) => (phase, retry_in_ns),
    };
    events.push(reject(if phase == Phase::HalfOpen {
        RejectKind::HalfOpen
    } else {
        RejectKind::Open
    }));
    if let OpenAction::Fallback(fallback) = b.when_open {
        if Some(fallback) != variant {
            match admit(route, index, b, fallback, store, now, events) {
                None => return Gate::Fallback(fallback, ticket(fallback, false)),
                Some(Admission::Allow { probe }) => {
                    return Gate::Fallback(fallback, ticket(fallback, probe))
                }
                Some(Admission::Reject { .. }) => {}
            }
        }
    }
    if let (Some(epoch), Some(slots)) = (slot, &route.slots) {
        let _ = shared::release(store, slots, epoch, now);
    }
    let reason = if phase == Phase::Open {
        ReplyReason::BreakerOpen
    } else {
        ReplyReason::BreakerHalfOpen
    };
    Gate::Rejected(reply(b, ceil_seconds(retry_ns), reason))
}

/// At stream end: give the concurrency slot back and record the outcome once.
pub fn settle<I: Ids>(
    route: &RouteRuntime<I>,
    t: &Ticket,
    end: &Completion,
    grpc: Option<u32>,
    store: &mut impl SharedStore,
    events: &mut Vec<Event>,
) {
    if let (Some(epoch), Some(slots)) = (t.slot, &route.slots) {
        if let Err(e) = shared::release(store, slots, epoch, end.now.unwrap_or(t.start_ns)) {
            events.push(Event::Warning(format!(
                "meshguard: concurrency slot not returned ({e:?})"
            )));
        }
    }
    let (Some(b), Some(breaker)) = (&route.route.breaker, route.breakers.get(t.instance)) else {
        return;
    };
    // Without a clock the outcome is still recorded (at the request's start), but
    // cannot be judged slow.
    let now = end.now.unwrap_or(t.start_ns);
    let outcome = Outcome {
        failed: is_failure(&b.failures, end.code, grpc, end.flags),
        slow: end.now.is_some()
            && b.slow
                .is_some_and(|s| now.saturating_sub(t.start_ns) > s.threshold_ns),
    };
    let result = breaker
        .local
        .borrow_mut()
        .record(store, &breaker.key, b, outcome, t.probe, now);
    report(events, t.route, t.instance, result);
}

fn report(
    events: &mut Vec<Event>,
    route: usize,
    instance: usize,
    result: Result<Vec<Transition>, StoreError>,
) {
    match result {
        Ok(ts) => transitions(events, route, instance, ts),
        Err(e) => events.push(Event::Warning(format!(
            "meshguard: breaker outcomes not recorded ({e:?})"
        ))),
    }
}

/// The tick: pushes this VM's concurrency-slot deadline forward while it holds
/// slots, and writes the outcomes an idle worker still holds once they are due
/// (all of them with `all`: the configuration is being retired).
pub fn flush<I: Ids>(
    route: &RouteRuntime<I>,
    index: usize,
    store: &mut impl SharedStore,
    now: u64,
    events: &mut Vec<Event>,
    all: bool,
) {
    if let Some(slots) = route.slots.as_ref().filter(|s| s.refresh_due(now)) {
        if let Err(e) = shared::refresh(store, slots, now) {
            events.push(Event::Warning(format!(
                "meshguard: concurrency slots not refreshed ({e:?})"
            )));
        }
    }
    let Some(b) = &route.route.breaker else {
        return;
    };
    for (inst, breaker) in route.breakers.iter().enumerate() {
        if breaker.local.borrow().pending() == 0 {
            continue;
        }
        let result = breaker
            .local
            .borrow_mut()
            .flush(store, &breaker.key, b, now, all);
        report(events, index, inst, result);
    }
}

#[cfg(test)]
mod tests;
