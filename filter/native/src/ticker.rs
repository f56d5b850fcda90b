//! How the native build delivers ticks: the 1.40 ABI has no per-worker timer,
//! so when the core asks a worker for ticks, one of its live streams lends its
//! scheduler (a handle that posts an event to the stream's worker, see
//! [`Lender`]), and one thread of the module posts a tick to every lent
//! scheduler every 50 ms. When the lending stream ends another live stream
//! lends one; when none is left the worker's ticks stop (the core then writes
//! what it holds, `glue::tick::ticks_stopped`), and its next request asks
//! again.
//!
//! The same thread has Envoy's main thread write the counts every worker adds
//! up in a configuration's metrics (`host/metrics.rs`): when some count or
//! value waits, it posts a flush to the configuration's scheduler; and, for a
//! configuration judged by the fleet, the sync's tick.
//!
//! A scheduler is registered and removed under one lock, and the thread posts
//! under it too, so none is used after it was deleted. The thread runs while
//! any stream scheduler is lent or any count waits, and needs the module kept
//! loaded (`do_not_close: true`, which every rendered config sets).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};

use crate::abi::envoy::{Config, Scheduler, Stream};
use crate::shared::Shared;

/// A configuration's scheduler on Envoy's main thread.
struct Registered {
    shared: Arc<Shared>,
    envoy: Config,
    scheduler: Scheduler,
    /// Counts waited at the last round: post once more, for a count added
    /// while the last flush ran.
    was_dirty: bool,
    /// The configuration judges rollouts with the fleet: its sync runs on
    /// Envoy's main thread, posted every tick (the engine says when one is due).
    fleet: bool,
}

static LENT: Mutex<Vec<(u64, Scheduler)>> = Mutex::new(Vec::new());
static CONFIGS: Mutex<Vec<Registered>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);
#[cfg(not(test))]
static RUNNING: Mutex<bool> = Mutex::new(false);

fn lent() -> MutexGuard<'static, Vec<(u64, Scheduler)>> {
    LENT.lock().unwrap_or_else(|p| p.into_inner())
}

fn configs() -> MutexGuard<'static, Vec<Registered>> {
    CONFIGS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The event id of a tick posted to a stream.
pub const TICK_EVENT: u64 = 1;
/// The event id of a flush posted to a configuration.
pub const FLUSH_EVENT: u64 = 2;
/// The event id of the fleet sync's tick posted to a configuration.
pub const FLEET_EVENT: u64 = 3;

#[cfg(not(test))]
fn period() -> std::time::Duration {
    std::time::Duration::from_millis(meshguard_core::glue::worker::TICK_MS)
}

/// Registers a configuration's main-thread scheduler: the thread posts a flush
/// to it whenever its counts wait, and with `fleet` the fleet sync's tick.
pub fn register(scheduler: Scheduler, envoy: Config, shared: &Arc<Shared>, fleet: bool) {
    configs().push(Registered {
        shared: Arc::clone(shared),
        envoy,
        scheduler,
        was_dirty: false,
        fleet,
    });
    if fleet {
        wake();
    }
}

/// Takes the configuration's scheduler back and deletes it (while Envoy
/// destroys the configuration): Envoy's configuration, for the last flush.
pub fn forget(generation: u64) -> Option<Config> {
    let mut list = configs();
    let at = list
        .iter()
        .position(|c| c.shared.generation == generation)?;
    let c = list.swap_remove(at);
    Some(c.envoy)
}

/// A count waits: the thread must run. (Unit tests run without Envoy, whose
/// schedulers the thread posts to: there it is not started.)
pub fn wake() {
    #[cfg(not(test))]
    start();
}

fn lend(scheduler: Scheduler) -> u64 {
    let key = NEXT.fetch_add(1, Ordering::Relaxed);
    lent().push((key, scheduler));
    wake();
    key
}

fn give_back(key: u64) {
    let mut list = lent();
    if let Some(at) = list.iter().position(|(k, _)| *k == key) {
        // Deleted as it is dropped, under the lock the thread posts under.
        drop(list.swap_remove(at));
    }
}

/// One worker's ticks for one configuration: its live streams, and the one
/// whose scheduler is lent while the core wants ticks.
#[derive(Debug, Default)]
pub struct Lender {
    /// Live streams: each one's id (its address) and handle.
    streams: RefCell<Vec<(usize, Stream)>>,
    /// The lent scheduler's key and the stream that lent it.
    lent: Cell<Option<(u64, usize)>>,
    /// The core asked for ticks and has not stopped them.
    wanted: Cell<bool>,
}

impl Lender {
    /// Stream `id` is live.
    pub fn enter(&self, id: usize, envoy: Stream) {
        self.streams.borrow_mut().push((id, envoy));
    }

