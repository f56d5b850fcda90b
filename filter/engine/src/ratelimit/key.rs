//! Building a policy's bucket key from the request.

use std::net::IpAddr;

use meshguard_config::matcher::path_only;
use meshguard_config::ratelimit::KeyPart;

use crate::canary::parse_source_address;
use crate::params::{cookie, query};
use crate::RequestView;

/// The key bytes for `parts`, or `None` when a part is missing (the policy then
/// does not apply). Each part is length-prefixed, so parts cannot run together.
pub fn build_key(parts: &[KeyPart], route: &str, req: &mut impl RequestView) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(32);
    for part in parts {
        let mut push = |bytes: &[u8]| {
            key.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            key.extend_from_slice(bytes);
        };
        match part {
            KeyPart::ClientAddress { v4, v6 } => {
                let ip = req.source_address().and_then(parse_source_address)?;
                push(&masked_address(ip, *v4, *v6));
            }
            KeyPart::Header(name) => push(req.header(name)?),
            KeyPart::Path => push(path_only(req.header(":path")?)),
            KeyPart::Method => push(req.header(":method")?),
            KeyPart::Route => push(route.as_bytes()),
            KeyPart::Constant(c) => push(c),
            KeyPart::Cookie(name) => push(cookie(req.header("cookie")?, name)?),
            KeyPart::Query(name) => push(&query(req.header(":path")?, name)?),
        }
    }
    Some(key)
}

/// The address with host bits cleared (an IPv4-mapped IPv6 address counts as IPv4),
/// then the prefix length: 5 or 17 bytes, kept on the stack (a key is built per
/// request).
pub fn masked_address(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> Masked {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => mask(&a.octets(), v4_prefix),
        IpAddr::V6(a) => mask(&a.octets(), v6_prefix),
    }
}

fn mask(octets: &[u8], prefix: u8) -> Masked {
    let mut bytes = [0u8; 17];
    for (i, (out, &o)) in bytes.iter_mut().zip(octets).enumerate() {
        let bit = (i * 8) as u32;
        let keep = u32::from(prefix).saturating_sub(bit).min(8);
        *out = o & 0xffu8.checked_shl(8 - keep).unwrap_or(0);
    }
    if let Some(p) = bytes.get_mut(octets.len()) {
        *p = prefix;
    }
    Masked {
        bytes,
        len: octets.len() + 1,
    }
}

/// A masked address and its prefix length (see [`masked_address`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masked {
    bytes: [u8; 17],
    len: usize,
}

impl std::ops::Deref for Masked {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    struct Req(Vec<(&'static str, &'static [u8])>, Option<&'static [u8]>);

    impl RequestView for Req {
        fn header(&mut self, name: &str) -> Option<&[u8]> {
            self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        }
        fn source_address(&mut self) -> Option<&[u8]> {
            self.1
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn parts_are_length_prefixed_and_a_missing_part_skips_the_policy() {
        let parts = vec![KeyPart::Header("x-a".into()), KeyPart::Header("x-b".into())];
        let k1 = build_key(
            &parts,
            "r",
            &mut Req(vec![("x-a", b"ab"), ("x-b", b"c")], None),
        )
        .unwrap();
        let k2 = build_key(
            &parts,
            "r",
            &mut Req(vec![("x-a", b"a"), ("x-b", b"bc")], None),
        )
        .unwrap();
        assert_ne!(k1, k2);
        assert_eq!(
            build_key(&parts, "r", &mut Req(vec![("x-a", b"ab")], None)),
            None
        );
        assert_eq!(build_key(&[], "r", &mut Req(vec![], None)), Some(vec![]));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn path_method_route_and_constant_parts() {
        let parts = vec![
            KeyPart::Path,
            KeyPart::Method,
            KeyPart::Route,
            KeyPart::Constant(b"v1".to_vec()),
        ];
        let a = build_key(
            &parts,
            "api",
            &mut Req(vec![(":path", b"/x?q=1"), (":method", b"GET")], None),
        )
        .unwrap();
        let b = build_key(
            &parts,
            "api",
            &mut Req(vec![(":path", b"/x?q=2"), (":method", b"GET")], None),
        )
        .unwrap();
        assert_eq!(a, b, "the query string is not part of the path");
        let c = build_key(
            &parts,
            "web",
            &mut Req(vec![(":path", b"/x"), (":method", b"GET")], None),
        )
        .unwrap();
        assert_ne!(a, c);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn cookie_and_query_parts_key_by_their_value_and_skip_the_policy_when_missing() {
        let parts = vec![
            KeyPart::Cookie("team".into()),
            KeyPart::Query("plan".into()),
        ];
        let key = |cookie: &'static [u8], path: &'static [u8]| {
            build_key(
                &parts,
                "r",
                &mut Req(vec![("cookie", cookie), (":path", path)], None),
            )
        };
        let a = key(b"sid=1; team=blue", b"/x?plan=free&y=2").unwrap();
        assert_eq!(
            a,
            [
                &4u32.to_le_bytes()[..],
                b"blue",
                &4u32.to_le_bytes(),
                b"free"
            ]
            .concat()
        );
        assert_eq!(key(b"team=blue; sid=2", b"/y?plan=fr%65e"), Some(a.clone()));
        assert_ne!(key(b"team=red", b"/x?plan=free"), Some(a));
        assert_eq!(key(b"sid=1", b"/x?plan=free"), None, "no such cookie");
        assert_eq!(key(b"team=blue", b"/x?y=2"), None, "no such parameter");
        assert_eq!(
            build_key(&parts, "r", &mut Req(vec![(":path", b"/x?plan=a")], None)),
            None,
            "no Cookie header"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn client_addresses_are_grouped_by_prefix() {
        let part = vec![KeyPart::ClientAddress { v4: 32, v6: 64 }];
        let key = |addr: &'static [u8]| build_key(&part, "r", &mut Req(vec![], Some(addr)));
        assert_eq!(
            key(b"[2001:db8:1:2::1]:5"),
            key(b"[2001:db8:1:2:aaaa::7]:9")
        );
        assert_ne!(key(b"[2001:db8:1:2::1]:5"), key(b"[2001:db8:1:3::1]:5"));
        assert_eq!(key(b"10.0.0.1:1"), key(b"10.0.0.1:2"));
        assert_ne!(key(b"10.0.0.1:1"), key(b"10.0.0.2:1"));
        assert_eq!(key(b"10.0.0.1:1"), key(b"[::ffff:10.0.0.1]:1"));
        assert_eq!(key(b"not an address"), None);
        assert_eq!(
            *masked_address("10.1.2.3".parse().unwrap(), 24, 64),
            [10, 1, 2, 0, 24]
        );
        assert_eq!(
            *masked_address("10.1.2.3".parse().unwrap(), 20, 64),
            [10, 1, 0, 0, 20]
        );
    }
}
