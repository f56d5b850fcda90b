use super::*;
use crate::{load_json, Problem};
use wasm_bindgen_test::wasm_bindgen_test;

fn problems(canary: &str) -> Vec<String> {
    let json = format!(r#"{{"schemaVersion":1,"routes":[{{"name":"web","canary":{canary}}}]}}"#);
    match load_json(json.as_bytes()) {
        Ok(_) => Vec::new(),
        Err(list) => list.iter().map(Problem::to_string).collect(),
    }
}

const TWO: &str = r#""variants":[{"name":"stable","weight":9500},{"name":"canary","weight":500}]"#;

#[wasm_bindgen_test(unsupported = test)]
fn baseline_sits_at_the_bottom_and_others_stack_from_the_top() {
    assert_eq!(slices([9500, 500].into_iter()), vec![(9500, 0), (10000, 1)]);
    assert_eq!(
        slices([7000, 2000, 1000].into_iter()),
        vec![(7000, 0), (8000, 2), (10000, 1)]
    );
    assert_eq!(slices([10000, 0].into_iter()), vec![(10000, 0)]);
    assert_eq!(slices([0, 10000].into_iter()), vec![(10000, 1)]);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_complete_policy_compiles() {
    let got = problems(&format!(
        r#"{{{TWO},"rules":[{{"variant":"canary","header":{{"name":"x-user-type","exact":"beta-tester"}}}},
            {{"variant":"canary","cookie":{{"name":"beta","exact":"1"}}}},
            {{"variant":"canary","query":{{"name":"canary","present":true}},"trustedOnly":true}}],
           "sticky":{{"cookie":"mg-user","salt":"2026-11","issueCookie":{{"maxAgeSeconds":60,"secure":false}}}},
           "trustedSources":["10.0.0.0/8","fd00::/8"],"respondWithVariant":true}}"#
    ));
    assert_eq!(got, Vec::<String>::new());
}

