//! The worker's tick: the core asks for ticks ([`Timer::set_tick_period`]) and
//! each host delivers them its own way, calling [`on_tick`] for each: a
//! Proxy-Wasm root context's timer; a scheduler that a dynamic module's live
//! stream lends. A request on a worker whose tick had stopped starts it and
//! ticks once first ([`wake`]), so the request sees the rollouts' shared state;
//! a stream that leaves work behind starts it ([`keep_ticking`]).

use meshguard_engine::Event;

use super::plugin::Plugin;
use super::record::record_events;
use super::worker::TICK_MS;
use crate::host::{Level, Metrics, Process, Timer};

/// The time now, or `None` (logged) when the host's clock fails.
pub fn now(host: &impl Process) -> Option<u64> {
    host.now_ns()
        .map_err(|e| host.log(Level::Warn, &format!("meshguard: {e}")))
        .ok()
}

/// The tick's work: the engine's (breaker outcomes held, rollouts folded and
/// read), recorded. Also run when a configuration loads, so rollouts route by
/// their shared state from the first request.
pub fn run(host: &(impl Process + Metrics), plugin: &Plugin) {
    if let Some(now) = now(host) {
        let events: Vec<Event> = plugin.runtime.tick(&mut host.store(), now);
        record_events(host, plugin, &events);
    }
}

/// A tick the host delivered: the tick's work; after [`super::worker::IDLE_TICKS`]
/// ticks with nothing to do (no held work, no counts the host holds), the tick
/// stops until the next request.
pub fn on_tick(host: &impl Timer, plugin: &Plugin) {
    let worker = &plugin.worker;
    let busy = host.holds_counts() || plugin.runtime.holds_work();
    run(host, plugin);
    if worker.ticking() && worker.idle_tick(busy) {
        worker.set_tick(host, 0);
    }
}

/// A request arrived: when the tick had stopped (an idle worker) and the
/// configuration needs it, start it and tick once now, so the request sees
/// the rollouts' shared state.
pub fn wake(host: &impl Timer, plugin: &Plugin) {
    let worker = &plugin.worker;
    if !worker.ticking()
        && !worker.refused_tick()
        && plugin.runtime.needs_tick()
        && worker.set_tick(host, TICK_MS)
    {
        on_tick(host, plugin);
    }
}

/// A stream left something to hand over (counts the host holds, a breaker
/// outcome held) on a worker whose tick had stopped: the tick starts again;
/// its first tick is 50 ms away.
pub fn keep_ticking(host: &impl Timer, plugin: &Plugin) {
    let worker = &plugin.worker;
    if !worker.ticking()
        && !worker.refused_tick()
        && (host.holds_counts() || plugin.runtime.holds_work())
    {
        worker.set_tick(host, TICK_MS);
    }
}

/// The host can deliver no more ticks for now (a dynamic module's worker whose
/// last stream of this configuration ended: no stream lends a scheduler):
/// everything held (breaker outcomes, rollout counts) is written now, since no
/// tick may come to write it, and the next request asks for ticks again.
pub fn ticks_stopped(host: &(impl Process + Metrics), plugin: &Plugin) {
    if let Some(now) = now(host) {
        let events: Vec<Event> = plugin.runtime.flush_held(&mut host.store(), now);
        record_events(host, plugin, &events);
    }
    plugin.worker.ticks_stopped();
}

/// The configuration is being replaced (Envoy is done with its root context):
/// no tick of it runs again, so everything it holds is written now.
pub fn retire(host: &(impl Process + Metrics), plugin: &Plugin) {
    if let Some(now) = now(host) {
        let events: Vec<Event> = plugin.runtime.retire(&mut host.store(), now);
        record_events(host, plugin, &events);
    }
    plugin.worker.retire();
}
