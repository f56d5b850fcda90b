//! A lazy, caching view of the request for the engine.
//!
//! Each header costs a host call (about 1 µs when present), so a header is read
//! only when a condition asks for it, and at most once per request. A host error
//! on a read counts as "absent" (the documented fallback) and is logged once.

use meshguard_engine::RequestView;

use super::{Host, Level};

/// Request headers read on demand from a [`Host`].
pub struct CachedRequest<'h, H: Host> {
    host: &'h H,
    cache: Vec<(String, Option<Vec<u8>>)>,
    source: Option<Option<Vec<u8>>>,
}

impl<'h, H: Host> CachedRequest<'h, H> {
    /// A view with nothing read yet.
    pub fn new(host: &'h H) -> Self {
        CachedRequest {
            host,
            cache: Vec::new(),
            source: None,
        }
    }
}

impl<H: Host> RequestView for CachedRequest<'_, H> {
    fn header(&mut self, name: &str) -> Option<&[u8]> {
        let at = match self.cache.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                let value = self.host.request_header(name).unwrap_or_else(|e| {
                    self.host
                        .log(Level::Warn, &format!("{e}; treating the header as absent"));
                    None
                });
                self.cache.push((name.to_owned(), value));
                self.cache.len() - 1
            }
        };
        self.cache.get(at).and_then(|(_, v)| v.as_deref())
    }

    fn source_address(&mut self) -> Option<&[u8]> {
        let host = self.host;
        self.source
            .get_or_insert_with(|| {
                host.source_address().unwrap_or_else(|e| {
                    host.log(
                        Level::Warn,
                        &format!("{e}; treating the caller as untrusted"),
                    );
                    None
                })
            })
            .as_deref()
    }
}
