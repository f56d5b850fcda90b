//! The worker's tick when no request comes: the 1.40 ABI has no per-worker
//! timer, so one stream per worker and configuration lends its scheduler (a
//! handle that posts an event to the stream's worker), and one thread of the
//! module posts to every lent scheduler every 50 ms. A long stream on a quiet
//! worker thus still renews its concurrency slots (reclaimed after 10 s without
//! a stamp) and hands its held counts over.
//!
//! The same thread writes the batched counts every worker adds up in a
//! configuration's metrics, and the histogram values workers hold there
//! (`host.rs`): when some count or value waits, it posts to the
//! configuration's scheduler on Envoy's main thread, which writes them
//! (`on_http_filter_config_scheduled`). A worker's streams thus never write
//! counts or record durations themselves, however they come and go (measured on
//! `metrics-native`: recording the duration on the main thread instead saved
//! about as much of Envoy's CPU per request as not recording it at all, 2.3
//! and 2.2 µs), and both reach
//! Envoy within a tick or two of the last request.
//!
//! A scheduler is registered and removed under one lock, and the thread posts
//! under it too, so none is used after the module deleted it. The thread runs
//! while any stream scheduler is lent or any count waits, and needs the module
//! kept loaded (`do_not_close: true`, which every rendered config sets).

#![allow(unsafe_code)] // Envoy's scheduler handles

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::abi;
use crate::host::Shared;

/// A lent scheduler: Envoy's handle, valid until the module deletes it.
struct Handle(*mut c_void);

// SAFETY: Envoy's scheduler commit may be called from any thread (abi.h), and
// the handle is only used under `LENT`'s lock.
unsafe impl Send for Handle {}

/// A configuration's scheduler on Envoy's main thread.
struct Config {
    shared: Arc<Shared>,
    envoy: abi::ConfigEnvoyPtr,
    handle: Handle,
    /// Counts waited at the last round: post once more, for a count added
    /// while the last flush ran.
    was_dirty: bool,
    /// The configuration judges rollouts with the fleet: its sync runs on
    /// Envoy's main thread, posted every tick (the engine says when one is due).
    fleet: bool,
}

// SAFETY: the handle as above; the configuration pointer is handed back only
// to the main thread's `config_destroy`.
unsafe impl Send for Config {}

static LENT: Mutex<Vec<(u64, Handle)>> = Mutex::new(Vec::new());
static CONFIGS: Mutex<Vec<Config>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);
static RUNNING: Mutex<bool> = Mutex::new(false);

fn lent() -> MutexGuard<'static, Vec<(u64, Handle)>> {
    LENT.lock().unwrap_or_else(|p| p.into_inner())
}

fn configs() -> MutexGuard<'static, Vec<Config>> {
    CONFIGS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The event id of a tick posted to a stream.
pub const TICK_EVENT: u64 = 1;
/// The event id of a flush posted to a configuration.
pub const FLUSH_EVENT: u64 = 2;
/// The event id of the fleet sync's tick posted to a configuration.
pub const FLEET_EVENT: u64 = 3;

/// A scheduler on Envoy's main thread for the configuration being loaded
/// (during `config_new`), not yet registered.
pub struct Scheduler(Handle);

/// Asks Envoy for a scheduler on its main thread for `config`.
pub fn scheduler(config: abi::ConfigEnvoyPtr) -> Option<Scheduler> {
    // SAFETY: Envoy's configuration pointer during `config_new`.
    let handle =
        unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
    (!handle.is_null()).then_some(Scheduler(Handle(handle)))
}

/// Registers the configuration's scheduler: the thread posts a flush to it
/// whenever its counts wait, and with `fleet` the fleet sync's tick.
pub fn register(
    scheduler: Scheduler,
    config: abi::ConfigEnvoyPtr,
    shared: &Arc<Shared>,
    fleet: bool,
) {
    configs().push(Config {
        shared: Arc::clone(shared),
        envoy: config,
        handle: scheduler.0,
        was_dirty: false,
        fleet,
    });
    if fleet {
        wake(Duration::from_millis(meshguard::glue::worker::TICK_MS));
    }
}

/// Takes the configuration's scheduler back and deletes it (during
/// `config_destroy`); Envoy's configuration pointer, for the last flush.
pub fn forget(generation: u64) -> Option<abi::ConfigEnvoyPtr> {
    let mut list = configs();
    let at = list
        .iter()
        .position(|c| c.shared.generation == generation)?;
    let c = list.swap_remove(at);
    // SAFETY: created by `register`, removed under the lock the thread posts
    // under, deleted once.
    unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(c.handle.0) };
    Some(c.envoy)
}

/// A count waits: the thread must run. (Unit tests run without Envoy, whose
/// schedulers the thread posts to: there it is not started.)
pub fn wake(period: Duration) {
    #[cfg(not(test))]
    start(period);
    #[cfg(test)]
    let _ = period;
}

/// Lends the stream's scheduler; its key, or `None` when Envoy gave none.
pub fn lend(filter: abi::FilterEnvoyPtr, period: Duration) -> Option<u64> {
    // SAFETY: a live stream of this hook.
    let handle = unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(filter) };
    if handle.is_null() {
        return None;
    }
    let key = NEXT.fetch_add(1, Ordering::Relaxed);
    lent().push((key, Handle(handle)));
    start(period);
    Some(key)
}

/// Takes the scheduler `key` back and deletes it.
pub fn give_back(key: u64) {
    let mut list = lent();
    if let Some(at) = list.iter().position(|(k, _)| *k == key) {
        let (_, Handle(handle)) = list.swap_remove(at);
        // SAFETY: created by `lend`, removed from the list under the lock the
        // thread posts under, deleted once.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(handle) };
    }
}

fn start(period: Duration) {
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    if *running {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("meshguard-tick".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            // Decided under `RUNNING`: a count added after the check below
            // finds the thread stopped and starts it again (`wake`).
            let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
            let list = lent();
            for (_, Handle(handle)) in list.iter() {
                // SAFETY: a handle lent and not yet deleted (under the lock).
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(
                        *handle, TICK_EVENT,
                    );
                }
            }
            let mut waiting = false;
            for c in configs().iter_mut() {
                if c.fleet {
                    // SAFETY: a handle registered and not yet deleted (under the lock).
                    unsafe {
                        abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                            c.handle.0,
                            FLEET_EVENT,
                        );
                    }
                    waiting = true;
                }
                let dirty = c.shared.metrics.take_dirty();
                if dirty || c.was_dirty {
                    // SAFETY: a handle registered and not yet deleted (under the lock).
                    unsafe {
                        abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                            c.handle.0,
                            FLUSH_EVENT,
                        );
                    }
                }
                c.was_dirty = dirty;
                waiting |= dirty;
            }
            if list.is_empty() && !waiting {
                *running = false;
                return;
            }
        });
    *running = spawned.is_ok();
}
