//! The per-stream HTTP context.

use std::rc::Rc;

use meshguard_config::CompiledConfig;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::request::{on_request_headers, RequestState};
use crate::host::proxy::ProxyHost;

/// One HTTP stream.
pub struct Http {
    config: Option<Rc<CompiledConfig>>,
    state: RequestState,
}

impl Http {
    /// A stream under `config` (`None`: pass through).
    pub fn new(config: Option<Rc<CompiledConfig>>) -> Self {
        Http {
            config,
            state: RequestState::default(),
        }
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(config) = &self.config {
            self.state = on_request_headers(&ProxyHost, config);
        }
        Action::Continue
    }
}
