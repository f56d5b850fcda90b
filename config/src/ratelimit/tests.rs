use crate::ratelimit::KeyPart;
use crate::{load_json, Problem};
use wasm_bindgen_test::wasm_bindgen_test;

fn problems(json: &str) -> Vec<String> {
    match load_json(json.as_bytes()) {
        Ok(_) => Vec::new(),
        Err(list) => list.iter().map(Problem::to_string).collect(),
    }
}

fn policy(body: &str) -> Vec<String> {
    problems(&format!(
        r#"{{"schemaVersion":1,"rateLimits":[{{"name":"p",{body}}}]}}"#
    ))
}

const LIMIT: &str = r#""limit":{"burst":10,"rate":20,"per":"second"}"#;

#[wasm_bindgen_test(unsupported = test)]
fn a_complete_policy_compiles_with_derived_numbers() {
    let c = load_json(
        br#"{"schemaVersion":1,
             "rateLimits":[{"name":"per-client","key":[{"clientAddress":{}}],"limit":{"burst":10,"rate":20,"per":"second"},
                            "headers":{"onAllowed":true,"legacy":true},"response":{"status":503,"body":"slow down"}}],
             "routes":[{"name":"api","rateLimits":[{"name":"per-key","key":[{"header":"x-api-key"},{"route":true},{"constant":"v1"}],
                                                    "limit":{"burst":100,"rate":3,"per":"hour"},"maxKeys":50,"shadow":true,"onStoreError":"deny"}]}]}"#,
    )
    .unwrap();
    assert_eq!(c.top_level_rate_limits, vec![0]);
    assert_eq!(c.routes[0].rate_limits, vec![1]);
    let g = &c.rate_limits[0];
    assert_eq!(
        (g.burst, g.interval_ns, g.window_s, g.status),
        (10, 50_000_000, 1, 503)
    );
    let r = &c.rate_limits[1];
    assert_eq!(r.interval_ns, 1_200_000_000_000);
    assert_eq!(r.window_s, 120_000); // 100 tokens at 20 minutes each
    assert_eq!(r.max_keys, 50);
    assert!(r.shadow);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_daily_limit_keyed_by_cookie_and_query_compiles() {
    let c = load_json(
        br#"{"schemaVersion":1,"rateLimits":[{"name":"daily","key":[{"cookie":"tenant"},{"query":"plan"}],
             "limit":{"burst":1000,"rate":1000,"per":"day"}}]}"#,
    )
    .unwrap();
    let d = &c.rate_limits[0];
    assert_eq!(d.interval_ns, 86_400_000_000);
    assert_eq!(d.window_s, 86_400);
    assert_eq!(
        d.key,
        vec![
            KeyPart::Cookie("tenant".into()),
            KeyPart::Query("plan".into())
        ]
    );
    // The most a day can hold keeps its numbers in range.
    let max = load_json(
        br#"{"schemaVersion":1,"rateLimits":[{"name":"m","limit":{"burst":1000000000,"rate":1,"per":"day"}}]}"#,
    )
    .unwrap();
    assert_eq!(max.rate_limits[0].window_s, 86_400_000_000_000);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_cost_is_bounded_by_the_bucket_and_named_by_its_path() {
    use crate::ratelimit::CompiledCost;
    let c = load_json(
        br#"{"schemaVersion":1,"rateLimits":[
            {"name":"a","cost":5,"limit":{"burst":10,"rate":10,"per":"minute"}},
            {"name":"b","cost":{"header":"x-cost","max":10},"limit":{"burst":10,"rate":10,"per":"minute"}},
            {"name":"c","limit":{"burst":10,"rate":10,"per":"minute"}}]}"#,
    )
    .unwrap();
    assert_eq!(c.rate_limits[0].cost, CompiledCost::Fixed(5));
    assert_eq!(
        c.rate_limits[1].cost,
        CompiledCost::Header {
            name: "x-cost".into(),
            default: 1,
            max: 10
        }
    );
    assert_eq!(c.rate_limits[2].cost, CompiledCost::Fixed(1));
    const L: &str = r#""limit":{"burst":10,"rate":10,"per":"minute"}"#;
    assert_eq!(
        policy(&format!(r#""cost":11,{L}"#)),
        vec!["rateLimits[0].cost: must be 1 to 10 (the bucket's burst: a costlier request could never pass), got 11"]
    );
    assert_eq!(policy(&format!(r#""cost":0,{L}"#)).len(), 1);
    assert_eq!(
        policy(&format!(
            r#""cost":{{"header":"X-Cost","max":20,"default":0}},{L}"#
        )),
        vec![
            "rateLimits[0].cost.header: must be lowercase (Envoy stores header names lowercased): use \"x-cost\"",
            "rateLimits[0].cost.max: must be 1 to 10 (the bucket's burst: a costlier request could never pass), got 20",
            "rateLimits[0].cost.default: must be 1 to 20 (at most max), got 0",
        ]
    );
    let got = policy(&format!(r#""cost":{{"header":"x-cost"}},{L}"#));
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("rateLimits[0].cost: "), "{got:?}");
}

#[wasm_bindgen_test(unsupported = test)]
fn a_header_cost_takes_whole_numbers_from_one_and_caps_them_at_max() {
    use crate::ratelimit::CompiledCost;
    let c = CompiledCost::Header {
        name: "x-cost".into(),
        default: 2,
        max: 100,
    };
    let of = |v: &[u8]| c.of(Some(v));
    assert_eq!(of(b"7"), 7);
    assert_eq!(of(b" 42 "), 42);
    assert_eq!(of(b"100"), 100);
    assert_eq!(of(b"101"), 100, "capped");
    assert_eq!(
        of(b"99999999999999999999999"),
        100,
        "too long to parse: capped"
    );
    for bad in [
        &b""[..],
        b"0",
        b"-3",
        b"+3",
        b"1.5",
        b"1e3",
        b"abc",
        b"\xff",
    ] {
        assert_eq!(of(bad), 2, "{bad:?}: the default");
    }
    assert_eq!(c.of(None), 2, "absent: the default");
    assert_eq!(CompiledCost::Fixed(3).of(Some(b"9")), 3);
}

#[wasm_bindgen_test(unsupported = test)]
fn store_prefix_changes_with_the_limit_and_not_otherwise() {
    let id = |limit: &str, extra: &str| {
        let json = format!(
            r#"{{"schemaVersion":1,"rateLimits":[{{"name":"p","limit":{limit}{extra}}}]}}"#
        );
        load_json(json.as_bytes()).unwrap().rate_limits[0]
            .store_id
            .clone()
    };
    let base = id(r#"{"burst":5,"rate":5,"per":"second"}"#, "");
    assert_eq!(
        base,
        id(
            r#"{"burst":5,"rate":5,"per":"second"}"#,
            r#","shadow":true"#
        )
    );
    assert_ne!(base, id(r#"{"burst":6,"rate":5,"per":"second"}"#, ""));
    assert_ne!(base, id(r#"{"burst":5,"rate":5,"per":"minute"}"#, ""));
    assert_ne!(
        base,
        id(r#"{"burst":5,"rate":5,"per":"second"}"#, r#","maxKeys":7"#)
    );
    assert!(base.starts_with("p."));
}

#[wasm_bindgen_test(unsupported = test)]
fn zero_rate_and_zero_burst_are_refused() {
    assert_eq!(
        policy(r#""limit":{"burst":0,"rate":0,"per":"second"}"#),
        vec![
            "rateLimits[0].limit.burst: must be 1 to 1000000000, got 0",
            "rateLimits[0].limit.rate: must be 1 to 1000000000, got 0"
        ]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn negative_rate_is_refused_with_its_path() {
    let got = policy(r#""limit":{"burst":5,"rate":-5,"per":"second"}"#);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("rateLimits[0].limit.rate: invalid value: integer `-5`"),
        "{got:?}"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn bad_period_is_refused() {
    assert_eq!(
        policy(r#""limit":{"burst":5,"rate":5,"per":"fortnight"}"#),
        vec!["rateLimits[0].limit.per: must be second, minute, hour or day, got \"fortnight\""]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn unknown_descriptor_is_refused() {
    let got = policy(&format!(r#""key":[{{"jwtClaim":"x"}}],{LIMIT}"#));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("rateLimits[0].key[0].jwtClaim: unknown field `jwtClaim`"),
        "{got:?}"
    );
    assert_eq!(
        policy(&format!(r#""key":[{{}}],{LIMIT}"#)),
        vec!["rateLimits[0].key[0]: give exactly one of clientAddress, header, path, method, route, constant, cookie, query; got none"]
    );
    assert_eq!(
        policy(&format!(r#""key":[{{"cookie":"a;b"}},{{"query":""}},{{"cookie":"s","query":"q"}}],{LIMIT}"#)),
        vec![
            "rateLimits[0].key[0].cookie: \"a;b\" is not a usable cookie name",
            "rateLimits[0].key[1].query: \"\" is not a usable query parameter name",
            "rateLimits[0].key[2]: give exactly one of clientAddress, header, path, method, route, constant, cookie, query; got cookie, query",
        ]
    );
    assert_eq!(
        policy(&format!(r#""key":[{{"header":"X-Api-Key"}},{{"constant":""}},{{"clientAddress":{{"ipv6Prefix":0}}}}],{LIMIT}"#)),
        vec![
            "rateLimits[0].key[0].header: must be lowercase (Envoy stores header names lowercased): use \"x-api-key\"",
            "rateLimits[0].key[1].constant: must not be empty",
            "rateLimits[0].key[2].clientAddress.ipv6Prefix: must be 1 to 128, got 0",
        ]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn names_are_unique_across_top_level_and_route_policies() {
    let got = problems(&format!(
        r#"{{"schemaVersion":1,"rateLimits":[{{"name":"p",{LIMIT}}}],"routes":[{{"name":"r","rateLimits":[{{"name":"p",{LIMIT}}}]}}]}}"#
    ));
    assert_eq!(
        got,
        vec!["routes[0].rateLimits[0].name: duplicate rate-limit policy name \"p\""]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn response_and_max_keys_are_bounded() {
    assert_eq!(
        policy(&format!(
            r#"{LIMIT},"maxKeys":0,"response":{{"status":200}}"#
        )),
        vec![
            "rateLimits[0].maxKeys: must be 1 to 1000000, got 0",
            "rateLimits[0].response.status: must be 400 to 599, got 200"
        ]
    );
}

const SERVICE: &str = r#""rateLimitService":{"cluster":"ratelimit","domain":"meshguard"}"#;

fn global(body: &str) -> Vec<String> {
    problems(&format!(
        r#"{{"schemaVersion":1,{SERVICE},"rateLimits":[{{"name":"g",{body}}}]}}"#
    ))
}

#[wasm_bindgen_test(unsupported = test)]
fn a_global_policy_compiles_with_its_service_and_entry_keys() {
    let c = load_json(
        format!(
            r#"{{"schemaVersion":1,{SERVICE},"rateLimits":[{{"name":"fleet",
                "key":[{{"clientAddress":{{}}}},{{"header":"x-api-key","descriptorKey":"api_key"}},{{"route":true}},{{"constant":"v1"}}],
                "global":{{"lease":{{"hits":20}},"fallback":{{"burst":50,"rate":50,"per":"second"}}}}}}]}}"#
        )
        .as_bytes(),
    )
    .unwrap();
    let s = c.rate_limit_service.unwrap();
    assert_eq!(
        (s.cluster.as_str(), s.domain.as_str(), s.timeout_ms),
        ("ratelimit", "meshguard", 20)
    );
    assert_eq!((s.errors_before_backoff, s.backoff_ns), (5, 1_000_000_000));
    let p = &c.rate_limits[0];
    let g = p.global.as_ref().unwrap();
    assert_eq!(
        g.entry_keys,
        ["remote_address", "api_key", "route", "generic_key"]
    );
    assert_eq!(g.lease, Some((20, 100_000_000)));
    assert!(g.fallback);
    assert_eq!(p.burst, 50, "the bucket is the fallback limit");
    // Without a fallback there is no bucket to speak of, and that is fine.
    assert!(global(r#""global":{}"#).is_empty());
}

#[wasm_bindgen_test(unsupported = test)]
fn bad_global_policies_and_services_name_their_fields() {
    assert_eq!(
        policy(r#""global":{}"#),
        vec![
            "rateLimits[0].global: needs rateLimitService (the service that decides for the fleet)"
        ]
    );
    assert_eq!(
        global(&format!(r#"{LIMIT},"global":{{"lease":{{"hits":0}}}}"#)),
        vec![
            "rateLimits[0].global.lease.hits: must be 1 to 100000, got 0",
            "rateLimits[0].limit: a global policy's limit is set on the rate limit service; give global.fallback for the local limit during outages",
        ]
    );
    assert_eq!(
        global(r#""global":{"lease":{"hits":5,"ttlMs":0}},"headers":{"onAllowed":true}"#),
        vec![
            "rateLimits[0].global.lease.ttlMs: must be 1 to 60000, got 0",
            "rateLimits[0].headers.onAllowed: not for global policies: the service's response headers are passed through",
        ]
    );
    assert_eq!(
        global(r#""global":{"fallback":{"burst":0,"rate":1,"per":"second"}}"#),
        vec!["rateLimits[0].global.fallback.burst: must be 1 to 1000000000, got 0"]
    );
    assert_eq!(
        policy(r#""key":[{"route":true,"descriptorKey":"r"}]"#),
        vec![
            "rateLimits[0].key[0].descriptorKey: only for global policies (the rate limit service's descriptor entries)",
            "rateLimits[0].limit: required: the bucket, e.g. {burst: 10, rate: 10, per: second}",
        ]
    );
    let svc = |s: &str| {
        problems(&format!(
            r#"{{"schemaVersion":1,"rateLimitService":{s},"rateLimits":[{{"name":"g","global":{{}}}}]}}"#
        ))
    };
    assert_eq!(
        svc(r#"{"cluster":"","domain":"","timeoutMs":0,"errorsBeforeBackoff":0,"backoffMs":0}"#),
        vec![
            "rateLimitService.cluster: \"\" is not a usable Envoy cluster name",
            "rateLimitService.domain: must be a non-empty name",
            "rateLimitService.timeoutMs: must be 1 to 10000, got 0",
            "rateLimitService.errorsBeforeBackoff: must be 1 to 1000, got 0",
            "rateLimitService.backoffMs: must be 1 to 600000, got 0",
        ]
    );
    assert_eq!(
        svc(r#"{"cluster":"rls","domain":"d","timeoutMs":10001}"#),
        vec!["rateLimitService.timeoutMs: must be 1 to 10000, got 10001"]
    );
    assert!(svc(r#"{"cluster":"rls","domain":"d","timeoutMs":10000}"#).is_empty());
}

#[wasm_bindgen_test(unsupported = test)]
fn a_remembered_rejection_lasts_overlimitcachems_and_bodies_end_at_4096_bytes() {
    let c = load_json(
        format!(
            r#"{{"schemaVersion":1,{SERVICE},"rateLimits":[{{"name":"fleet","key":[{{"route":true}}],
                "global":{{"overLimitCacheMs":1500}}}}]}}"#
        )
        .as_bytes(),
    )
    .unwrap();
    let g = c.rate_limits[0].global.as_ref().unwrap();
    assert_eq!(g.over_limit_cache_ns, 1_500_000_000);
    let body = |n: usize| {
        policy(&format!(
            r#"{LIMIT},"response":{{"body":"{}"}}"#,
            "b".repeat(n)
        ))
    };
    assert_eq!(body(4096), Vec::<String>::new());
    assert_eq!(
        body(4097),
        vec!["rateLimits[0].response.body: must be at most 4096 bytes"]
    );
}
