//! Metric names and the Envoy `stats_tags` that turn them into Prometheus labels.
//!
//! Proxy-Wasm metrics have no labels, so labels are encoded in the name as
//! `.label.value` pairs after the metric's own name:
//! `meshguard.ratelimit_requests_total.policy.api.outcome.limited`. Envoy stores it
//! as `wasmcustom.meshguard.…`; one `stats_tags` regex per label, anchored at the
//! start of that full name and stepping over earlier pairs two segments at a
//! time, removes `.label.value` and keeps the value as the tag. Prometheus then
//! sees `meshguard_ratelimit_requests_total{policy="api",outcome="limited"}`.
//! Label values come only from config names (`A-Z a-z 0-9 _ -`) and fixed enums,
//! so the series count is fixed at configure time.

pub use meshguard_config::telemetry::{
    stats_tags, tag_regex, DURATION_BUCKETS_MS, DURATION_STORED_PREFIX, LABELS,
};

/// Rate-limit outcomes, the `outcome` label of `meshguard_ratelimit_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitOutcome {
    /// The bucket had a token.
    Allowed = 0,
    /// Rejected.
    Limited = 1,
    /// Would have been rejected; shadow mode let it through.
    ShadowLimited = 2,
    /// The store failed; the policy's failure mode allowed the request.
    ErrorAllowed = 3,
    /// The store failed; the policy's failure mode rejected the request.
    ErrorDenied = 4,
}

/// Label values of [`RateLimitOutcome`], by discriminant.
pub const RATELIMIT_OUTCOMES: [&str; 5] = [
    "allowed",
    "limited",
    "shadow_limited",
    "error_allowed",
    "error_denied",
];

/// `meshguard.ratelimit_requests_total.policy.<policy>.outcome.<outcome>`.
pub fn ratelimit_requests(policy: &str, outcome: &str) -> String {
    format!("meshguard.ratelimit_requests_total.policy.{policy}.outcome.{outcome}")
}

/// Status classes, the `code_class` label; `none` when no response was sent
/// (the client went away first).
pub const CODE_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// Index into [`CODE_CLASSES`] of a final status (0: no response).
pub fn code_class(status: u64) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// The route label of requests that match no route.
pub const UNMATCHED_ROUTE: &str = "other";
/// The variant label of requests on routes without a canary policy.
pub const NO_VARIANT: &str = "none";

/// `meshguard.requests_total.route.<r>.variant.<v>.code_class.<c>`.
pub fn requests_total(route: &str, variant: &str, class: &str) -> String {
    format!("meshguard.requests_total.route.{route}.variant.{variant}.code_class.{class}")
}

/// `meshguard.request_duration_milliseconds.route.<r>.variant.<v>`.
pub fn request_duration(route: &str, variant: &str) -> String {
    format!("meshguard.request_duration_milliseconds.route.{route}.variant.{variant}")
}

/// `meshguard.requests_in_flight.route.<r>`.
pub fn requests_in_flight(route: &str) -> String {
    format!("meshguard.requests_in_flight.route.{route}")
}

/// `meshguard.breaker_state.route.<route>.variant.<variant>` (gauge 0/1/2).
pub fn breaker_state(route: &str, variant: &str) -> String {
    format!("meshguard.breaker_state.route.{route}.variant.{variant}")
}

/// `meshguard.breaker_transitions_total.route.<r>.variant.<v>.state.<target>`.
pub fn breaker_transitions(route: &str, variant: &str, target: &str) -> String {
    format!("meshguard.breaker_transitions_total.route.{route}.variant.{variant}.state.{target}")
}

/// `meshguard.breaker_rejected_total.route.<r>.variant.<v>.outcome.<why>`.
pub fn breaker_rejected(route: &str, variant: &str, why: &str) -> String {
    format!("meshguard.breaker_rejected_total.route.{route}.variant.{variant}.outcome.{why}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn names_put_labels_after_the_metric_name() {
        assert_eq!(
            ratelimit_requests(
                "per-client",
                RATELIMIT_OUTCOMES[RateLimitOutcome::ShadowLimited as usize]
            ),
            "meshguard.ratelimit_requests_total.policy.per-client.outcome.shadow_limited"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn status_codes_map_to_classes() {
        let class = |s| CODE_CLASSES[code_class(s)];
        assert_eq!(
            [
                class(101),
                class(200),
                class(304),
                class(429),
                class(503),
                class(0),
                class(999)
            ],
            ["1xx", "2xx", "3xx", "4xx", "5xx", "none", "none"]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn tag_regexes_are_anchored_and_named_per_label() {
        let tags = stats_tags();
        assert_eq!(tags.len(), LABELS.len());
        assert!(tags
            .iter()
            .all(|(_, r)| r.starts_with(r"^wasmcustom\.meshguard\.")));
        assert_eq!(
            tag_regex("policy"),
            r"^wasmcustom\.meshguard\.[a-z_]+(?:\.[a-z_]+\.[A-Za-z0-9_-]+)*?(\.policy\.([A-Za-z0-9_-]+))"
        );
    }
}
