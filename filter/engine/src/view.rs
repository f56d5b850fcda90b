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

#[cfg(test)]
pub mod testing {
    //! A request for the engine's own tests.
    use super::RequestView;

    /// Headers by name, from the client address `192.0.2.1:7`.
    #[derive(Default)]
    pub struct Req(pub Vec<(&'static str, &'static [u8])>);

    impl RequestView for Req {
        fn header(&mut self, name: &str) -> Option<&[u8]> {
            self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        }
        fn source_address(&mut self) -> Option<&[u8]> {
            Some(b"192.0.2.1:7")
        }
    }
}
