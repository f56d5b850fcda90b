//! What the engine may ask about the request being decided.
//!
//! Header reads are the expensive part on the real host (about 1 µs each), so
//! the engine asks lazily, only for what a condition needs; the host's view
//! caches answers so a header is read at most once per request.

/// The request, as the engine sees it.
pub trait RequestView {
    /// The value of request header `name` (lowercase; pseudo-headers such as
    /// `:path` included), or `None` when absent or unreadable.
    fn header(&mut self, name: &str) -> Option<&[u8]>;
    /// Envoy's `source.address` property (`ip:port`), or `None` when unavailable.
    fn source_address(&mut self) -> Option<&[u8]>;
}
