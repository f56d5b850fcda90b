//! What an Envoy needs to show meshguard's metrics with labels: the
//! `stats_tags` and the duration-histogram buckets. Lives here (not in the
//! filter) because `meshguard render` writes it into deployment manifests.

/// Every label any meshguard metric uses, in the order they appear in names.
pub const LABELS: [&str; 8] = [
    "route",
    "variant",
    "code_class",
    "grpc_status",
    "policy",
    "outcome",
    "state",
    "signal",
];

/// Default duration-histogram buckets, in milliseconds.
pub const DURATION_BUCKETS_MS: [u64; 14] = [
    5, 10, 20, 30, 40, 50, 75, 100, 250, 500, 1000, 2500, 5000, 10000,
];

/// Name prefix (as Envoy stores it) of the duration histogram, for
/// `histogram_bucket_settings`.
pub const DURATION_STORED_PREFIX: &str = "wasmcustom.meshguard.request_duration_milliseconds";

/// Buckets of the rate limit service call histogram, in milliseconds.
pub const RPC_BUCKETS_MS: [u64; 13] = [1, 2, 5, 10, 20, 30, 50, 100, 250, 500, 1000, 2500, 5000];

/// Name prefix (as Envoy stores it) of the rate limit service call histogram.
pub const RPC_DURATION_STORED_PREFIX: &str =
    "wasmcustom.meshguard.ratelimit_rpc_duration_milliseconds";

/// Every histogram's stored name prefix and buckets: the
/// `histogram_bucket_settings` Envoy needs.
pub fn histogram_buckets() -> [(&'static str, &'static [u64]); 2] {
    [
        (DURATION_STORED_PREFIX, &DURATION_BUCKETS_MS),
        (RPC_DURATION_STORED_PREFIX, &RPC_BUCKETS_MS),
    ]
}

/// The native build's histograms as Envoy stores them: Envoy's dynamic-module
/// namespace and `meshguard_<metric>`, the labels kept as tags.
pub fn native_histogram_buckets() -> [(&'static str, &'static [u64]); 2] {
    [
        (
            "dynamicmodulescustom.meshguard_request_duration_milliseconds",
            &DURATION_BUCKETS_MS,
        ),
        (
            "dynamicmodulescustom.meshguard_ratelimit_rpc_duration_milliseconds",
            &RPC_BUCKETS_MS,
        ),
    ]
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

/// The native build's `stats_config`: histogram buckets only (its metrics
/// carry real labels, so no `stats_tags`).
pub fn native_stats_config_json() -> serde_json::Value {
    let buckets: Vec<serde_json::Value> = native_histogram_buckets()
        .into_iter()
        .map(|(prefix, b)| serde_json::json!({"match": {"prefix": prefix}, "buckets": b}))
        .collect();
    serde_json::json!({ "histogram_bucket_settings": buckets })
}

/// The whole `stats_config` as JSON.
pub fn stats_config_json() -> serde_json::Value {
    let tags: Vec<serde_json::Value> = stats_tags()
        .into_iter()
        .map(|(n, r)| serde_json::json!({"tag_name": n, "regex": r}))
        .collect();
    let buckets: Vec<serde_json::Value> = histogram_buckets()
        .into_iter()
        .map(|(prefix, b)| serde_json::json!({"match": {"prefix": prefix}, "buckets": b}))
        .collect();
    serde_json::json!({
        "stats_tags": tags,
        "histogram_bucket_settings": buckets
    })
}
