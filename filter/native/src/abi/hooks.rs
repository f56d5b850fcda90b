//! What the module does at each hook, as safe traits: `exports` calls them
//! with safe handles, unit tests call them with mocks.

use std::sync::Arc;

use super::envoy::{Answer, Config, Stream};

/// Whether a stream goes on after a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The stream goes on.
    Continue,
    /// The stream waits (headers and trailers: stop iteration; a request body:
    /// stop and buffer, so it cannot pass a pending verdict).
    Stop,
}

/// The stream hooks that can panic with a fallback for the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `request_headers`.
    RequestHeaders,
    /// `request_body`.
    RequestBody,
    /// `request_trailers`.
    RequestTrailers,
    /// Any later hook (the response, completion, ticks, answers).
    Later,
}

/// A filter configuration's hooks (Envoy's main thread, except `new_filter`).
pub trait FilterConfig: Send + Sync + Sized + 'static {
    /// One stream's state.
    type Filter: HttpFilter;
    /// Loads configuration `config` named `name`; `None` rejects it.
    fn new(envoy: &Config, name: &str, config: &[u8]) -> Option<Self>;
    /// A new stream on a worker; `None` makes Envoy close it.
    fn new_filter(this: &Arc<Self>, envoy: Stream) -> Option<Self::Filter>;
    /// An event posted to the configuration's scheduler.
    fn scheduled(&self, envoy: &Config, event: u64);
    /// The configuration's own callout was answered.
    fn callout_done(&self, envoy: &Config, id: u64, answer: Answer);
    /// Envoy destroys the configuration (its streams are gone).
    fn destroy(&self);
}

/// One stream's hooks (its worker thread).
pub trait HttpFilter: 'static {
    /// The request headers.
    fn request_headers(&self, envoy: &Stream, end_of_stream: bool) -> Flow;
    /// A request body chunk.
    fn request_body(&self, envoy: &Stream, end_of_stream: bool) -> Flow;
    /// The request trailers.
    fn request_trailers(&self, envoy: &Stream) -> Flow;
    /// The response headers.
    fn response_headers(&self, envoy: &Stream, end_of_stream: bool);
    /// A response body chunk.
    fn response_body(&self, end_of_stream: bool);
    /// The response trailers.
    fn response_trailers(&self, envoy: &Stream);
    /// The stream is over (answered, reset or abandoned).
    fn stream_complete(&self, envoy: &Stream);
    /// An event posted to a scheduler this stream lent.
    fn scheduled(&self, envoy: &Stream, event: u64);
    /// A callout of this stream was answered.
    fn callout_done(&self, envoy: &Stream, id: u64, answer: Answer);
    /// A hook panicked (caught and logged): what the stream gets now.
    fn panicked(&self, envoy: &Stream, hook: Hook) -> Flow;
}
