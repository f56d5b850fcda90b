//! The per-stream HTTP context.

use std::rc::Rc;

use meshguard_config::CompiledConfig;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::request::{on_request_headers, on_response_headers, RequestState};
use super::rng::Rng;
use crate::host::proxy::ProxyHost;

/// One HTTP stream.
pub struct Http {
    config: Option<Rc<CompiledConfig>>,
    rng: Rc<Rng>,
    state: RequestState,
}

impl Http {
    /// A stream under `config` (`None`: pass through).
    pub fn new(config: Option<Rc<CompiledConfig>>, rng: Rc<Rng>) -> Self {
        Http {
            config,
            rng,
            state: RequestState::default(),
        }
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(config) = &self.config {
            self.state = on_request_headers(&ProxyHost, config, &self.rng);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(config) = &self.config {
            on_response_headers(&ProxyHost, config, &self.state);
        }
        Action::Continue
    }
}
