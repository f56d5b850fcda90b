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

/// Every label any meshguard metric uses, in the order they appear in names.
pub const LABELS: [&str; 6] = [
    "route",
    "variant",
    "code_class",
    "policy",
    "outcome",
    "state",
];

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

/// The regex extracting `label` from a full stored name (`wasmcustom.meshguard.…`).
pub fn tag_regex(label: &str) -> String {
    format!(
        r"^wasmcustom\.meshguard\.[a-z_]+(?:\.[a-z_]+\.[A-Za-z0-9_-]+)*?(\.{label}\.([A-Za-z0-9_-]+))"
    )
}

/// `(tag_name, regex)` for every label: the `stats_config.stats_tags` Envoy needs.
pub fn stats_tags() -> Vec<(&'static str, String)> {
    LABELS.iter().map(|l| (*l, tag_regex(l))).collect()
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
