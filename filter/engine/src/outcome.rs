//! Whether a finished call failed, from what the host saw: the final status, and
//! Envoy's response flags for calls that did not complete normally. Breakers (and
//! the canary analysis) judge calls this way.

pub use meshguard_config::status::FailureStatuses;

/// Envoy response flags that mean the upstream failed us: no healthy upstream,
/// request timeout, remote reset, connection failure / termination, overflow,
/// max stream duration, protocol error.
pub const FAILURE_FLAGS: u64 = 0x2 | 0x4 | 0x10 | 0x20 | 0x40 | 0x80 | 0x8_0000 | 0x80_0000;

/// Whether Envoy's response flags can change the verdict on a call. Flags come
/// with a local 4xx/5xx reply or with a response cut short; a response that
/// completed with a status below 400 cannot carry them, so that (common) case
/// needs no property read.
///
/// A 101 (an upgrade, e.g. a WebSocket) succeeded when it was answered: the session
/// that follows ends by closing a connection, which Envoy flags, and is not the
/// request failing; so its flags are never read either.
pub fn flags_matter(code: u64, complete: bool) -> bool {
    code != 101 && !(complete && (100..400).contains(&code))
}

/// Whether a call with final status `code` (0: none), gRPC status `grpc` (from
/// `grpc-status`, when the response carried one) and response `flags` failed.
pub fn is_failure(statuses: &FailureStatuses, code: u64, grpc: Option<u32>, flags: u64) -> bool {
    let by_status = u16::try_from(code).is_ok_and(|c| c != 0 && statuses.contains(c));
    let by_grpc = grpc.is_some_and(|g| statuses.contains_grpc(g));
    by_status || by_grpc || flags & FAILURE_FLAGS != 0
}

/// Parses a `grpc-status` value: ASCII digits only (at most 10), `None` otherwise.
pub fn parse_grpc_status(value: &[u8]) -> Option<u32> {
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn statuses_and_flags_classify_calls() {
        let statuses = FailureStatuses {
            classes: vec![5],
            codes: vec![429],
            grpc: vec![14, 4],
        };
        let f = |code, flags| is_failure(&statuses, code, None, flags);
        assert!(f(503, 0) && f(500, 0) && f(429, 0));
        assert!(!f(200, 0) && !f(404, 0) && !f(0, 0) && !f(430, 0));
        assert!(f(200, 0x10), "an upstream reset fails whatever the status");
        assert!(f(0, 0x4) && f(0, 0x80_0000));
        assert!(!f(200, 0x1), "other flags (e.g. a local 4xx) do not");
        assert!(!f(u64::from(u16::MAX) + 503, 0), "no truncation into range");
        let g = |grpc| is_failure(&statuses, 200, grpc, 0);
        assert!(g(Some(14)) && g(Some(4)));
        assert!(!g(Some(0)) && !g(Some(5)) && !g(None));
        assert!(
            is_failure(&statuses, 503, Some(0), 0),
            "HTTP 503 fails whatever it says"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn grpc_status_values_parse_strictly() {
        assert_eq!(parse_grpc_status(b"0"), Some(0));
        assert_eq!(parse_grpc_status(b"14"), Some(14));
        assert_eq!(parse_grpc_status(b"4294967295"), Some(u32::MAX));
        for bad in [
            &b""[..],
            b"-1",
            b" 14",
            b"14 ",
            b"1e3",
            b"4294967296",
            b"99999999999",
            b"\xff",
        ] {
            assert_eq!(parse_grpc_status(bad), None, "{bad:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn flags_are_read_only_when_a_call_did_not_complete_below_400() {
        assert!(!flags_matter(200, true));
        assert!(!flags_matter(100, true) && !flags_matter(399, true));
        assert!(flags_matter(400, true) && flags_matter(99, true));
        assert!(flags_matter(200, false));
        assert!(flags_matter(0, true));
        assert!(
            !flags_matter(101, false),
            "an upgraded session's end is not a failure"
        );
    }
}
