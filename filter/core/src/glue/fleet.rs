//! The fleet sync on the host: the call the engine asks for, sent with the
//! host's gRPC client, and its answer handed back. Which worker syncs and when
//! is the engine's (a slot in shared data); the Wasm build syncs from each
//! worker's tick (the slot picks one), the native build from Envoy's main
//! thread. A request that arrives before the fleet's first state waits for a
//! read of it, as it waits for the rate limit service (`request.rs`).

use meshguard_rls_proto::fleet::{METHOD, SERVICE};

use super::plugin::Plugin;
use super::record::{record_events, Writes};
use crate::host::{Calls, Metrics, Process};

/// Sends the sync when one is due for this worker (the engine claims it in
/// shared data, so one worker of the Envoy syncs per interval).
pub fn sync(host: &(impl Process + Metrics + Calls), plugin: &Plugin) {
    let Some(service) = &plugin.runtime.fleet_service else {
        return;
    };
    let Ok(now) = host.now_ns() else { return };
    let Some(message) = plugin.runtime.fleet_sync(&mut host.store(), now) else {
        return;
    };
    match host.dispatch_grpc_call(
        &service.cluster,
        SERVICE,
        METHOD,
        &message,
        service.timeout_ms,
    ) {
        Ok(token) => plugin.fleet_call.set(Some((token, now))),
        Err(e) => {
            let events =
                plugin
                    .runtime
                    .fleet_answer(&mut host.store(), now, now, Err(e.to_string()), true);
            record_events(host, plugin, &events);
        }
    }
}

/// The answer to a call (`token`, gRPC `status`, `size` bytes): when it is
/// this worker's sync, handed to the engine. True when it was.
pub fn on_sync_answer(
    host: &(impl Process + Metrics + Calls),
    plugin: &Plugin,
    token: u32,
    status: u32,
    size: usize,
) -> bool {
    let Some((t, sent)) = plugin.fleet_call.get() else {
        return false;
    };
    if t != token {
        return false;
    }
    plugin.fleet_call.set(None);
    take_answer(host, plugin, sent, status, size, true).apply(host, plugin);
    true
}

/// Starts a read of the fleet's state for a request that must wait for it:
/// its token and when it was sent, or (the request goes on now) what the
/// failure records, when the call could not be sent.
pub fn start_read(
    host: &(impl Process + Metrics + Calls),
    plugin: &Plugin,
) -> Result<(u32, u64), Writes> {
    let mut writes = Writes::default();
    let (Some(service), Ok(now)) = (plugin.runtime.fleet_service.as_ref(), host.now_ns()) else {
        return Err(writes);
    };
    let message = plugin.runtime.fleet_read();
    match host.dispatch_grpc_call(
        &service.cluster,
        SERVICE,
        METHOD,
        &message,
        service.timeout_ms,
    ) {
        Ok(token) => Ok((token, now)),
        Err(e) => {
            let events =
                plugin
                    .runtime
                    .fleet_answer(&mut host.store(), now, now, Err(e.to_string()), false);
            writes.events(plugin, &events);
            Err(writes)
        }
    }
}

/// Hands an answer (or its failure) to the engine: what it records, for the
/// caller to apply.
pub fn take_answer(
    host: &(impl Process + Metrics + Calls),
    plugin: &Plugin,
    sent: u64,
    status: u32,
    size: usize,
    sync: bool,
) -> Writes {
    let answer = if status != 0 {
        Err(format!("gRPC status {status}"))
    } else {
        match host.grpc_response(size) {
            Ok(body) => Ok(body.unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        }
    };
    let now = host.now_ns().unwrap_or(sent);
    let events = plugin.runtime.fleet_answer(
        &mut host.store(),
        now,
        sent,
        answer.as_deref().map_err(Clone::clone),
        sync,
    );
    let mut writes = Writes::default();
    writes.events(plugin, &events);
    writes
}
