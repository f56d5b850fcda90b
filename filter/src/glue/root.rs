//! The root context: owns the compiled config for this VM (one VM per worker).

use std::rc::Rc;

use meshguard_config::CompiledConfig;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::configure::configure;
use super::http::Http;
use crate::host::proxy::ProxyHost;

/// Root context of one plugin instance.
#[derive(Default)]
pub struct Root {
    config: Option<Rc<CompiledConfig>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Swap the compiled config whole; on error keep nothing and refuse.
        self.config = configure(&ProxyHost);
        self.config.is_some()
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a config (refused), Envoy does not create streams for this plugin;
        // should it anyway, the stream passes through untouched.
        Some(Box::new(Http::new(self.config.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
