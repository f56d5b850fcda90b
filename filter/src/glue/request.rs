//! The request path on the host: each callback reads what the engine needs, asks
//! the engine once, and applies its decision here, in one place per callback.
//! Nothing below these functions sends a reply or writes a header.

use meshguard_engine::{
    parse_grpc_status, rls_reply, Completion, Event, LogRecord, RequestEffects, ResponseEdits,
    ResponseHead, RlsReply, Rng, StreamState,
};
use meshguard_rls_proto::{METHOD, SERVICE};

use meshguard_config::explain::FILTER_STATE_KEY;
use meshguard_config::tuning::RouteCache;

use super::fleet;
use super::metrics::{in_flight, record_events, record_red};
use super::plugin::Plugin;
use super::worker::TICK_MS;
use crate::host::store::HostStore;
use crate::host::view::{CachedRequest, ReadPlan};
use crate::host::{Host, HostError, Level};

fn warn_on_err(host: &impl Host, r: Result<(), HostError>) {
    if let Err(e) = r {
        host.log(Level::Warn, &e.to_string());
    }
}

/// The time now, or `None` (logged) when the host's clock fails.
fn now(host: &impl Host) -> Option<u64> {
    host.now_ns()
        .map_err(|e| host.log(Level::Warn, &format!("meshguard: {e}")))
        .ok()
}

/// A stream as the glue keeps it: the engine's state, and the calls to the rate
/// limit service it waits for (`token`, `reply`, in the order of `state.pending`).
#[derive(Debug, Default)]
pub struct Stream {
    /// What the engine decided so far.
    pub state: StreamState,
    /// Per pending call: its token (none when dispatch failed) and its reply.
    pub calls: Vec<(Option<u32>, Option<RlsReply>)>,
    /// A read of the fleet's first state the request waits for before it is
    /// decided: its token and when it was sent.
    pub fleet_read: Option<(u32, u64)>,
}

impl Stream {
    /// The request must wait: for a reply, or (answered locally) for ever.
    pub fn must_pause(&self) -> bool {
        self.state.rejected
            || self.fleet_read.is_some()
            || self.calls.iter().any(|(_, r)| r.is_none())
    }
}

/// `on_http_request_headers`: decide the request and apply the decision; when
/// global policies must ask the rate limit service, send their calls (the stream
/// then pauses until [`on_grpc_response`] has every answer). Before the fleet's
/// first state is known (a fleet rollout on an Envoy that just started), the
/// request waits for a read of it, then is decided.
pub fn on_request_headers(host: &impl Host, plugin: &Plugin, rng: &Rng) -> Stream {
    wake(host, plugin);
    if plugin.awaits_fleet() {
        if let Some(read) = fleet::start_read(host, plugin) {
            return Stream {
                fleet_read: Some(read),
                ..Stream::default()
            };
        }
    }
    decide(host, plugin, rng)
}

/// Decides the request and applies the decision (see [`on_request_headers`]).
fn decide(host: &impl Host, plugin: &Plugin, rng: &Rng) -> Stream {
    // A clock failure is reported by the engine, with what it skips.
    let now = host.now_ns().ok();
    let tuning = &plugin.tuning;
    let mut view = CachedRequest::planned(
        host,
        ReadPlan {
            all_at_once: tuning.read_all_headers,
            client_address_header: tuning.client_address_header.as_deref(),
        },
    );
    let (state, effects) = plugin.decide(&mut view, &mut HostStore(host), rng, now);
    in_flight(host, plugin, state.red.and_then(|slot| plugin.red(slot)), 1);
    apply_request(host, plugin, effects);
    let mut stream = Stream {
        state,
        ..Stream::default()
    };
    if let Some(service) = &plugin.rate_limit_service {
        for call in &stream.state.pending {
            let sent = host.dispatch_grpc_call(
                &service.cluster,
                SERVICE,
                METHOD,
                &call.message,
                service.timeout_ms,
            );
            stream.calls.push(match sent {
                Ok(token) => (Some(token), None),
                Err(e) => (None, Some(RlsReply::Error(e.to_string()))),
            });
        }
    }
    if !stream.calls.is_empty() && !stream.must_pause() {
        resume(host, plugin, &mut stream); // every dispatch failed: decide now
    }
    stream
}

