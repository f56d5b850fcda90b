//! The request path: each stream hook reads what the engine needs, asks the
//! engine once, and has its decision applied in one place (`apply.rs`). A
//! request is decided in `decide.rs`; the hosts deliver a tick before it when
//! the worker's tick had stopped (`tick::wake`).

use meshguard_engine::{
    parse_grpc_status, rls_reply, Completion, ResponseHead, RlsReply, Rng, StreamState,
};

use super::apply::{apply_log, apply_response, resume, warn_on_err};
use super::decide::decide;
use super::fleet;
use super::plugin::Plugin;
use super::record::Writes;
use super::tick::{keep_ticking, now};
use crate::host::{HostError, HttpStream};

pub use super::stream::Stream;

/// `on_http_request_headers`: decide the request and apply the decision; when
/// global policies must ask the rate limit service, send their calls (the stream
/// then pauses until [`on_grpc_response`] has every answer). Before the fleet's
/// first state is known (a fleet rollout on an Envoy that just started), the
/// request waits for a read of it, then is decided.
pub fn on_request_headers(host: &impl HttpStream, plugin: &Plugin, rng: &Rng) -> Stream {
    let earlier = if plugin.runtime.awaits_fleet() {
        match fleet::start_read(host, plugin) {
            Ok(read) => {
                return Stream {
                    fleet_read: Some(read),
                    ..Stream::default()
                }
            }
            Err(failed) => failed,
        }
    } else {
        Writes::default()
    };
    decide(host, plugin, rng, earlier)
}

/// `on_grpc_call_response`: the rate limit service answered call `token` with gRPC
/// `status` (0: OK, then `size` bytes of answer). Once every call is answered, the
/// decision goes on and the request resumes (or is answered). True when it did.
/// The answer to the fleet read a request waits for decides it now.
pub fn on_grpc_response(
    host: &impl HttpStream,
    plugin: &Plugin,
    stream: &mut Stream,
    call: (u32, u32, usize),
    rng: &Rng,
) -> bool {
    let (token, status, size) = call;
    if let Some((t, sent)) = stream.fleet_read {
        if t == token {
            let read = fleet::take_answer(host, plugin, sent, status, size, false);
            *stream = decide(host, plugin, rng, read);
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

/// `on_http_response_headers`: note the status for stream end and add what the
/// engine says to the response.
pub fn on_response_headers(
    host: &impl HttpStream,
    plugin: &Plugin,
    state: &mut StreamState,
    end_of_stream: bool,
) {
    let reads = plugin.runtime.response_reads(state);
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
    let edits = plugin.runtime.respond(state, head);
    apply_response(host, edits);
}

/// `on_http_response_trailers`: the response is complete; a gRPC answer's status
/// is in its trailers.
pub fn on_response_trailers(host: &impl HttpStream, plugin: &Plugin, state: &mut StreamState) {
    let grpc = if plugin.runtime.response_reads(state).grpc_status {
        grpc_status(host.response_trailer("grpc-status"))
    } else {
        None
    };
    plugin.runtime.trailers(state, grpc);
}

/// A `grpc-status` read: its code, or `None` when absent, unreadable or not a number.
fn grpc_status(read: Result<Option<Vec<u8>>, HostError>) -> Option<u32> {
    read.ok().flatten().as_deref().and_then(parse_grpc_status)
}

/// `on_log` of a stream that may still wait for the rate limit service: the calls
/// belong to the root context and outlive the stream, so they are cancelled.
pub fn on_stream_end(host: &impl HttpStream, plugin: &Plugin, stream: &Stream) {
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
pub fn on_log(host: &impl HttpStream, plugin: &Plugin, state: &StreamState) {
    if !state.needs_status() {
        return;
    }
    // `:status` was read as the response passed; the property is the fallback for
    // streams that ended without response headers (resets, abandoned requests).
    let code = state
        .code
        .or_else(|| host.property_u64(&["response", "code"]).ok().flatten())
        .unwrap_or(0);
    let flags = if plugin.runtime.needs_flags(state, code) {
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
    let record = plugin.runtime.finish(state, end, &mut host.store());
    apply_log(host, plugin, record);
    keep_ticking(host, plugin);
}
