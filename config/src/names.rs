//! Character rules for names that end up in metrics and headers.

/// Longest route (and later variant/policy) name; keeps metric names and labels short.
pub const MAX_NAME_LEN: usize = 63;

/// The route label under which requests that match no route are counted.
pub const UNMATCHED_ROUTE: &str = "other";
/// The variant label of requests on routes without a canary policy (or decided
/// before a variant was chosen).
pub const NO_VARIANT: &str = "none";
/// The variant label of a breaker kept for the whole route.
pub const ALL_VARIANTS: &str = "all";

/// Checks a route-style name: 1–63 of `A-Z a-z 0-9 _ -`, starting with a letter or digit.
/// These survive Envoy stat-tag extraction and are valid Prometheus label values.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "must be at most {MAX_NAME_LEN} characters, got {}",
            name.len()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("must start with a letter or digit, got {name:?}"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "may contain only A-Z a-z 0-9 _ -, found {bad:?} in {name:?}"
        ));
    }
    Ok(())
}

/// RFC 9110 `tchar`: the characters of header names and methods.
pub fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Checks a cookie or query-parameter name (`kind` says which, for the message):
/// not empty, and none of the characters that separate pairs.
pub fn check_param_name(name: &str, kind: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['=', ';', '&', ' ']) {
        return Err(format!("{name:?} is not a usable {kind} name"));
    }
    Ok(())
}

/// Whether `name` can name an Envoy cluster: 1 to 255 bytes, no whitespace or
/// control characters (it travels in a header, and Envoy looks it up verbatim).
pub fn usable_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Pseudo-headers a matcher may name.
pub const PSEUDO_HEADERS: [&str; 4] = [":authority", ":path", ":method", ":scheme"];

/// Checks a header name used for matching: a lowercase token or a known pseudo-header.
pub fn check_header_name(name: &str, allow_pseudo: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.starts_with(':') {
        if allow_pseudo && PSEUDO_HEADERS.contains(&name) {
            return Ok(());
        }
        return Err(if allow_pseudo {
            format!("unknown pseudo-header {name:?}; allowed: {PSEUDO_HEADERS:?}")
        } else {
            format!("must be a regular header name, not the pseudo-header {name:?}")
        });
    }
    if let Some(bad) = name.chars().find(|c| !is_tchar(*c)) {
        return Err(format!("is not a valid header name: {bad:?} not allowed"));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "must be lowercase (Envoy stores header names lowercased): use {:?}",
            name.to_ascii_lowercase()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn a_cookie_or_query_name_is_nonempty_and_holds_no_pair_separator() {
        assert_eq!(check_param_name("beta", "cookie"), Ok(()));
        assert_eq!(
            check_param_name("", "cookie"),
            Err("\"\" is not a usable cookie name".to_string())
        );
        for bad in ["a=b", "a;b", "a&b", "a b"] {
            assert_eq!(
                check_param_name(bad, "query parameter"),
                Err(format!("{bad:?} is not a usable query parameter name"))
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn names_allow_dash_and_underscore_and_reject_dots() {
        assert!(check_name("web").is_ok());
        assert!(check_name("check-out_v2").is_ok());
        assert!(check_name("9lives").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-web").is_err());
        assert!(check_name("a.b").is_err());
        assert!(check_name("caf\u{e9}").is_err());
        assert!(check_name(&"a".repeat(63)).is_ok());
        assert!(check_name(&"a".repeat(64)).is_err());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn header_names_must_be_lowercase_tokens() {
        assert!(check_header_name("x-user-type", false).is_ok());
        assert!(check_header_name(":path", true).is_ok());
        assert!(check_header_name(":path", false).is_err());
        assert!(check_header_name(":bogus", true).is_err());
        assert!(check_header_name("X-User", false).is_err());
        assert!(check_header_name("a b", false).is_err());
        assert!(check_header_name("", false).is_err());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn cluster_names_at_their_bounds() {
        assert!(usable_cluster_name("c"));
        assert!(usable_cluster_name(&"c".repeat(255)));
        assert!(!usable_cluster_name(&"c".repeat(256)));
        assert!(!usable_cluster_name(""));
        assert!(!usable_cluster_name("a b"));
        assert!(!usable_cluster_name("a\u{7}b"));
        assert!(usable_cluster_name(
            "outbound|8080||web.default.svc.cluster.local"
        ));
    }
}
