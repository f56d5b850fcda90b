//! The module's wiring: each hook finds the worker's copy of the
//! configuration and the stream, and hands over to the core's glue, as the
//! Wasm build's contexts do. `abi::exports` calls these under its one
//! `catch_unwind`; nothing here touches a raw pointer.
//!
//! **Threads.** Envoy loads a configuration on its main thread and runs a
//! stream's hooks on the stream's worker. Each worker builds its own copy of a
//! configuration on its first stream, as each Wasm VM does, so the glue and the
//! engine run unchanged (single-threaded `Rc` state); what workers share goes
//! through the process-wide [`store`](crate::store).
//!
//! **Ticks.** The core asks a worker for ticks; one of its live streams lends
//! its scheduler and the tick thread posts to it (`ticker.rs`). Counts go to
//! the configuration's metrics and Envoy's main thread writes them
//! (`host/metrics.rs`). A fleet rollout's sync runs on the main thread, from
//! the configuration's own copy.
//!
//! **Panics.** A hook that panicked is logged at the boundary; a request whose
//! decision panicked is answered 503 (as the Wasm build's trapped request
//! is), any later hook lets the stream go on ([`Filter::panicked`]).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use meshguard_core::glue::configure::configure;
use meshguard_core::glue::fleet::{on_sync_answer, sync};
use meshguard_core::glue::plugin::Plugin;
use meshguard_core::glue::worker::Worker;
use meshguard_core::host::{Level, Process};
use meshguard_engine::Rng;

use crate::abi::envoy::{Answer, Config, Stream};
use crate::abi::FilterConfig;
use crate::host::metrics::Metrics;
use crate::host::{log, CopyHost, LoadHost, MainHost};
use crate::shared::Shared;
use crate::ticker::{self, Lender};

static GENERATION: AtomicU64 = AtomicU64::new(1);
static NEXT_STREAM: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// This worker's configurations, by generation.
    static INSTANCES: RefCell<Vec<Rc<Instance>>> = const { RefCell::new(Vec::new()) };
    /// Envoy's main thread: the copy of each loaded configuration that syncs
    /// with the fleet service (the configuration's own callout, which no
    /// stream's end can cancel), with the configuration it belongs to.
    /// Entries of destroyed configurations are dropped here, on the main
    /// thread.
    static MAIN: RefCell<Vec<(Arc<Shared>, Rc<Plugin>)>> = const { RefCell::new(Vec::new()) };
    /// This worker's owner id for concurrency slots (0: not drawn yet).
    static OWNER: Cell<u64> = const { Cell::new(0) };
}

fn owner(host: &impl Process) -> u64 {
    OWNER.with(|o| {
        if o.get() == 0 {
            let seed = host
                .random_seed()
                .unwrap_or_else(|_| host.now_ns().unwrap_or(1));
            o.set(Rng::new(seed).next_u64().max(1));
        }
        o.get()
    })
}

/// One loaded configuration, as Envoy holds it.
#[derive(Debug)]
pub struct Module {
    shared: Arc<Shared>,
}

impl FilterConfig for Module {
    type Filter = Filter;

    /// Validates and compiles the configuration as the Wasm build's
    /// `on_configure` does (same logs) and defines its metrics; `None` (Envoy
    /// rejects it) on any problem. It is built whole here, so every problem is
    /// reported before a worker sees it and every metric is defined while
    /// Envoy still accepts definitions.
    fn new(envoy: &Config, name: &str, config: &[u8]) -> Option<Module> {
        let name = if name.is_empty() { "meshguard" } else { name };
        let metrics = RefCell::new(Metrics::default());
        let loader = LoadHost {
            envoy,
            metrics: &metrics,
            config,
            name,
        };
        let worker = Rc::new(Worker::default());
        worker.owner.set(owner(&loader));
        let main = configure(&loader, worker)?;
        // With a scheduler on Envoy's main thread the configuration keeps
        // every worker's batched counts and writes them there; without one
        // (Envoy gave none) each stream writes its own.
        let scheduler = envoy.scheduler();
        let metrics = metrics.into_inner();
        let shared = Arc::new(Shared {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            name: name.to_owned(),
            config: config.to_vec(),
            metrics: if scheduler.is_some() {
                metrics.keeping_counts()
            } else {
                metrics
            },
            destroyed: AtomicBool::new(false),
        });
        // The fleet sync runs on this thread, posted by the tick thread
        // through the configuration's scheduler.
        let fleet = main.runtime.syncs_fleet() && scheduler.is_some();
        if fleet {
            MAIN.with(|m| {
                let mut m = m.borrow_mut();
                m.retain(|(s, _)| !s.destroyed.load(Ordering::Acquire));
                m.push((shared.clone(), main));
            });
        } else if main.runtime.syncs_fleet() {
            log(
                Level::Warn,
                "meshguard: Envoy gave no scheduler on its main thread: fleet rollouts cannot sync; each holds its configured split (or judges alone, whileUnreachable: local)",
            );
        }
        if let Some(scheduler) = scheduler {
            ticker::register(scheduler, envoy.clone(), &shared, fleet);
        }
        Some(Module { shared })
    }

