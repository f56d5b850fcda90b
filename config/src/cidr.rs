//! CIDR blocks for trusted callers (`10.0.0.0/8`, `fd00::/8`, or a bare address).

use std::net::IpAddr;

/// An address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n`, or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` lies in this block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                masked(u128::from(u32::from(net)), 32, self.prefix)
                    == masked(u128::from(u32::from(a)), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                masked(u128::from(net), 128, self.prefix) == masked(u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Parses a `trustedSources` list at `path`, recording each bad entry with its index.
pub fn parse_list(list: &[String], path: &str, p: &mut crate::problem::Problems) -> Vec<Cidr> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            Cidr::parse(s)
                .map_err(|why| p.push(crate::problem::index(path, i), why))
                .ok()
        })
        .collect()
}

/// Whether `ip` lies in any of `blocks`.
pub fn any_contains(blocks: &[Cidr], ip: IpAddr) -> bool {
    blocks.iter().any(|c| c.contains(ip))
}

fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    let host_bits = u32::from(width.saturating_sub(prefix));
    bits.checked_shr(host_bits).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_address_is_in_a_list_when_any_block_holds_it() {
        let blocks: Vec<Cidr> = ["10.0.0.0/8", "fd00::/8"]
            .iter()
            .filter_map(|b| Cidr::parse(b).ok())
            .collect();
        assert!(any_contains(&blocks, ip("10.1.2.3")));
        assert!(any_contains(&blocks, ip("fd00::7")));
        assert!(!any_contains(&blocks, ip("192.0.2.1")));
        assert!(!any_contains(&[], ip("10.1.2.3")));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn blocks_contain_their_addresses_only() {
        let ten = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(ten.contains(ip("10.255.1.2")));
        assert!(!ten.contains(ip("11.0.0.1")));
        assert!(ten.contains(ip("::ffff:10.1.2.3")));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!(!all.contains(ip("2001:db8::1")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn malformed_blocks_are_refused() {
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0/8").is_err());
        assert!(Cidr::parse("fd00::/129").is_err());
        assert!(Cidr::parse("").is_err());
        assert!(Cidr::parse("10.0.0.0/x").is_err());
    }
}
