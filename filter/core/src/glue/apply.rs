//! The one place each decision is applied: a request's (what it records, then
//! the local reply or the request-header edits and the route re-pick they
//! need, then its calls to the rate limit service), a response's header edits,
//! a finished stream's record. Nothing else sends a reply or writes a header.

use meshguard_config::explain::FILTER_STATE_KEY;
use meshguard_engine::{LogRecord, RequestEffects, ResponseEdits, RlsReply};
use meshguard_rls_proto::{METHOD, SERVICE};

use super::plugin::Plugin;
use super::record::Writes;
use super::stream::Stream;
use crate::host::{HostError, HttpStream, Level, Metrics, Process};

/// Logs a failed host call (the documented fallback is to go on without it).
pub fn warn_on_err(host: &impl Process, r: Result<(), HostError>) {
    if let Err(e) = r {
        host.log(Level::Warn, &e.to_string());
    }
}

/// A request's decision, on `stream`: what it records (with `writes` gathered
/// before it, and the in-flight gauge up when the request `opened`), then
/// either the local reply or the request-header edits (and the route re-pick
/// they need), then its calls to the rate limit service. When every call
/// failed to go out, the decision goes on at once ([`resume`]).
pub fn apply_request(
    host: &impl HttpStream,
    plugin: &Plugin,
    stream: &mut Stream,
    effects: RequestEffects<'_>,
    mut writes: Writes,
    opened: bool,
) {
    let rt = &plugin.runtime;
    if opened {
        writes.in_flight(stream.state.red.and_then(|slot| rt.red(slot)), 1);
    }
    writes.events(plugin, &effects.events);
    let explained = effects.decision.as_ref().zip(rt.explain.as_ref());
    if let Some((decision, explain)) = explained {
        if explain.log {
            writes.debug(format!("meshguard: decision {decision}"));
        }
    }
    writes.apply(host, plugin);
    if let Some((decision, explain)) = explained {
        if explain.filter_state {
            warn_on_err(
                host,
                host.set_property(FILTER_STATE_KEY, decision.as_bytes()),
            );
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
    if effects.clear_route_cache {
        warn_on_err(host, host.repick_route(rt.tuning.route_cache).map(|_| ()));
    }
    if let (true, Some(service)) = (opened, &rt.rate_limit_service) {
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
        if !stream.calls.is_empty() && !stream.must_pause() {
            resume(host, plugin, stream); // every dispatch failed: decide now
        }
    }
}

/// Every call to the rate limit service answered (or failed to go out): the
/// decision goes on, and is applied.
pub fn resume(host: &impl HttpStream, plugin: &Plugin, stream: &mut Stream) {
    let replies: Vec<RlsReply> = stream
        .calls
        .iter()
        .map(|(_, r)| r.clone().unwrap_or(RlsReply::Error("no answer".into())))
        .collect();
    let now = host.now_ns().ok();
    let effects = plugin
        .runtime
        .resume(&mut stream.state, &replies, &mut host.store(), now);
    apply_request(host, plugin, stream, effects, Writes::default(), false);
}

/// A response's header edits.
pub fn apply_response(host: &impl HttpStream, edits: ResponseEdits<'_>) {
    for (name, value) in edits.set {
        warn_on_err(host, host.set_response_header(&name, value.as_bytes()));
    }
    for (name, value) in edits.add {
        warn_on_err(host, host.add_response_header(&name, value.as_bytes()));
    }
}

/// A finished stream's record: its RED sample and events.
pub fn apply_log(host: &(impl Metrics + Process), plugin: &Plugin, record: LogRecord) {
    let mut writes = Writes::default();
    if let Some(sample) = &record.red {
        writes.red(plugin, sample);
    }
    writes.events(plugin, &record.events);
    writes.apply(host, plugin);
}
