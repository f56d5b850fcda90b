//! The compiled configuration: what the request path uses.
//!
//! Everything that can be done once is done here, at configure time: regexes are
//! compiled (linear-time engine, size-limited), names are lowercased, host patterns
//! are split. Matching works on bytes, because header values need not be UTF-8.

use regex::bytes::Regex;

/// A validated, compiled plugin configuration.
#[derive(Debug, Clone)]
pub struct CompiledConfig {
    /// Routes in match order.
    pub routes: Vec<CompiledRoute>,
    /// Request header that carries the matched route's name upstream, if configured.
    pub route_header: Option<String>,
    /// Request (and optionally response) header carrying the chosen variant.
    pub variant_header: String,
    /// Request header carrying the chosen variant's cluster.
    pub cluster_header: String,
    /// Whether any route has a canary policy (then client copies of the variant and
    /// cluster headers are removed from every request).
    pub has_canary: bool,
    /// Every rate-limit policy (top-level and per route), in config order.
    pub rate_limits: Vec<crate::ratelimit::CompiledRateLimit>,
    /// Indices into `rate_limits` of the top-level policies (they apply to every route).
    pub global_rate_limits: Vec<usize>,
    /// Count requests that match no route (under route `other`).
    pub count_unmatched: bool,
}

/// A route with its matchers prepared.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    /// The route's name (a metric label).
    pub name: String,
    /// `:authority` patterns; `None` matches any authority.
    pub authority: Option<Vec<HostPattern>>,
    /// Path condition; `None` matches any path.
    pub path: Option<StringMatcher>,
    /// Allowed methods; `None` allows any.
    pub methods: Option<Vec<Vec<u8>>>,
    /// Header conditions: lowercase name and matcher.
    pub headers: Vec<(String, HeaderCondition)>,
    /// Canary policy, if any.
    pub canary: Option<crate::canary::CompiledCanary>,
    /// Indices into the config's `rate_limits` of this route's own policies.
    pub rate_limits: Vec<usize>,
    /// Circuit breaker, if any.
    pub breaker: Option<crate::breaker::CompiledBreaker>,
}

/// How a string (as bytes) is matched.
#[derive(Debug, Clone)]
pub enum StringMatcher {
    /// Equal bytes.
    Exact(Vec<u8>),
    /// Starts with.
    Prefix(Vec<u8>),
    /// Ends with.
    Suffix(Vec<u8>),
    /// Whole-value match (the regex is compiled anchored).
    Regex(Regex),
}

impl StringMatcher {
    /// Whether `value` satisfies this matcher.
    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            StringMatcher::Exact(s) => value == s.as_slice(),
            StringMatcher::Prefix(s) => value.starts_with(s),
            StringMatcher::Suffix(s) => value.ends_with(s),
            StringMatcher::Regex(re) => re.is_match(value),
        }
    }
}

/// A condition on a header that may be missing.
#[derive(Debug, Clone)]
pub enum HeaderCondition {
    /// Present and matching.
    Value(StringMatcher),
    /// Present (`true`) or absent (`false`), whatever the value.
    Present(bool),
}

impl HeaderCondition {
    /// Whether a header with this value (`None` when absent) satisfies the condition.
    pub fn matches(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (HeaderCondition::Present(want), v) => *want == v.is_some(),
            (HeaderCondition::Value(m), Some(v)) => m.matches(v),
            (HeaderCondition::Value(_), None) => false,
        }
    }
}

/// One `:authority` pattern, compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any host.
    Any,
    /// `example.com` (lowercase). `with_port` patterns compare the full authority.
    Exact {
        /// Lowercase host (with port when `with_port`).
        host: Vec<u8>,
        /// The pattern names a port, so the request's port must match too.
        with_port: bool,
    },
    /// `*.example.com`: the host ends with the stored suffix (`.example.com`) and is longer.
    Suffix {
        /// Lowercase suffix including the leading dot or dash.
        suffix: Vec<u8>,
        /// The pattern names a port.
        with_port: bool,
    },
    /// `api.*`: the host starts with the stored prefix (`api.`) and is longer.
    Prefix {
        /// Lowercase prefix including the trailing dot.
        prefix: Vec<u8>,
        /// The pattern names a port.
        with_port: bool,
    },
}

