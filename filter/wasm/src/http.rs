//! The per-stream HTTP context.

use std::rc::Rc;

use meshguard_core::glue::plugin::Plugin;
use meshguard_core::glue::request::{
    on_grpc_response, on_request_headers, on_response_headers, on_response_trailers, on_stream_end,
    Stream,
};
use meshguard_core::glue::tick::wake;
use meshguard_core::host::counts::Counts;
use meshguard_engine::Rng;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::host::ProxyHost;

/// One HTTP stream.
pub struct Http {
    plugin: Option<Rc<Plugin>>,
    rng: Rc<Rng>,
    counts: Rc<Counts>,
    stream: Stream,
}

impl Http {
    /// A stream under `plugin` (`None`: pass through), batching counts into
    /// its root context's `counts`.
    pub fn new(plugin: Option<Rc<Plugin>>, rng: Rc<Rng>, counts: Rc<Counts>) -> Self {
        Http {
            plugin,
            rng,
            counts,
            stream: Stream::default(),
        }
    }
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if let Some(plugin) = &self.plugin {
            on_grpc_response(
                &ProxyHost::new(&self.counts),
                plugin,
                &mut self.stream,
                (token_id, status_code, response_size),
                &self.rng,
            );
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        #[cfg(feature = "trap-drill")]
        drill::trap_on_demand();
        if let Some(plugin) = &self.plugin {
            let host = ProxyHost::new(&self.counts);
            // A worker whose tick had stopped ticks once first (`tick::wake`).
            wake(&host, plugin);
            self.stream = on_request_headers(&host, plugin, &self.rng);
        }
        if self.stream.must_pause() {
            Action::Pause // a local reply was sent, or the rate limit service is asked
        } else {
            Action::Continue
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if let Some(plugin) = &self.plugin {
            on_response_headers(
                &ProxyHost::new(&self.counts),
                plugin,
                &mut self.stream.state,
                end_of_stream,
            );
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
        self.stream.state.response_complete |= end_of_stream;
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        match &self.plugin {
            Some(plugin) => on_response_trailers(
                &ProxyHost::new(&self.counts),
                plugin,
                &mut self.stream.state,
            ),
            None => self.stream.state.response_complete = true,
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(plugin) = &self.plugin {
            on_stream_end(&ProxyHost::new(&self.counts), plugin, &self.stream);
        }
    }
}

#[cfg(feature = "trap-drill")]
mod drill {
    use meshguard_core::host::counts::Counts;
    use meshguard_core::host::HttpStream;

    use crate::host::ProxyHost;

    /// TEST ONLY (feature `trap-drill`): traps the VM on `x-meshguard-trap: 1`.
    #[allow(clippy::panic)] // the point of this build is to trap on demand
    pub fn trap_on_demand() {
        if ProxyHost::new(&Counts::default())
            .request_header("x-meshguard-trap")
            .ok()
            .flatten()
            .as_deref()
            == Some(b"1")
        {
            panic!("meshguard trap drill: trapping on request");
        }
    }
}
