//! gRPC status codes in the configuration: which codes count as failures
//! (`failureGrpcCodes`), which code a local reply to a gRPC request carries
//! (`grpcStatus`), and how routes treat gRPC (`protocol`).

use crate::problem::{index, Problems};

// How a route treats gRPC (`routes[].protocol`): a raw config type.
pub use crate::raw::Protocol;

/// The 17 gRPC status codes by number, as the gRPC spec names them.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `UNKNOWN`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`: the
/// default failure codes (server-side trouble, as gRPC's retry guidance has it;
/// a client's bad argument or missing permission is not the upstream failing).
pub const DEFAULT_FAILURE_GRPC_CODES: [u32; 5] = [2, 4, 13, 14, 15];

/// `RESOURCE_EXHAUSTED`: a rate-limited gRPC request's default status.
pub const RESOURCE_EXHAUSTED: u32 = 8;
/// `UNAVAILABLE`: an open breaker's default status for gRPC requests.
pub const UNAVAILABLE: u32 = 14;

/// A code by name (`UNAVAILABLE`) or number (`"14"`).
pub fn parse_code(s: &str) -> Option<u32> {
    GRPC_CODES
        .iter()
        .position(|n| *n == s)
        .and_then(|i| u32::try_from(i).ok())
        .or_else(|| s.parse::<u32>().ok().filter(|c| *c <= 16))
}

/// The label value of a code: its name; codes beyond 16 are `UNKNOWN`, as gRPC
/// clients treat them.
pub fn code_name(code: u32) -> &'static str {
    GRPC_CODES
        .get(code as usize)
        .copied()
        .unwrap_or(GRPC_CODES[2])
}

/// Parses a `failureGrpcCodes` list at `path` (default when absent).
pub fn failure_codes(list: Option<&Vec<String>>, path: &str, p: &mut Problems) -> Vec<u32> {
    let Some(list) = list else {
        return DEFAULT_FAILURE_GRPC_CODES.to_vec();
    };
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        match parse_code(s) {
            Some(0) => p.push(index(path, i), "OK cannot be a failure"),
            Some(c) => out.push(c),
            None => p.push(index(path, i), unknown(s)),
        }
    }
    out
}

/// Parses a reply's `grpcStatus` at `path` (`default` when absent).
pub fn reply_code(value: Option<&String>, default: u32, path: &str, p: &mut Problems) -> u32 {
    match value {
        None => default,
        Some(s) => match parse_code(s) {
            Some(0) => {
                p.push(path, "a rejection cannot be OK");
                default
            }
            Some(c) => c,
            None => {
                p.push(path, unknown(s));
                default
            }
        },
    }
}

fn unknown(s: &str) -> String {
    format!("{s:?} is not a gRPC status code (a name such as UNAVAILABLE, or 1-16)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_by_name_and_number() {
        assert_eq!(parse_code("UNAVAILABLE"), Some(14));
        assert_eq!(parse_code("14"), Some(14));
        assert_eq!(parse_code("OK"), Some(0));
        assert_eq!(parse_code("16"), Some(16));
        assert_eq!(parse_code("17"), None);
        assert_eq!(parse_code("unavailable"), None);
        assert_eq!(code_name(8), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(99), "UNKNOWN");
        for (i, n) in GRPC_CODES.iter().enumerate() {
            assert_eq!(parse_code(n), Some(i as u32));
        }
    }

    fn problems(json: &str) -> Vec<String> {
        match crate::load_json(json.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(list) => list.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn bad_codes_name_their_field() {
        let route =
            |extra: &str| format!(r#"{{"schemaVersion":1,"routes":[{{"name":"r",{extra}}}]}}"#);
        for (json, want) in [
            (
                route(r#""breaker":{"failureGrpcCodes":["UNAVAILABLE","NOPE"]}"#),
                "routes[0].breaker.failureGrpcCodes[1]: \"NOPE\" is not a gRPC status code",
            ),
            (
                route(r#""breaker":{"failureGrpcCodes":["OK"]}"#),
                "routes[0].breaker.failureGrpcCodes[0]: OK cannot be a failure",
            ),
            (
                route(r#""breaker":{"whenOpen":{"grpcStatus":"0"}}"#),
                "routes[0].breaker.whenOpen.grpcStatus: a rejection cannot be OK",
            ),
            (
                route(
                    r#""rateLimits":[{"name":"a","limit":{"burst":1,"rate":1,"per":"second"},"response":{"grpcStatus":"17"}}]"#,
                ),
                "routes[0].rateLimits[0].response.grpcStatus: \"17\" is not a gRPC status code",
            ),
            (
                route(r#""protocol":"h2""#),
                "routes[0].protocol: unknown variant `h2`",
            ),
            (
                route(r#""latency":"firstByte""#),
                "routes[0].latency: unknown variant `firstByte`",
            ),
        ] {
            let got = problems(&json);
            assert!(
                got.len() == 1 && got[0].starts_with(want),
                "{json}: {got:?}"
            );
        }
    }

    #[test]
    fn an_analysis_takes_the_breakers_grpc_codes_unless_it_has_its_own() {
        let cfg = |analysis: &str| {
            format!(
                r#"{{"schemaVersion":1,"routes":[{{"name":"r","breaker":{{"failureGrpcCodes":["NOT_FOUND"]}},
                "canary":{{"variants":[{{"name":"a","weight":9000}},{{"name":"b","weight":1000}}],"revision":"x","analysis":{{{analysis}}}}}}}]}}"#
            )
        };
        let grpc = |json: &str| {
            let c = crate::load_json(json.as_bytes()).unwrap();
            let canary = c.routes[0].canary.clone().unwrap();
            canary.rollout.unwrap().analysis.unwrap().failures.grpc
        };
        assert_eq!(grpc(&cfg("")), vec![5]);
        assert_eq!(grpc(&cfg(r#""failureGrpcCodes":["14"]"#)), vec![14]);
        assert_eq!(grpc(&cfg(r#""failureStatuses":["5xx"]"#)), vec![5]);
    }
}
