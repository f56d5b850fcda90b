//! The root context: owns the compiled config and the random generator of this VM
//! (Envoy runs one VM per worker thread).

use std::rc::Rc;

use meshguard_engine::Rng;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::configure::configure;
use super::fleet::{on_sync_answer, sync};
use super::http::Http;
use super::plugin::Plugin;
use super::request::{on_tick, retire};
use super::worker::Worker;
use crate::host::proxy::ProxyHost;
use crate::host::{Host, Level};

pub use super::worker::TICK_MS;

thread_local! {
    /// This VM's owner id for concurrency slots (0: not drawn yet).
    static VM_OWNER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Root context of one plugin instance.
pub struct Root {
    plugin: Option<Rc<Plugin>>,
    rng: Rc<Rng>,
    worker: Rc<Worker>,
}

impl Default for Root {
    fn default() -> Self {
        let host = ProxyHost;
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
        }
    }
}

impl Context for Root {
    /// The fleet service answered this worker's sync (calls from the root
    /// context are answered here).
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if let Some(plugin) = &self.plugin {
            on_sync_answer(&ProxyHost, plugin, token_id, status_code, response_size);
        }
    }

    /// Envoy is done with this root context (its configuration was replaced):
    /// write what it holds, and let its remaining streams count unbatched.
    fn on_done(&mut self) -> bool {
        if let Some(plugin) = &self.plugin {
            retire(&ProxyHost, plugin);
        }
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Swap the compiled config whole; on error keep nothing and refuse.
        let host = ProxyHost;
        // Counts of the configuration being replaced go to Envoy first.
        self.worker.flush(&host);
        self.plugin = configure(&host, self.worker.clone());
        let tick = if self.plugin.as_ref().is_some_and(|p| p.needs_tick()) {
            TICK_MS
        } else {
            0
        };
        if !self.worker.set_tick(&host, tick) && tick > 0 {
            host.log(Level::Warn, "meshguard: no tick: an idle worker's breaker outcomes and batched counts wait for its next request, and canary analysis does not run");
        }
        self.plugin.is_some()
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = &self.plugin {
            on_tick(&ProxyHost, plugin);
            sync(&ProxyHost, plugin);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a config (refused), Envoy does not create streams for this plugin;
        // should it anyway, the stream passes through untouched.
        Some(Box::new(Http::new(self.plugin.clone(), self.rng.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
