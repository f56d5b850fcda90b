//! One stream's hooks ([`Filter`]): each runs the core's glue with the
//! stream's host, and a completion Envoy signals from inside a hook waits for
//! that hook to return.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use meshguard_core::glue::plugin::Plugin;
use meshguard_core::glue::request::{
    on_grpc_response, on_request_headers, on_response_headers, on_response_trailers, on_stream_end,
    Stream as Exchange,
};
use meshguard_core::glue::tick::{on_tick, ticks_stopped, wake};
use meshguard_core::host::HttpStream;

use super::{read, Instance};
use crate::abi::envoy::{Answer, Stream};
use crate::abi::{Flow, Hook, HttpFilter};
use crate::host::StreamHost;
use crate::ticker;

/// One stream.
#[derive(Debug)]
pub struct Filter {
    pub(super) instance: Rc<Instance>,
    envoy: Stream,
    id: usize,
    stream: RefCell<Exchange>,
    /// Hooks of this stream running now (should Envoy end the stream from
    /// inside one, as a local reply might, the completion waits for it).
    busy: Cell<u32>,
    /// The stream completed while a hook ran: finish it when that hook returns.
    complete_later: Cell<bool>,
    completed: Cell<bool>,
    /// No longer among the worker's live streams.
    left: Cell<bool>,
}

/// Counts a hook as running while it lives (also when the hook unwinds).
struct Busy<'a>(&'a Cell<u32>);

impl Filter {
    /// Stream `id` of the worker's copy `instance`.
    pub(super) fn new(instance: Rc<Instance>, envoy: Stream, id: usize) -> Filter {
        Filter {
            instance,
            envoy,
            id,
            stream: RefCell::new(Exchange::default()),
            busy: Cell::new(0),
            complete_later: Cell::new(false),
            completed: Cell::new(false),
            left: Cell::new(false),
        }
    }
}