    /// A new stream: even a configuration a worker could not build gives a
    /// stream that passes through.
    fn new_filter(this: &Arc<Module>, envoy: Stream) -> Option<Filter> {
        let instance = instance(&this.shared, &envoy);
        let id = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
        instance.lender.enter(id, envoy.clone());
        Some(Filter::new(instance, envoy, id))
    }

    /// The batched counts of every worker, or the fleet sync's tick.
    fn scheduled(&self, envoy: &Config, event: u64) {
        match event {
            ticker::FLUSH_EVENT => self.shared.metrics.flush(envoy),
            ticker::FLEET_EVENT => {
                if let Some(plugin) = self.main_plugin() {
                    let host = MainHost {
                        envoy,
                        shared: &self.shared,
                        answer: None,
                    };
                    sync(&host, &plugin);
                }
            }
            _ => {}
        }
    }

    /// The fleet service answered the configuration's sync (or the callout
    /// failed): read as gRPC (`grpc.rs`) and handed to the glue.
    fn callout_done(&self, envoy: &Config, id: u64, answer: Answer) {
        let (Some(plugin), Ok(token)) = (self.main_plugin(), u32::try_from(id)) else {
            return;
        };
        let (code, message) = read(&answer);
        let host = MainHost {
            envoy,
            shared: &self.shared,
            answer: message,
        };
        on_sync_answer(&host, &plugin, token, code, message.map_or(0, <[u8]>::len));
    }

    /// Envoy destroys the configuration (in its destructor; its streams have
    /// ended): what they counted since the last flush is written now, while
    /// Envoy's configuration still lives; workers drop their copies on their
    /// next stream.
    fn destroy(&self) {
        if let Some(envoy) = ticker::forget(self.shared.generation) {
            self.shared.metrics.flush(&envoy);
        }
        self.shared.destroyed.store(true, Ordering::Release);
    }
}

impl Module {
    /// The main thread's copy of this configuration, when it syncs with the
    /// fleet; copies of destroyed configurations are dropped.
    fn main_plugin(&self) -> Option<Rc<Plugin>> {
        MAIN.with(|m| {
            let mut m = m.borrow_mut();
            m.retain(|(s, _)| !s.destroyed.load(Ordering::Acquire));
            m.iter()
                .find(|(s, _)| s.generation == self.shared.generation)
                .map(|(_, p)| p.clone())
        })
    }
}

/// A callout's answer as gRPC: its status and, when 0, its message.
pub(crate) fn read(answer: &Answer) -> (u32, Option<&[u8]>) {
    let pairs: Vec<(&[u8], &[u8])> = answer
        .headers
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    crate::grpc::answer(answer.ok, &pairs, &answer.body)
}

/// A worker's copy of one configuration.
#[derive(Debug)]
pub(crate) struct Instance {
    shared: Arc<Shared>,
    plugin: Option<Rc<Plugin>>,
    rng: Rc<Rng>,
    lender: Lender,
}

/// This worker's copy of `shared`, built on its first stream.
fn instance(shared: &Arc<Shared>, envoy: &Stream) -> Rc<Instance> {
    INSTANCES.with(|list| {
        let mut list = list.borrow_mut();
        list.retain(|i| !i.shared.destroyed.load(Ordering::Acquire));
        if let Some(i) = list
            .iter()
            .find(|i| i.shared.generation == shared.generation)
        {
            return i.clone();
        }
        let host = CopyHost { envoy, shared };
        let worker = Rc::new(Worker::default());
        worker.owner.set(owner(&host));
        let seed = host
            .random_seed()
            .unwrap_or_else(|_| host.now_ns().unwrap_or(0));
        let i = Rc::new(Instance {
            shared: shared.clone(),
            plugin: configure(&host, worker),
            rng: Rc::new(Rng::new(seed)),
            lender: Lender::default(),
        });
        list.push(i.clone());
        i
    })
}

mod filter;

pub use filter::Filter;

#[cfg(test)]
mod tests;
