//! Matchers on request bytes and their compilers: string matchers, conditions on a
//! value that may be missing, header conditions and `:authority` patterns.
//!
//! Routes, canary rules and anything else that looks at a request use these, so
//! they live in one module that depends on nothing but the raw types and the
//! problem list. Matching works on bytes: header values need not be UTF-8.

use regex::bytes::{Regex, RegexBuilder};

use crate::names::check_header_name;
use crate::problem::{exactly_one, join, Problems};
use crate::raw::HeaderMatch;

/// Longest regular expression source accepted.
pub const MAX_REGEX_LEN: usize = 1024;
/// Compiled-program size limit per regex (bytes), so no regex can blow up memory.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

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

/// A condition on a value that may be missing (a header, a cookie, a query parameter).
#[derive(Debug, Clone)]
pub enum ValueCondition {
    /// Present and matching.
    Value(StringMatcher),
    /// Present (`true`) or absent (`false`), whatever the value.
    Present(bool),
}

impl ValueCondition {
    /// Whether a value (`None` when absent) satisfies the condition.
    pub fn matches(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (ValueCondition::Present(want), v) => *want == v.is_some(),
            (ValueCondition::Value(m), Some(v)) => m.matches(v),
            (ValueCondition::Value(_), None) => false,
        }
    }
}

/// A condition on one request header.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    /// Lowercase header name (pseudo-headers included).
    pub name: String,
    /// The condition on its value.
    pub condition: ValueCondition,
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

/// Compiles the value part of `m` (exactly one of `exact`, `prefix`, `suffix`,
/// `regex`, `present`); `m.name` is not looked at, so cookie and query rules use
/// this with names of their own kind.
pub fn value_condition(m: &HeaderMatch, path: &str, p: &mut Problems) -> Option<ValueCondition> {
    let choices = [
        ("exact", m.exact.is_some()),
        ("prefix", m.prefix.is_some()),
        ("suffix", m.suffix.is_some()),
        ("regex", m.regex.is_some()),
        ("present", m.present.is_some()),
    ];
    exactly_one(path, &choices, p)?;
    let bytes = |v: &String| v.as_bytes().to_vec();
    Some(if let Some(v) = &m.exact {
        ValueCondition::Value(StringMatcher::Exact(bytes(v)))
    } else if let Some(v) = &m.prefix {
        ValueCondition::Value(StringMatcher::Prefix(bytes(v)))
    } else if let Some(v) = &m.suffix {
        ValueCondition::Value(StringMatcher::Suffix(bytes(v)))
    } else if let Some(v) = &m.regex {
        ValueCondition::Value(StringMatcher::Regex(compile_regex(
            v,
            &join(path, "regex"),
            p,
        )?))
    } else {
        ValueCondition::Present(m.present.unwrap_or(true))
    })
}

/// Compiles one header condition (name and value), or records why it cannot be.
pub fn header_condition(h: &HeaderMatch, path: &str, p: &mut Problems) -> Option<HeaderMatcher> {
    let name_ok = check_header_name(&h.name, true)
        .map_err(|e| p.push(join(path, "name"), e))
        .is_ok();
    let condition = value_condition(h, path, p)?;
    name_ok.then(|| HeaderMatcher {
        name: h.name.clone(),
        condition,
    })
}

/// Compiles a whole-value regex with size limits, or records why it cannot be.
pub fn compile_regex(src: &str, path: &str, p: &mut Problems) -> Option<Regex> {
    if src.len() > MAX_REGEX_LEN {
        p.push(
            path,
            format!("regex longer than {MAX_REGEX_LEN} characters"),
        );
        return None;
    }
    RegexBuilder::new(&format!("^(?:{src})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let msg = match e {
                regex::Error::CompiledTooBig(_) => {
                    format!("regex compiles larger than the {REGEX_SIZE_LIMIT}-byte limit")
                }
                other => format!("invalid regex: {}", one_line(&other.to_string())),
            };
            p.push(path, msg);
        })
        .ok()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses an Envoy-style domain pattern.