/// `on_grpc_call_response`: the rate limit service answered call `token` with gRPC
/// `status` (0: OK, then `size` bytes of answer). Once every call is answered, the
/// decision goes on and the request resumes (or is answered). True when it did.
/// The answer to the fleet read a request waits for decides it now.
pub fn on_grpc_response(
    host: &impl Host,
    plugin: &Plugin,
    stream: &mut Stream,
    call: (u32, u32, usize),
    rng: &Rng,
) -> bool {
    let (token, status, size) = call;
    if let Some((t, sent)) = stream.fleet_read {
        if t == token {
            fleet::take_answer(host, plugin, sent, status, size, false);
            *stream = decide(host, plugin, rng);
            if !stream.must_pause() {
                warn_on_err(host, host.resume_request());
                return true;
            }
            return false;
        }
    }
    let Some(call) = stream.calls.iter_mut().find(|(t, _)| *t == Some(token)) else {
        return false;
    };
    call.1 = Some(if status != 0 {
        RlsReply::Error(format!("gRPC status {status}"))
    } else {
        match host.grpc_response(size) {
            Ok(Some(body)) => rls_reply(&body),
            Ok(None) => rls_reply(&[]),
            Err(e) => RlsReply::Error(e.to_string()),
        }
    });
    if stream.calls.iter().any(|(_, r)| r.is_none()) {
        return false;
    }
    resume(host, plugin, stream);
    if !stream.state.rejected {
        warn_on_err(host, host.resume_request());
    }
    true
}

fn resume(host: &impl Host, plugin: &Plugin, stream: &mut Stream) {
    let replies: Vec<RlsReply> = stream
        .calls
        .iter()
        .map(|(_, r)| r.clone().unwrap_or(RlsReply::Error("no answer".into())))
        .collect();
    let now = host.now_ns().ok();
    let effects = plugin.resume(&mut stream.state, &replies, &mut HostStore(host), now);
    apply_request(host, plugin, effects);
    keep_ticking(host, plugin);
}

/// The one place a request decision is applied: counts and logs, then either the
/// local reply or the request-header edits (and the route re-pick they need).
pub fn apply_request(host: &impl Host, plugin: &Plugin, effects: RequestEffects<'_>) {
    record_events(host, plugin, &effects.events);
    if let (Some(decision), Some(explain)) = (&effects.decision, &plugin.explain) {
        if explain.filter_state {
            warn_on_err(
                host,
                host.set_property(FILTER_STATE_KEY, decision.as_bytes()),
            );
        }
        if explain.log {
            host.log(Level::Debug, &format!("meshguard: decision {decision}"));
        }
    }
    if let Some(reply) = effects.reply {
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_str()))
            .collect();
        let sent = match &reply.grpc {
            Some(g) => host.send_grpc_reply(g.status, &g.message, &headers),
            None => host.send_local_reply(reply.status, &headers, reply.body.as_bytes()),
        };
        warn_on_err(host, sent);
        return;
    }
    for (name, value) in effects.headers {
        warn_on_err(host, host.set_request_header(name, value));
    }
    for (name, value) in &effects.service_headers {
        warn_on_err(host, host.set_request_header(name, Some(value.as_bytes())));
    }
    if effects.clear_route_cache && must_clear_route_cache(host, plugin.tuning.route_cache) {
        warn_on_err(host, host.clear_route_cache());
    }
}

/// Whether routing-header edits need an explicit `clear_route_cache`: always with
/// `routeCache: clear`; with `auto`, only when Envoy does not clear the cache
/// itself for this host (see [`Host::clears_route_cache_itself`]).
pub fn must_clear_route_cache(host: &impl Host, mode: RouteCache) -> bool {
    mode == RouteCache::Clear || !host.clears_route_cache_itself()
}

/// `on_http_response_headers`: note the status for stream end and add what the
/// engine says to the response.
pub fn on_response_headers(
    host: &impl Host,
    plugin: &Plugin,
    state: &mut StreamState,
    end_of_stream: bool,
) {
    let reads = plugin.response_reads(state);
    let status = if reads.status {
        host.response_status().ok().flatten()
    } else {
        None
    };
    // gRPC answers are HTTP 200; a trailers-only one carries its status here.
    let grpc_status = if reads.grpc_status && status == Some(200) {
        grpc_status(host.response_header("grpc-status"))
    } else {
        None
    };
    let head = ResponseHead {
        status,
        grpc_status,
        now: if reads.time { host.now_ns().ok() } else { None },
        end_of_stream,
    };
    let edits = plugin.respond(state, head);
    apply_response(host, edits);
}

/// `on_http_response_trailers`: the response is complete; a gRPC answer's status
/// is in its trailers.
pub fn on_response_trailers(host: &impl Host, plugin: &Plugin, state: &mut StreamState) {
    let grpc = if plugin.response_reads(state).grpc_status {
        grpc_status(host.response_trailer("grpc-status"))
    } else {
        None
    };
    plugin.trailers(state, grpc);
}

/// A `grpc-status` read: its code, or `None` when absent, unreadable or not a number.
fn grpc_status(read: Result<Option<Vec<u8>>, HostError>) -> Option<u32> {
    read.ok().flatten().as_deref().and_then(parse_grpc_status)
}

