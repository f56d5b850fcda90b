//! `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers, as RFC
//! 8941 structured-field lists), `retry-after`, and the legacy `x-ratelimit-*` trio.
//!
//! A token bucket is advertised as `q` = its burst and `w` = the seconds an empty
//! bucket takes to fill; `r` is the whole tokens left and `t` the seconds until the
//! bucket is full again. Seconds are rounded up, so a client that waits `t` (or
//! `retry-after`) is never early.

use crate::time::ceil_seconds;

/// One policy's numbers for the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyState<'a> {
    /// Policy name (an sf-string; names are `A-Z a-z 0-9 _ -`, so no escaping).
    pub name: &'a str,
    /// Burst (quota).
    pub quota: u64,
    /// Window in seconds.
    pub window_s: u64,
    /// Tokens left.
    pub remaining: u64,
    /// Nanoseconds until full.
    pub full_in_ns: u64,
}

/// The `RateLimit-Policy` value: `"a";q=10;w=1, "b";q=5;w=60`.
pub fn policy_field(states: &[PolicyState<'_>]) -> String {
    states
        .iter()
        .map(|s| format!("\"{}\";q={};w={}", s.name, s.quota, s.window_s))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `RateLimit` value: `"a";r=0;t=1`.
pub fn ratelimit_field(states: &[PolicyState<'_>]) -> String {
    states
        .iter()
        .map(|s| {
            format!(
                "\"{}\";r={};t={}",
                s.name,
                s.remaining,
                ceil_seconds(s.full_in_ns)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The legacy trio for the most constrained policy (fewest tokens left).
pub fn legacy_fields(states: &[PolicyState<'_>]) -> Option<[(&'static str, String); 3]> {
    let s = states.iter().min_by_key(|s| s.remaining)?;
    Some([
        ("x-ratelimit-limit", s.quota.to_string()),
        ("x-ratelimit-remaining", s.remaining.to_string()),
        ("x-ratelimit-reset", ceil_seconds(s.full_in_ns).to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn fields_are_structured_field_lists() {
        let states = [
            PolicyState {
                name: "per-client",
                quota: 10,
                window_s: 1,
                remaining: 0,
                full_in_ns: 450_000_000,
            },
            PolicyState {
                name: "global",
                quota: 500,
                window_s: 60,
                remaining: 42,
                full_in_ns: 30_000_000_001,
            },
        ];
        assert_eq!(
            policy_field(&states),
            r#""per-client";q=10;w=1, "global";q=500;w=60"#
        );
        assert_eq!(
            ratelimit_field(&states),
            r#""per-client";r=0;t=1, "global";r=42;t=31"#
        );
        let legacy = legacy_fields(&states).unwrap();
        assert_eq!(legacy[1], ("x-ratelimit-remaining", "0".to_string()));
        assert_eq!(legacy_fields(&[]), None);
    }
}