#[wasm_bindgen_test(unsupported = test)]
fn weights_must_sum_to_10000() {
    assert_eq!(
        problems(
            r#"{"variants":[{"name":"stable","weight":9000},{"name":"canary","weight":500}]}"#
        ),
        vec!["routes[0].canary.variants: weights must sum to 10000 basis points, got 9500"]
    );
    assert_eq!(
        problems(r#"{"variants":[{"name":"stable","weight":20000},{"name":"canary","weight":0}]}"#),
        vec![
            "routes[0].canary.variants[0].weight: must be 0 to 10000 basis points, got 20000",
            "routes[0].canary.variants: weights must sum to 10000 basis points, got 20000"
        ]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_rule_naming_an_unknown_variant_is_refused() {
    assert_eq!(
        problems(&format!(
            r#"{{{TWO},"rules":[{{"variant":"canry","header":{{"name":"x","present":true}}}}]}}"#
        )),
        vec!["routes[0].canary.rules[0].variant: unknown variant \"canry\""]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn duplicate_and_too_few_variants_are_refused() {
    assert_eq!(
        problems(r#"{"variants":[{"name":"a","weight":5000},{"name":"a","weight":5000}]}"#),
        vec!["routes[0].canary.variants[1].name: duplicate variant \"a\""]
    );
    assert_eq!(
        problems(r#"{"variants":[{"name":"only","weight":10000}]}"#),
        vec!["routes[0].canary.variants: need 2 to 16 variants, got 1"]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn an_empty_sticky_key_is_refused() {
    assert_eq!(
        problems(&format!(r#"{{{TWO},"sticky":{{"header":""}}}}"#)),
        vec!["routes[0].canary.sticky.header: must not be empty"]
    );
    assert_eq!(
        problems(&format!(r#"{{{TWO},"sticky":{{"cookie":""}}}}"#)),
        vec!["routes[0].canary.sticky.cookie: \"\" is not a valid cookie name"]
    );
    assert_eq!(
        problems(&format!(r#"{{{TWO},"sticky":{{}}}}"#)),
        vec![
            "routes[0].canary.sticky: give exactly one of header, cookie, clientAddress; got none"
        ]
    );
    assert_eq!(
        problems(&format!(
            r#"{{{TWO},"sticky":{{"header":"x-user-id","salt":""}}}}"#
        )),
        vec!["routes[0].canary.sticky.salt: must not be empty (omit it to use the route name)"]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn rule_needs_exactly_one_source() {
    assert_eq!(
        problems(&format!(
            r#"{{{TWO},"rules":[{{"variant":"canary","header":{{"name":"x","present":true}},"query":{{"name":"q","present":true}}}}]}}"#
        )),
        vec!["routes[0].canary.rules[0]: give exactly one of header, cookie, query; got header, query"]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn trust_settings_are_checked() {
    assert_eq!(
        problems(&format!(r#"{{{TWO},"trustedSources":["10.0.0.0/33"]}}"#)),
        vec!["routes[0].canary.trustedSources[0]: \"10.0.0.0/33\": prefix length must be 0 to 32"]
    );
    assert_eq!(
        problems(&format!(
            r#"{{{TWO},"rules":[{{"variant":"canary","header":{{"name":"x","present":true}},"trustedOnly":true}}]}}"#
        )),
        vec!["routes[0].canary.rules[0].trustedOnly: no caller can be trusted: set trustedSources, or drop trustedOnly"]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn issued_cookie_needs_a_cookie_key_and_sane_attributes() {
    assert_eq!(
        problems(&format!(
            r#"{{{TWO},"sticky":{{"header":"x-user-id","issueCookie":{{}}}}}}"#
        )),
        vec!["routes[0].canary.sticky.issueCookie: needs a cookie key (sticky.cookie)"]
    );
    assert_eq!(
        problems(&format!(r#"{{{TWO},"sticky":{{"cookie":"u","issueCookie":{{"maxAgeSeconds":0,"path":"x;y"}}}}}}"#)),
        vec![
            "routes[0].canary.sticky.issueCookie.maxAgeSeconds: must be 1 to 34560000 (400 days), got 0",
            "routes[0].canary.sticky.issueCookie.path: must start with '/' and contain no ';', ',', spaces or control characters"
        ]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn cluster_names_default_to_variant_names_and_must_be_usable() {
    let json = format!(r#"{{"schemaVersion":1,"routes":[{{"name":"web","canary":{{{TWO}}}}}]}}"#);
    let c = load_json(json.as_bytes()).unwrap();
    let p = c.routes[0].canary.as_ref().unwrap();
    assert_eq!(p.variants[1].cluster, "canary");
    assert_eq!(
        problems(r#"{"variants":[{"name":"stable","weight":10000,"cluster":"has space"},{"name":"canary"}]}"#),
        vec!["routes[0].canary.variants[0].cluster: \"has space\" is not a usable Envoy cluster name"]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn variant_and_cluster_headers_must_be_distinct_valid_headers() {
    let got = load_json(
        br#"{"schemaVersion":1,"variantHeader":"x-v","clusterHeader":"x-v","routeHeader":"x-v"}"#,
    )
    .unwrap_err()
    .iter()
    .map(Problem::to_string)
    .collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            "clusterHeader: must differ from variantHeader (\"x-v\")",
            "routeHeader: \"x-v\" is already the variant or cluster header"
        ]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn metric_label_values_of_our_own_are_reserved() {
    assert_eq!(
        problems(r#"{"variants":[{"name":"none","weight":5000},{"name":"all","weight":5000}]}"#),
        vec![
            "routes[0].canary.variants[0].name: \"none\" is reserved (it labels metrics of routes without variants)",
            "routes[0].canary.variants[1].name: \"all\" is reserved (it labels metrics of routes without variants)",
        ]
    );
}

/// The compiled canary of a one-route config with `canary`.
fn compiled(canary: &str) -> CompiledCanary {
    let route = crate::tests::web_route(&format!(r#""canary":{canary}"#));
    route.canary.unwrap()
}

/// `n` variants, the first holding every bucket.
fn variants(n: usize) -> String {
    let list: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"name":"v{i}","weight":{}}}"#,
                if i == 0 { 10_000 } else { 0 }
            )
        })
        .collect();
    format!(r#"{{"variants":[{}]}}"#, list.join(","))
}

#[wasm_bindgen_test(unsupported = test)]
fn variant_counts_and_cluster_names_at_their_bounds() {
    assert_eq!(problems(&variants(MAX_VARIANTS)), Vec::<String>::new());
    assert_eq!(
        problems(&variants(MAX_VARIANTS + 1)),
        vec!["routes[0].canary.variants: need 2 to 16 variants, got 17"]
    );
    let cluster = |c: &str| {
        problems(&format!(
            r#"{{"variants":[{{"name":"stable","weight":10000,"cluster":"{c}"}},{{"name":"canary","weight":0}}]}}"#
        ))
    };
    assert_eq!(cluster(&"c".repeat(255)), Vec::<String>::new());
    assert_eq!(cluster(&"c".repeat(256)).len(), 1);
    assert_eq!(
        cluster(""),
        vec![r#"routes[0].canary.variants[0].cluster: "" is not a usable Envoy cluster name"#]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn each_rule_kind_compiles_to_its_own_source_and_name_check() {
    let c = compiled(&format!(
        r#"{{{TWO},"rules":[{{"variant":"canary","header":{{"name":"x-a","present":true}}}},
            {{"variant":"canary","cookie":{{"name":"b","present":true}}}},
            {{"variant":"canary","query":{{"name":"c","present":true}}}}]}}"#
    ));
    let sources: Vec<String> = c
        .rules
        .iter()
        .map(|r| match &r.source {
            RuleSource::Header(n) => format!("header {n}"),
            RuleSource::Cookie(n) => format!("cookie {n}"),
            RuleSource::Query(n) => format!("query {n}"),
        })
        .collect();
    assert_eq!(sources, vec!["header x-a", "cookie b", "query c"]);
    // A header name is checked as a header name (lowercase token), which a
    // cookie or query name need not be.
    let upper = |kind: &str| {
        problems(&format!(
            r#"{{{TWO},"rules":[{{"variant":"canary","{kind}":{{"name":"X-Up","present":true}}}}]}}"#
        ))
    };
    assert_eq!(upper("cookie"), Vec::<String>::new());
    assert_eq!(
        upper("header"),
        vec![
            r#"routes[0].canary.rules[0].header.name: must be lowercase (Envoy stores header names lowercased): use "x-up""#
        ]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn an_issued_cookie_lives_thirty_days_by_default() {
    let c = compiled(&format!(
        r#"{{{TWO},"sticky":{{"cookie":"mg","issueCookie":{{}}}}}}"#
    ));
    let issued = c.sticky.and_then(|s| s.issue_cookie).unwrap_or_default();
    assert!(issued.starts_with("Max-Age=2592000; "), "{issued}");
}

#[wasm_bindgen_test(unsupported = test)]
fn an_issued_cookies_path_is_checked_for_each_flaw() {
    let path = |p: &str| {
        problems(&format!(
            r#"{{{TWO},"sticky":{{"cookie":"mg","issueCookie":{{"path":"{p}"}}}}}}"#
        ))
    };
    assert_eq!(path("/app"), Vec::<String>::new());
    for bad in ["app", "/a;b", "/a b", "/a,b", "/a\\u0001"] {
        assert_eq!(
            path(bad),
            vec!["routes[0].canary.sticky.issueCookie.path: must start with '/' and contain no ';', ',', spaces or control characters"],
            "{bad:?}"
        );
    }
}
