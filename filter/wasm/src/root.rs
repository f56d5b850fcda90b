//! The root context: loads the configuration, owns this VM's random generator
//! and the counts its streams batch, and runs the worker's tick (Envoy runs one
//! VM per worker thread).

use std::rc::Rc;

use meshguard_core::glue::configure::configure;
use meshguard_core::glue::fleet::{on_sync_answer, sync};
use meshguard_core::glue::plugin::Plugin;
use meshguard_core::glue::tick::{on_tick, retire};
use meshguard_core::glue::worker::{Worker, TICK_MS};
use meshguard_core::host::counts::Counts;
use meshguard_core::host::{Level, Process};
use meshguard_engine::Rng;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::host::ProxyHost;
use crate::http::Http;

thread_local! {
    /// This VM's owner id for concurrency slots (0: not drawn yet).
    static VM_OWNER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Root context of one plugin instance.
pub struct Root {
    plugin: Option<Rc<Plugin>>,
    rng: Rc<Rng>,
    worker: Rc<Worker>,
    counts: Rc<Counts>,
}

impl Default for Root {
    fn default() -> Self {
        let counts = Rc::new(Counts::default());
        let host = ProxyHost::new(&counts);
        let seed = host.random_seed().unwrap_or_else(|e| {
            // Still random enough across VMs for splitting; logged so it is seen.
            host.log(Level::Warn, &format!("{e}; seeding from the clock"));
            host.now_ns().unwrap_or(0)
        });
        let rng = Rng::new(seed);
        let worker = Worker::default();
        // One owner id per VM, drawn by its first root context: a reload's new
        // configuration stamps the same concurrency entry as the streams of the
        // one it replaced.
        worker.owner.set(VM_OWNER.with(|o| {
            if o.get() == 0 {
                o.set(rng.next_u64().max(1));
            }
            o.get()
        }));
        Root {
            plugin: None,
            rng: Rc::new(rng),
            worker: Rc::new(worker),
            counts,
        }
    }
}

impl Context for Root {
    /// The fleet service answered this worker's sync (calls from the root
    /// context are answered here).
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if let Some(plugin) = &self.plugin {
            let host = ProxyHost::new(&self.counts);
            on_sync_answer(&host, plugin, token_id, status_code, response_size);
            host.flush_counts();
        }
    }

    /// Envoy is done with this root context (its configuration was replaced):
    /// write what it holds, and let its remaining streams count unbatched.
    fn on_done(&mut self) -> bool {
        let host = ProxyHost::new(&self.counts);
        if let Some(plugin) = &self.plugin {
            retire(&host, plugin);
        }
        host.write_counts_at_once();
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Swap the compiled config whole; on error keep nothing and refuse.
        let host = ProxyHost::new(&self.counts);
        // Counts of the configuration being replaced go to Envoy first.
        host.flush_counts();
        self.plugin = configure(&host, self.worker.clone());
        let tick = if self
            .plugin
            .as_ref()
            .is_some_and(|p| p.runtime.needs_tick() || p.runtime.tuning.batch_counters)
        {
            TICK_MS
        } else {
            0
        };
        if !self.worker.set_tick(&host, tick) && tick > 0 {
            host.log(Level::Warn, "meshguard: no tick: an idle worker's breaker outcomes wait for its next request, and canary analysis does not run");
        }
        self.plugin.is_some()
    }

    fn on_tick(&mut self) {
        let host = ProxyHost::new(&self.counts);
        if let Some(plugin) = &self.plugin {
            on_tick(&host, plugin);
            sync(&host, plugin);
        }
        host.flush_counts();
        host.idle_timer(self.worker.ticking());
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a config (refused), Envoy does not create streams for this plugin;
        // should it anyway, the stream passes through untouched.
        Some(Box::new(Http::new(
            self.plugin.clone(),
            self.rng.clone(),
            self.counts.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