impl HostPattern {
    /// Whether the request's `:authority` value fits this pattern.
    pub fn matches(&self, authority: &[u8]) -> bool {
        let pick = |with_port: bool| {
            if with_port {
                authority
            } else {
                strip_port(authority)
            }
        };
        match self {
            HostPattern::Any => true,
            HostPattern::Exact { host, with_port } => pick(*with_port).eq_ignore_ascii_case(host),
            HostPattern::Suffix { suffix, with_port } => {
                let h = pick(*with_port);
                h.len() > suffix.len()
                    && h.get(h.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
            HostPattern::Prefix { prefix, with_port } => {
                let h = pick(*with_port);
                h.len() > prefix.len()
                    && h.get(..prefix.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
            }
        }
    }
}

/// Removes a trailing `:port` from an authority (`[::1]:80` → `[::1]`, `a:80` → `a`).
pub fn strip_port(authority: &[u8]) -> &[u8] {
    match authority.iter().rposition(|&b| b == b':') {
        Some(colon) => {
            let (host, port) = authority.split_at(colon);
            let digits = port.get(1..).unwrap_or_default();
            let bare_ipv6 = host.contains(&b':') && !host.starts_with(b"[");
            if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) && !bare_ipv6 {
                host
            } else {
                authority
            }
        }
        None => authority,
    }
}

/// The path part of a `:path` value: everything before `?` or `#`.
pub fn path_only(path: &[u8]) -> &[u8] {
    match path.iter().position(|&b| b == b'?' || b == b'#') {
        Some(end) => path.get(..end).unwrap_or(path),
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn strip_port_handles_names_ipv4_and_ipv6() {
        assert_eq!(strip_port(b"example.com:8080"), b"example.com");
        assert_eq!(strip_port(b"example.com"), b"example.com");
        assert_eq!(strip_port(b"10.0.0.1:80"), b"10.0.0.1");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
        assert_eq!(strip_port(b"[::1]"), b"[::1]");
        assert_eq!(strip_port(b"::1"), b"::1");
        assert_eq!(strip_port(b"host:"), b"host:");
        assert_eq!(strip_port(b""), b"");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn path_only_drops_query_and_fragment() {
        assert_eq!(path_only(b"/a/b?x=1"), b"/a/b");
        assert_eq!(path_only(b"/a#frag"), b"/a");
        assert_eq!(path_only(b"/"), b"/");
        assert_eq!(path_only(b"?q"), b"");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn host_patterns_follow_envoy_domains_semantics() {
        let suffix = HostPattern::Suffix {
            suffix: b".example.com".to_vec(),
            with_port: false,
        };
        assert!(suffix.matches(b"api.example.com"));
        assert!(suffix.matches(b"a.b.EXAMPLE.com:443"));
        assert!(!suffix.matches(b"example.com"));
        assert!(!suffix.matches(b".example.com"));
        let prefix = HostPattern::Prefix {
            prefix: b"api.".to_vec(),
            with_port: false,
        };
        assert!(prefix.matches(b"api.example.org"));
        assert!(!prefix.matches(b"api."));
        let exact_port = HostPattern::Exact {
            host: b"example.com:8080".to_vec(),
            with_port: true,
        };
        assert!(exact_port.matches(b"example.com:8080"));
        assert!(!exact_port.matches(b"example.com:9090"));
        assert!(!exact_port.matches(b"example.com"));
        assert!(HostPattern::Any.matches(b"anything"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn header_condition_present_absent_and_value() {
        let present = HeaderCondition::Present(true);
        let absent = HeaderCondition::Present(false);
        assert!(present.matches(Some(b"")));
        assert!(!present.matches(None));
        assert!(absent.matches(None));
        assert!(!absent.matches(Some(b"x")));
        let exact = HeaderCondition::Value(StringMatcher::Exact(b"beta".to_vec()));
        assert!(exact.matches(Some(b"beta")));
        assert!(!exact.matches(Some(b"Beta")));
        assert!(!exact.matches(None));
    }
}
