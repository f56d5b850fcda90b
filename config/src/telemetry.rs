//! What an Envoy needs to show meshguard's metrics with labels: the
//! `stats_tags` and the duration-histogram buckets. Lives here (not in the
//! filter) because `meshguard render` writes it into deployment manifests.

/// Every label any meshguard metric uses, in the order they appear in names.
pub const LABELS: [&str; 9] = [
    "route",
    "variant",
    "code_class",
    "grpc_status",
    "policy",
    "outcome",
    "state",
    "signal",
    "method",
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

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    /// The tag `label` that Envoy would cut from `stored`, by the regex it is given.
    fn tag_of(label: &str, stored: &str) -> Option<String> {
        let re = regex::Regex::new(&tag_regex(label)).ok()?;
        re.captures(stored)?.get(2).map(|m| m.as_str().to_string())
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_label_is_cut_from_a_stored_name_wherever_it_sits() {
        let stored =
            "wasmcustom.meshguard.requests_total.route.api-v2.variant.canary.code_class.5xx";
        assert_eq!(tag_of("route", stored).as_deref(), Some("api-v2"));
        assert_eq!(tag_of("variant", stored).as_deref(), Some("canary"));
        assert_eq!(tag_of("code_class", stored).as_deref(), Some("5xx"));
        assert_eq!(tag_of("policy", stored), None);
        // Only meshguard's own names, never another Wasm filter's.
        assert_eq!(
            tag_of("route", "wasmcustom.other.requests_total.route.api"),
            None
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stats_tags_name_every_label_once_in_order() {
        let tags = stats_tags();
        let names: Vec<&str> = tags.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, LABELS);
        for (name, regex) in &tags {
            assert_eq!(regex, &tag_regex(name));
            let stored = format!("wasmcustom.meshguard.m_total.{name}.v1");
            assert_eq!(tag_of(name, &stored).as_deref(), Some("v1"), "{name}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bucket_settings_pair_each_histogram_with_its_own_buckets() {
        assert_eq!(
            histogram_buckets(),
            [
                (DURATION_STORED_PREFIX, &DURATION_BUCKETS_MS[..]),
                (RPC_DURATION_STORED_PREFIX, &RPC_BUCKETS_MS[..]),
            ]
        );
        let native = native_histogram_buckets();
        assert_eq!(
            native.map(|(p, _)| p),
            [
                "dynamicmodulescustom.meshguard_request_duration_milliseconds",
                "dynamicmodulescustom.meshguard_ratelimit_rpc_duration_milliseconds",
            ]
        );
        assert_eq!(
            native.map(|(_, b)| b),
            [&DURATION_BUCKETS_MS[..], &RPC_BUCKETS_MS[..]]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stats_config_carries_tags_and_buckets_the_native_one_buckets_only() {
        let wasm = stats_config_json();
        let tags = wasm["stats_tags"].as_array().map(Vec::len);
        assert_eq!(tags, Some(LABELS.len()));
        assert_eq!(wasm["stats_tags"][2]["tag_name"], "code_class");
        assert_eq!(
            wasm["stats_tags"][2]["regex"],
            tag_regex("code_class").as_str()
        );
        let buckets = &wasm["histogram_bucket_settings"];
        assert_eq!(buckets[0]["match"]["prefix"], DURATION_STORED_PREFIX);
        assert_eq!(
            buckets[0]["buckets"],
            serde_json::json!(DURATION_BUCKETS_MS)
        );
        assert_eq!(buckets[1]["match"]["prefix"], RPC_DURATION_STORED_PREFIX);
        assert_eq!(buckets[1]["buckets"], serde_json::json!(RPC_BUCKETS_MS));
        assert_eq!(buckets.as_array().map(Vec::len), Some(2));

        let native = native_stats_config_json();
        assert!(native.get("stats_tags").is_none());
        let nb = &native["histogram_bucket_settings"];
        assert_eq!(nb.as_array().map(Vec::len), Some(2));
        assert_eq!(nb[0]["match"]["prefix"], native_histogram_buckets()[0].0);
        assert_eq!(nb[1]["match"]["prefix"], native_histogram_buckets()[1].0);
        assert_eq!(nb[1]["buckets"], serde_json::json!(RPC_BUCKETS_MS));
    }
}