pub fn host_pattern(h: &str) -> Result<HostPattern, String> {
    if h == "*" {
        return Ok(HostPattern::Any);
    }
    if h.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(bad) = h
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-.:[]*_".contains(*c)))
    {
        return Err(format!("{h:?} is not a host pattern: {bad:?} not allowed"));
    }
    let with_port = strip_port(h.as_bytes()).len() != h.len();
    let lower = h.to_ascii_lowercase().into_bytes();
    let stars = h.matches('*').count();
    match (stars, h.strip_prefix('*'), h.strip_suffix('*')) {
        (0, _, _) => Ok(HostPattern::Exact {
            host: lower,
            with_port,
        }),
        // (A lone `*` returned above, so neither guard below can fail: making
        // either `true` is an equivalent mutant. They say what the arm needs.)
        (1, Some(rest), _) if !rest.is_empty() => Ok(HostPattern::Suffix {
            suffix: rest.to_ascii_lowercase().into_bytes(),
            with_port,
        }),
        (1, _, Some(rest)) if !rest.is_empty() => Ok(HostPattern::Prefix {
            prefix: rest.to_ascii_lowercase().into_bytes(),
            with_port,
        }),
        _ => Err(format!(
            "{h:?}: a wildcard '*' may appear once, at the start or the end, or alone"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn host_patterns_parse_into_their_kind_with_or_without_a_port() {
        let kind = |h: &str| match host_pattern(h) {
            Ok(HostPattern::Any) => "any".to_string(),
            Ok(HostPattern::Exact { with_port, .. }) => format!("exact {with_port}"),
            Ok(HostPattern::Suffix { suffix, with_port }) => {
                format!("suffix {} {with_port}", String::from_utf8_lossy(&suffix))
            }
            Ok(HostPattern::Prefix { prefix, with_port }) => {
                format!("prefix {} {with_port}", String::from_utf8_lossy(&prefix))
            }
            Err(_) => "refused".to_string(),
        };
        assert_eq!(kind("*"), "any");
        assert_eq!(kind("Example.com"), "exact false");
        assert_eq!(kind("example.com:8080"), "exact true");
        assert_eq!(kind("*.Example.com"), "suffix .example.com false");
        assert_eq!(kind("api.*"), "prefix api. false");
        assert_eq!(kind("api.*:443"), "refused");
        assert_eq!(kind("a*b"), "refused");
        assert_eq!(kind("**"), "refused");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_regex_may_be_as_long_as_the_limit_and_its_error_is_one_line() {
        let mut p = Problems::default();
        assert!(compile_regex(&"a".repeat(MAX_REGEX_LEN), "r", &mut p).is_some());
        assert!(compile_regex(&"a".repeat(MAX_REGEX_LEN + 1), "r", &mut p).is_none());
        assert!(compile_regex("(", "r", &mut p).is_none());
        let found: Vec<String> = p.into_vec().iter().map(ToString::to_string).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0],
            format!("r: regex longer than {MAX_REGEX_LEN} characters")
        );
        assert_eq!(
            found[1],
            "r: invalid regex: regex parse error: ^(?:()$ ^ error: unclosed group"
        );
    }

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
    fn value_condition_present_absent_and_value() {
        let present = ValueCondition::Present(true);
        let absent = ValueCondition::Present(false);
        assert!(present.matches(Some(b"")));
        assert!(!present.matches(None));
        assert!(absent.matches(None));
        assert!(!absent.matches(Some(b"x")));
        let exact = ValueCondition::Value(StringMatcher::Exact(b"beta".to_vec()));
        assert!(exact.matches(Some(b"beta")));
        assert!(!exact.matches(Some(b"Beta")));
        assert!(!exact.matches(None));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn string_matchers_compare_bytes() {
        let m = |kind: &str, v: &str| {
            let h: HeaderMatch = serde_json::from_str(&format!(
                r#"{{"name":"x","{kind}":{}}}"#,
                serde_json::to_string(v).unwrap()
            ))
            .unwrap();
            value_condition(&h, "h", &mut Problems::default()).unwrap()
        };
        assert!(m("prefix", "ab").matches(Some(b"abc")));
        assert!(!m("prefix", "ab").matches(Some(b"cab")));
        assert!(m("suffix", "bc").matches(Some(b"abc")));
        assert!(!m("suffix", "bc").matches(Some(b"bca")));
        assert!(m("regex", "a.c").matches(Some(b"abc")));
        assert!(!m("regex", "a.c").matches(Some(b"abcd")), "anchored");
    }
}
