//! Every request header, read in one host call: Proxy-Wasm's
//! `proxy_get_header_map_pairs` buffer parsed in place ([`HeaderPairs::parse`]),
//! or a dynamic module's header views copied once ([`HeaderPairs::from_pairs`]).
//!
//! Parsed here rather than by the SDK: the Proxy-Wasm SDK's `get_map_bytes`
//! panics (trapping the VM) on a status other than `Ok` and on a header name that is
//! not UTF-8, which an earlier filter can set. This parses the buffer without
//! panicking; names and values stay bytes, looked up in place.

use std::ops::Range;

/// The request headers as Envoy serialised them: the buffer and, per header, the
/// byte ranges of its name and value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderPairs {
    buf: Vec<u8>,
    entries: Vec<(Range<usize>, Range<usize>)>,
}

impl HeaderPairs {
    /// Parses the Proxy-Wasm map encoding: a little-endian u32 count, then each
    /// entry's name and value sizes (u32 each), then each name and value followed by
    /// a NUL. `None` when the buffer does not hold what its header says.
    pub fn parse(buf: Vec<u8>) -> Option<HeaderPairs> {
        if buf.is_empty() {
            return Some(HeaderPairs::default());
        }
        let word = |at: usize| -> Option<usize> {
            let b: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
            Some(u32::from_le_bytes(b) as usize)
        };
        let count = word(0)?;
        let mut data = count.checked_mul(8)?.checked_add(4)?;
        if data > buf.len() {
            return None;
        }
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let sizes = 4 + i * 8;
            let (name_len, value_len) = (word(sizes)?, word(sizes + 4)?);
            let name = data..data.checked_add(name_len)?;
            let value_start = name.end.checked_add(1)?;
            let value = value_start..value_start.checked_add(value_len)?;
            data = value.end.checked_add(1)?;
            if data > buf.len() {
                return None;
            }
            entries.push((name, value));
        }
        Some(HeaderPairs { buf, entries })
    }

    /// The first value of header `name` (lowercase, as Envoy stores names).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        self.entries
            .iter()
            .find(|(n, _)| self.buf.get(n.clone()) == Some(name))
            .and_then(|(_, v)| self.buf.get(v.clone()))
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The headers from `(name, value)` pairs a host hands over one by one (the
    /// native build reads Envoy's header map in place and copies it here once,
    /// into two allocations of the exact size).
    pub fn from_pairs<'a, P>(pairs: P) -> HeaderPairs
    where
        P: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        let (count, bytes) = pairs
            .clone()
            .fold((0, 0), |(c, b), (n, v)| (c + 1, b + n.len() + v.len()));
        let mut out = HeaderPairs {
            buf: Vec::with_capacity(bytes),
            entries: Vec::with_capacity(count),
        };
        for (name, value) in pairs {
            let n = out.buf.len()..out.buf.len() + name.len();
            out.buf.extend_from_slice(name);
            let v = out.buf.len()..out.buf.len() + value.len();
            out.buf.extend_from_slice(value);
            out.entries.push((n, v));
        }
        out
    }

    /// The encoding [`HeaderPairs::parse`] reads, for tests and the fake host.
    pub fn encode(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
        for (n, v) in pairs {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_finds_the_first_value() {
        let buf = HeaderPairs::encode(&[
            (":path", b"/a"),
            ("cookie", b"a=1"),
            ("x-empty", b""),
            ("cookie", b"b=2"),
        ]);
        let h = HeaderPairs::parse(buf).unwrap();
        assert_eq!(h.len(), 4);
        assert_eq!(h.get(":path"), Some(&b"/a"[..]));
        assert_eq!(h.get("cookie"), Some(&b"a=1"[..]));
        assert_eq!(h.get("x-empty"), Some(&b""[..]));
        assert_eq!(h.get("x-none"), None);
        assert!(HeaderPairs::parse(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn built_from_pairs_it_reads_as_the_parsed_encoding_does() {
        let pairs: [(&str, &[u8]); 4] = [
            (":path", b"/a"),
            ("cookie", b"a=1"),
            ("x-empty", b""),
            ("cookie", b"b=2"),
        ];
        let parsed = HeaderPairs::parse(HeaderPairs::encode(&pairs)).unwrap();
        let built = HeaderPairs::from_pairs(pairs.iter().map(|(n, v)| (n.as_bytes(), *v)));
        assert_eq!(built.len(), 4);
        for name in [":path", "cookie", "x-empty", "x-none"] {
            assert_eq!(built.get(name), parsed.get(name), "{name}");
        }
    }

    #[test]
    fn names_need_not_be_utf8() {
        let mut buf = HeaderPairs::encode(&[("x-\u{e9}", b"v"), ("x-b", b"w")]);
        // Turn the name's UTF-8 (c3 a9) into a lone 0xff.
        let at = buf.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
        buf[at] = 0xff;
        buf[at + 1] = b'z';
        let h = HeaderPairs::parse(buf).unwrap();
        assert_eq!(h.get("x-b"), Some(&b"w"[..]));
    }

    #[test]
    fn every_truncation_and_corruption_is_refused_or_parsed_without_panicking() {
        let buf = HeaderPairs::encode(&[(":path", b"/abc"), ("x-user-id", b"u1")]);
        for cut in 1..buf.len() {
            assert_eq!(HeaderPairs::parse(buf[..cut].to_vec()), None, "cut {cut}");
        }
        for i in 0..buf.len() {
            for b in [0u8, 1, 0x7f, 0xff] {
                let mut bad = buf.clone();
                bad[i] = b;
                if let Some(h) = HeaderPairs::parse(bad) {
                    let _ = h.get(":path");
                }
            }
        }
        let mut huge = buf.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(HeaderPairs::parse(huge), None);
    }
}
