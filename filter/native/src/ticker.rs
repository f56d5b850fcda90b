//! The worker's tick when no request comes: the 1.40 ABI has no per-worker
//! timer, so one stream per worker and configuration lends its scheduler (a
//! handle that posts an event to the stream's worker), and one thread of the
//! module posts to every lent scheduler every 50 ms. A long stream on a quiet
//! worker thus still renews its concurrency slots (reclaimed after 10 s without
//! a stamp) and hands its held counts over.
//!
//! A scheduler is registered and removed under one lock, and the thread posts
//! under it too, so none is used after the module deleted it. The thread runs
//! while any scheduler is lent, and needs the module kept loaded
//! (`do_not_close: true`, which every rendered config sets).

#![allow(unsafe_code)] // Envoy's scheduler handles

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::abi;

/// A lent scheduler: Envoy's handle, valid until the module deletes it.
struct Handle(*mut c_void);

// SAFETY: Envoy's scheduler commit may be called from any thread (abi.h), and
// the handle is only used under `LENT`'s lock.
unsafe impl Send for Handle {}

static LENT: Mutex<Vec<(u64, Handle)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);
static RUNNING: Mutex<bool> = Mutex::new(false);

fn lent() -> MutexGuard<'static, Vec<(u64, Handle)>> {
    LENT.lock().unwrap_or_else(|p| p.into_inner())
}

/// The event id of a tick (the only event posted).
pub const TICK_EVENT: u64 = 1;

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
            let list = lent();
            if list.is_empty() {
                let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
                *running = false;
                return;
            }
            for (_, Handle(handle)) in list.iter() {
                // SAFETY: a handle lent and not yet deleted (under the lock).
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(
                        *handle, TICK_EVENT,
                    );
                }
            }
        });
    *running = spawned.is_ok();
}