impl<'a> Busy<'a> {
    fn enter(c: &'a Cell<u32>) -> Busy<'a> {
        c.set(c.get().saturating_add(1));
        Busy(c)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl Filter {
    /// Runs `f` on the stream as one hook (with the callout's `answer`
    /// readable from the host), then a completion Envoy signalled from inside
    /// it. `None` when the worker has no configuration (the stream passes).
    fn run<T>(
        &self,
        envoy: &Stream,
        answer: Option<&[u8]>,
        f: impl FnOnce(&StreamHost<'_>, &Plugin) -> T,
    ) -> Option<T> {
        let i = &self.instance;
        let plugin = i.plugin.as_ref()?;
        let host = StreamHost {
            envoy,
            id: self.id,
            shared: &i.shared,
            lender: &i.lender,
            answer,
        };
        let out = {
            let _busy = Busy::enter(&self.busy);
            f(&host, plugin)
        };
        self.finish_later(&host, plugin);
        Some(out)
    }

    fn finish_later(&self, host: &StreamHost<'_>, plugin: &Plugin) {
        if self.busy.get() == 0 && self.complete_later.replace(false) {
            self.complete(host, plugin);
        }
    }

    /// The stream is over: judged and counted once, then no longer live (when
    /// it was the worker's last stream wanting ticks, the core writes what it
    /// holds).
    fn complete(&self, host: &StreamHost<'_>, plugin: &Plugin) {
        if self.completed.replace(true) {
            return;
        }
        on_stream_end(host, plugin, &self.stream.borrow());
        self.leave(host, plugin);
    }

    fn leave(&self, host: &StreamHost<'_>, plugin: &Plugin) {
        if self.left.replace(true) {
            return;
        }
        if !self.instance.lender.leave(self.id) {
            ticks_stopped(host, plugin);
        }
    }

    /// The stream waits for the rate limit service, or was answered locally.
    fn waiting(&self) -> bool {
        self.stream.try_borrow().is_ok_and(|s| s.must_pause())
    }

    /// Answers the request as the Wasm build's trapped request is (503; a gRPC
    /// client gets UNAVAILABLE, since this ABI's local reply would otherwise
    /// carry grpc-status 0). False for a worker without a configuration: its
    /// streams pass.
    fn fail_request(&self, envoy: &Stream) -> bool {
        let i = &self.instance;
        if i.plugin.is_none() {
            return false;
        }
        let host = StreamHost {
            envoy,
            id: self.id,
            shared: &i.shared,
            lender: &i.lender,
            answer: None,
        };
        let grpc = host
            .request_header("content-type")
            .ok()
            .flatten()
            .is_some_and(|v| v.starts_with(b"application/grpc"));
        let _ = if grpc {
            host.send_grpc_reply(14, "meshguard: internal error", &[])
        } else {
            host.send_local_reply(503, &[], b"meshguard: internal error\n")
        };
        true
    }
}

impl HttpFilter for Filter {
    fn request_headers(&self, envoy: &Stream, _end_of_stream: bool) -> Flow {
        let pause = self.run(envoy, None, |host, plugin| {
            #[cfg(feature = "panic-drill")]
            crate::drill::panic_on_demand(host, b"1");
            // The ticks stopped without the core hearing of it (a stream
            // destroyed before it completed): it asks again.
            if plugin.worker.ticking() && !self.instance.lender.lending() {
                ticks_stopped(host, plugin);
            }
            // A worker whose tick had stopped ticks once first.
            wake(host, plugin);
            let s = on_request_headers(host, plugin, &self.instance.rng);
            let pause = s.must_pause();
            *self.stream.borrow_mut() = s;
            pause
        });
        if pause == Some(true) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    /// The request body passes, except while the rate limit service is asked
    /// (or the request was answered): then Envoy buffers it until the
    /// decision, so a body cannot carry its headers past a pending verdict.
    /// (Headers stopped with `StopIteration` go on with a body answered
    /// `Continue`; the Wasm build's pause is Envoy's
    /// `StopAllIterationAndWatermark`, which holds the body without asking.
    /// Tested in `global.rs`.)
    fn request_body(&self, envoy: &Stream, _end_of_stream: bool) -> Flow {
        #[cfg(feature = "panic-drill")]
        if let Some(plugin) = self.instance.plugin.as_ref() {
            let _ = plugin;
            let _ = self.run(envoy, None, |host, _| {
                crate::drill::panic_on_demand(host, b"body")
            });
        }
        let _ = envoy;
        if self.waiting() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    /// Request trailers wait for a pending verdict as the body does.
    fn request_trailers(&self, _envoy: &Stream) -> Flow {
        if self.waiting() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn response_headers(&self, envoy: &Stream, end_of_stream: bool) {
        self.run(envoy, None, |host, plugin| {
            #[cfg(feature = "panic-drill")]
            crate::drill::panic_on_demand(host, b"response");
            on_response_headers(
                host,
                plugin,
                &mut self.stream.borrow_mut().state,
                end_of_stream,
            );
        });
    }

    fn response_body(&self, end_of_stream: bool) {
        if let Ok(mut s) = self.stream.try_borrow_mut() {
            s.state.response_complete |= end_of_stream;
        }
    }

    fn response_trailers(&self, envoy: &Stream) {
        self.run(envoy, None, |host, plugin| {
            on_response_trailers(host, plugin, &mut self.stream.borrow_mut().state);
        });
    }

    fn stream_complete(&self, envoy: &Stream) {
        if self.busy.get() > 0 {
            self.complete_later.set(true);
            return;
        }
        self.run(envoy, None, |host, plugin| self.complete(host, plugin));
    }

    /// The worker's tick, posted to the scheduler this stream lent.
    fn scheduled(&self, envoy: &Stream, event: u64) {
        if event != ticker::TICK_EVENT || self.completed.get() {
            return;
        }
        self.run(envoy, None, |host, plugin| on_tick(host, plugin));
    }

    /// The rate limit service (or a fleet read) answered, or the callout
    /// failed: read as gRPC (`grpc.rs`) and handed to the glue as the Wasm
    /// build's `on_grpc_call_response` is.
    fn callout_done(&self, envoy: &Stream, id: u64, answer: Answer) {
        let Ok(token) = u32::try_from(id) else {
            return;
        };
        if self.completed.get() {
            return;
        }
        let (code, message) = read(&answer);
        let size = message.map_or(0, <[u8]>::len);
        self.run(envoy, message, |host, plugin| {
            // Out of its cell while the glue runs: a limited request's local
            // reply passes this filter's own response hook, which reads it.
            let mut s = self.stream.take();
            on_grpc_response(
                host,
                plugin,
                &mut s,
                (token, code, size),
                &self.instance.rng,
            );
            *self.stream.borrow_mut() = s;
        });
    }

    fn panicked(&self, envoy: &Stream, hook: Hook) -> Flow {
        let i = &self.instance;
        if let Some(plugin) = i.plugin.as_ref() {
            let host = StreamHost {
                envoy,
                id: self.id,
                shared: &i.shared,
                lender: &i.lender,
                answer: None,
            };
            // A completion that waited for the hook, or one cut short.
            self.finish_later(&host, plugin);
            if self.completed.get() {
                self.leave(&host, plugin);
            }
        }
        match hook {
            Hook::RequestHeaders | Hook::RequestBody | Hook::RequestTrailers
                if self.fail_request(envoy) =>
            {
                Flow::Stop
            }
            _ => Flow::Continue,
        }
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        // Envoy 1.40 completes every stream before destroying it; should one
        // not be, it no longer counts as live.
        if !self.left.replace(true) {
            let _ = self.instance.lender.leave(self.id);
        }
        let _ = &self.envoy;
    }
}