/// The one place response edits are applied.
pub fn apply_response(host: &impl Host, edits: ResponseEdits<'_>) {
    for (name, value) in edits.set {
        warn_on_err(host, host.set_response_header(&name, value.as_bytes()));
    }
    for (name, value) in edits.add {
        warn_on_err(host, host.add_response_header(&name, value.as_bytes()));
    }
}

/// `on_log` of a stream that may still wait for the rate limit service: the calls
/// belong to the root context and outlive the stream, so they are cancelled.
pub fn on_stream_end(host: &impl Host, plugin: &Plugin, stream: &Stream) {
    for (token, reply) in &stream.calls {
        if let (Some(t), None) = (token, reply) {
            let _ = host.cancel_grpc_call(*t);
        }
    }
    if let Some((t, _)) = stream.fleet_read {
        let _ = host.cancel_grpc_call(t);
    }
    on_log(host, plugin, &stream.state);
}

/// `on_log`: the stream is over (answered, reset or abandoned: Envoy calls this
/// once for every stream). Reads what the engine needs to judge it, and records.
pub fn on_log(host: &impl Host, plugin: &Plugin, state: &StreamState) {
    if !state.needs_status() {
        return;
    }
    // `:status` was read as the response passed; the property is the fallback for
    // streams that ended without response headers (resets, abandoned requests).
    let code = state
        .code
        .or_else(|| host.property_u64(&["response", "code"]).ok().flatten())
        .unwrap_or(0);
    let flags = if plugin.needs_flags(state, code) {
        host.property_u64(&["response", "flags"])
            .ok()
            .flatten()
            .unwrap_or(0)
    } else {
        0
    };
    let end = Completion {
        code,
        flags,
        complete: state.response_complete,
        now: now(host),
    };
    let record = plugin.finish(state, end, &mut HostStore(host));
    apply_log(host, plugin, record);
    keep_ticking(host, plugin);
}

/// A stream ended on a worker whose tick had stopped (a long stream: nothing else
/// came by meanwhile): what it left to hand over (counts, a breaker outcome held)
/// needs the tick again. No tick runs now; the next one is 50 ms away.
fn keep_ticking(host: &impl Host, plugin: &Plugin) {
    let worker = &plugin.worker;
    if !worker.ticking() && !worker.refused_tick() && (worker.holds_counts() || plugin.holds_work())
    {
        worker.set_tick(host, TICK_MS);
    }
}

/// The one place a stream's record is applied.
pub fn apply_log(host: &impl Host, plugin: &Plugin, record: LogRecord) {
    if let Some(sample) = &record.red {
        record_red(host, plugin, sample);
    }
    record_events(host, plugin, &record.events);
}

/// The root context's tick: the engine's (breaker outcomes held, rollouts folded
/// and read), then the worker's counts handed to Envoy. After enough ticks with
/// nothing to do, the tick stops until the next request.
pub fn on_tick(host: &impl Host, plugin: &Plugin) {
    let worker = &plugin.worker;
    let busy = worker.holds_counts() || plugin.holds_work();
    if let Some(now) = now(host) {
        let events: Vec<Event> = plugin.tick(&mut HostStore(host), now);
        record_events(host, plugin, &events);
    }
    worker.flush(host);
    if worker.ticking() && worker.idle_tick(busy) {
        worker.set_tick(host, 0);
    }
}

/// A worker's last stream of this configuration ended on a host without a timer
/// of its own (the native build ticks on its streams' hooks): everything held
/// (counts, breaker outcomes, rollout counts) is written now, since no hook may
/// come to write it later.
pub fn flush_idle(host: &impl Host, plugin: &Plugin) {
    if let Some(now) = now(host) {
        let events: Vec<Event> = plugin.flush_held(&mut HostStore(host), now);
        record_events(host, plugin, &events);
    }
    plugin.worker.flush(host);
}

/// The configuration is being replaced (Envoy is done with its root context):
/// no tick of it runs again, so everything it holds is written now, and the
/// counts of its streams that are still to end go to Envoy one by one.
pub fn retire(host: &impl Host, plugin: &Plugin) {
    if let Some(now) = now(host) {
        let events: Vec<Event> = plugin.retire(&mut HostStore(host), now);
        record_events(host, plugin, &events);
    }
    plugin.worker.retire(host);
}

/// A request arrived: when the tick had stopped (an idle worker), start it and
/// tick once now, so the request sees the rollouts' shared state.
fn wake(host: &impl Host, plugin: &Plugin) {
    let worker = &plugin.worker;
    if !worker.ticking()
        && !worker.refused_tick()
        && plugin.needs_tick()
        && worker.set_tick(host, TICK_MS)
    {
        on_tick(host, plugin);
    }
}
