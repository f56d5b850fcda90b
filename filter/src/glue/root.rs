//! The root context: owns the compiled config and the random generator of this VM
//! (Envoy runs one VM per worker thread).

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::breaker;
use super::configure::configure;
use super::http::Http;
use super::plugin::Plugin;
use super::rng::Rng;
use crate::host::proxy::ProxyHost;
use crate::host::{Host, Level};

/// How often a worker writes breaker outcomes it still holds (see
/// `meshguard_engine::breaker::local`).
const TICK: Duration = Duration::from_millis(50);

/// Root context of one plugin instance.
pub struct Root {
    plugin: Option<Rc<Plugin>>,
    rng: Rc<Rng>,
}

impl Default for Root {
    fn default() -> Self {
        let host = ProxyHost;
        let seed = host.random_seed().unwrap_or_else(|e| {
            // Still random enough across VMs for splitting; logged so it is seen.
            host.log(Level::Warn, &format!("{e}; seeding from the clock"));
            proxy_wasm::hostcalls::get_current_time()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Root {
            plugin: None,
            rng: Rc::new(Rng::new(seed)),
        }
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Swap the compiled config whole; on error keep nothing and refuse.
        self.plugin = configure(&ProxyHost);
        let tick = if self.plugin.as_ref().is_some_and(|p| p.has_breakers()) {
            TICK
        } else {
            Duration::ZERO
        };
        if let Err(s) = proxy_wasm::hostcalls::set_tick_period(tick) {
            ProxyHost.log(Level::Warn, &format!("meshguard: no tick ({s:?}): an idle worker's breaker outcomes wait for its next request"));
        }
        self.plugin.is_some()
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = &self.plugin {
            let host = ProxyHost;
            if let Ok(now) = host.now_ns() {
                breaker::on_tick(&host, plugin, now);
            }
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