    /// The core asks for ticks, from stream `id`'s hook: that stream lends its
    /// scheduler unless one is lent already. False when Envoy gave none.
    pub fn start(&self, id: usize, envoy: &Stream) -> bool {
        self.wanted.set(true);
        if self.lent.get().is_some() {
            return true;
        }
        match envoy.scheduler() {
            Some(s) => {
                self.lent.set(Some((lend(s), id)));
                true
            }
            None => false,
        }
    }

    /// The core wants no more ticks.
    pub fn stop(&self) {
        self.wanted.set(false);
        if let Some((key, _)) = self.lent.take() {
            give_back(key);
        }
    }

    /// Stream `id` is over. When it lent the scheduler another live stream
    /// lends one; false when ticks were wanted and no stream can lend (the
    /// worker's ticks stopped).
    pub fn leave(&self, id: usize) -> bool {
        self.streams.borrow_mut().retain(|(s, _)| *s != id);
        let Some((key, by)) = self.lent.get() else {
            return true;
        };
        if by != id {
            return true;
        }
        give_back(key);
        self.lent.set(None);
        let next = self
            .streams
            .borrow()
            .iter()
            .find_map(|(s, e)| e.scheduler().map(|sched| (*s, sched)));
        match next {
            Some((s, sched)) => {
                self.lent.set(Some((lend(sched), s)));
                true
            }
            None => {
                let stopped = self.wanted.replace(false);
                !stopped
            }
        }
    }

    /// Whether a scheduler is lent now.
    pub fn lending(&self) -> bool {
        self.lent.get().is_some()
    }
}

impl Drop for Lender {
    fn drop(&mut self) {
        if let Some((key, _)) = self.lent.take() {
            give_back(key);
        }
    }
}

#[cfg(not(test))]
fn start() {
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    if *running {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("meshguard-tick".into())
        .spawn(move || loop {
            std::thread::sleep(period());
            // Decided under `RUNNING`: a count added after the check below
            // finds the thread stopped and starts it again (`wake`).
            let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
            if !round() {
                *running = false;
                return;
            }
        });
    *running = spawned.is_ok();
}

/// One round of the thread: a tick to every lent scheduler, a flush to every
/// configuration whose counts wait, the fleet's tick. Whether anything is
/// left to post next round.
fn round() -> bool {
    let list = lent();
    for (_, s) in list.iter() {
        s.commit(TICK_EVENT);
    }
    let mut waiting = false;
    for c in configs().iter_mut() {
        if c.fleet {
            c.scheduler.commit(FLEET_EVENT);
            waiting = true;
        }
        let dirty = c.shared.metrics.take_dirty();
        if dirty || c.was_dirty {
            c.scheduler.commit(FLUSH_EVENT);
        }
        c.was_dirty = dirty;
        waiting |= dirty;
    }
    !list.is_empty() || waiting
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::abi::mock::MockStream;

    #[test]
    fn a_lent_scheduler_passes_to_another_live_stream_and_ticks_stop_with_the_last() {
        let a = MockStream::with(&[]);
        let b = MockStream::with(&[]);
        let l = Lender::default();
        l.enter(1, Stream::mock(a.clone()));
        l.enter(2, Stream::mock(b.clone()));
        assert!(l.start(1, &Stream::mock(a.clone())));
        assert!(l.start(2, &Stream::mock(b.clone())), "one is lent already");
        assert_eq!(a.schedulers.borrow().len(), 1);
        assert!(b.schedulers.borrow().is_empty());
        // The lender leaves: the other live stream lends one.
        assert!(l.leave(1));
        assert!(a.schedulers.borrow()[0].deleted.load(Ordering::Acquire));
        assert_eq!(b.schedulers.borrow().len(), 1);
        // The last one leaves while ticks are wanted: they stop.
        assert!(!l.leave(2));
        assert!(b.schedulers.borrow()[0].deleted.load(Ordering::Acquire));
        assert!(!l.lending());
    }

    #[test]
    fn stopping_gives_the_scheduler_back_and_a_stream_without_one_cannot_start() {
        let a = MockStream::with(&[]);
        let l = Lender::default();
        l.enter(1, Stream::mock(a.clone()));
        assert!(l.start(1, &Stream::mock(a.clone())));
        l.stop();
        assert!(a.schedulers.borrow()[0].deleted.load(Ordering::Acquire));
        assert!(l.leave(1), "no ticks were wanted");
        let none = Rc::new(MockStream::default());
        assert!(!Lender::default().start(3, &Stream::mock(none)));
    }

    #[test]
    fn a_round_ticks_every_lent_scheduler() {
        let a = MockStream::with(&[]);
        let l = Lender::default();
        l.enter(7, Stream::mock(a.clone()));
        assert!(l.start(7, &Stream::mock(a.clone())));
        assert!(round());
        let posted = a.schedulers.borrow()[0].posted.lock().unwrap().clone();
        assert_eq!(posted, vec![TICK_EVENT]);
        drop(l);
        assert_eq!(a.schedulers.borrow()[0].late.load(Ordering::Relaxed), 0);
    }
}
