//! A lazy, caching view of the request for the engine.
//!
//! Each header costs a host call (about 1 µs when present), so a header is read
//! only when a condition asks for it, and at most once per request; with
//! `requestHeaders: all` (or `auto` resolved to it) the first read fetches every
//! header in one call and later reads look there. A host error on a read counts as
//! "absent" (the documented fallback) and is logged.

use meshguard_engine::{parse_source_address, RequestView};

use super::pairs::HeaderPairs;
use super::{HttpStream, Level};

/// How the view reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadPlan<'c> {
    /// Fetch every header in one call on the first read.
    pub all_at_once: bool,
    /// Take the client address from this header (set by an earlier filter), with
    /// `source.address` as the fallback when it is absent or not an address.
    pub client_address_header: Option<&'c str>,
}

/// Request headers read on demand from an [`HttpStream`].
pub struct CachedRequest<'h, 'c, H: HttpStream> {
    host: &'h H,
    plan: ReadPlan<'c>,
    cache: Vec<(String, Option<Vec<u8>>)>,
    all: Option<Option<HeaderPairs>>,
    source: Option<Option<Vec<u8>>>,
}

impl<'h, 'c, H: HttpStream> CachedRequest<'h, 'c, H> {
    /// A view with nothing read yet, reading one header per call.
    pub fn new(host: &'h H) -> Self {
        Self::planned(host, ReadPlan::default())
    }

    /// A view with nothing read yet, reading as `plan` says.
    pub fn planned(host: &'h H, plan: ReadPlan<'c>) -> Self {
        CachedRequest {
            host,
            plan,
            cache: Vec::new(),
            all: None,
            source: None,
        }
    }

    /// Every header, fetched on first use; `None` when the call failed (then
    /// headers are read one by one).
    fn all(&mut self) -> Option<&HeaderPairs> {
        let host = self.host;
        self.all
            .get_or_insert_with(|| {
                host.request_headers()
                    .map_err(|e| {
                        host.log(
                            Level::Warn,
                            &format!("{e}; reading request headers one by one"),
                        )
                    })
                    .ok()
            })
            .as_ref()
    }

    fn read(&mut self, name: &str) -> Option<&[u8]> {
        if self.plan.all_at_once && self.all().is_some() {
            return self.all.as_ref()?.as_ref()?.get(name);
        }
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
}

impl<H: HttpStream> RequestView for CachedRequest<'_, '_, H> {
    fn header(&mut self, name: &str) -> Option<&[u8]> {
        self.read(name)
    }

    fn source_address(&mut self) -> Option<&[u8]> {
        if self.source.is_none() {
            let from_header = match self.plan.client_address_header {
                Some(h) => self
                    .read(h)
                    .filter(|v| parse_source_address(v).is_some())
                    .map(<[u8]>::to_vec),
                None => None,
            };
            let host = self.host;
            let value = from_header.or_else(|| {
                host.source_address().unwrap_or_else(|e| {
                    host.log(
                        Level::Warn,
                        &format!("{e}; treating the caller as untrusted"),
                    );
                    None
                })
            });
            self.source = Some(value);
        }
        self.source.as_ref()?.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    fn header_calls(host: &FakeHost) -> Vec<String> {
        host.calls
            .take()
            .into_iter()
            .filter(|c| c.starts_with("request_header") || c.starts_with("property"))
            .collect()
    }

    #[test]
    fn all_at_once_reads_every_header_in_one_call() {
        let host = FakeHost::new()
            .with_header(":path", b"/a")
            .with_header("x-user-id", b"u1");
        let plan = ReadPlan {
            all_at_once: true,
            client_address_header: None,
        };
        let mut v = CachedRequest::planned(&host, plan);
        assert_eq!(v.header(":path"), Some(&b"/a"[..]));
        assert_eq!(v.header("x-user-id"), Some(&b"u1"[..]));
        assert_eq!(v.header("x-none"), None);
        assert_eq!(header_calls(&host), ["request_headers()"]);
    }

    #[test]
    fn a_failed_all_at_once_read_falls_back_to_single_reads() {
        let host = FakeHost::new()
            .with_header(":path", b"/a")
            .failing_read("*");
        let plan = ReadPlan {
            all_at_once: true,
            client_address_header: None,
        };
        let mut v = CachedRequest::planned(&host, plan);
        assert_eq!(v.header(":path"), Some(&b"/a"[..]));
        assert_eq!(v.header(":path"), Some(&b"/a"[..]));
        assert_eq!(
            header_calls(&host),
            ["request_headers()", "request_header(:path)"]
        );
        assert!(host.logs.borrow()[0].1.contains("one by one"));
    }

    #[test]
    fn the_client_address_comes_from_its_header_or_falls_back_to_the_connection() {
        let plan = ReadPlan {
            all_at_once: false,
            client_address_header: Some("x-client-ip"),
        };
        let cases: [(Option<&[u8]>, &[u8]); 4] = [
            (Some(b"192.0.2.7"), b"192.0.2.7"),
            (Some(b"[2001:db8::1]:443"), b"[2001:db8::1]:443"),
            (Some(b"not an address"), b"10.1.2.3:5000"),
            (None, b"10.1.2.3:5000"),
        ];
        for (header, want) in cases {
            let mut host = FakeHost::new().from_address("10.1.2.3:5000");
            if let Some(h) = header {
                host = host.with_header("x-client-ip", h);
            }
            let mut v = CachedRequest::planned(&host, plan);
            assert_eq!(v.source_address(), Some(want), "{header:?}");
            assert_eq!(v.source_address(), Some(want));
            let property = header_calls(&host)
                .iter()
                .filter(|c| c.starts_with("property"))
                .count();
            assert_eq!(
                property,
                usize::from(want.starts_with(b"10.")),
                "{header:?}"
            );
        }
    }
}
