//! The one place each decision is applied: a request's (counts and logs, then
//! the local reply or the request-header edits and the route re-pick they
//! need), a response's header edits, a finished stream's record. Nothing else
//! sends a reply or writes a header.

use meshguard_config::explain::FILTER_STATE_KEY;
use meshguard_engine::{LogRecord, RequestEffects, ResponseEdits};

use super::plugin::Plugin;
use super::record::{record_events, record_red};
use crate::host::{HostError, HttpStream, Level, Metrics, Process};

/// Logs a failed host call (the documented fallback is to go on without it).
pub fn warn_on_err(host: &impl Process, r: Result<(), HostError>) {
    if let Err(e) = r {
        host.log(Level::Warn, &e.to_string());
    }
}

/// A request's decision: counts and logs, then either the local reply or the
/// request-header edits (and the route re-pick they need).
pub fn apply_request(host: &impl HttpStream, plugin: &Plugin, effects: RequestEffects<'_>) {
    record_events(host, plugin, &effects.events);
    if let (Some(decision), Some(explain)) = (&effects.decision, &plugin.runtime.explain) {
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
    if effects.clear_route_cache {
        let mode = plugin.runtime.tuning.route_cache;
        warn_on_err(host, host.repick_route(mode).map(|_| ()));
    }
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
    if let Some(sample) = &record.red {
        record_red(host, plugin, sample);
    }
    record_events(host, plugin, &record.events);
}
