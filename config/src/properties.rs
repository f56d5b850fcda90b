//! Property tests (the config's fuzz targets): whatever bytes or JSON an operator
//! or a control plane hands the filter, parsing and validation return a config or
//! problems that each name a path, and never panic. `make test` runs a bounded
//! number of cases; `make fuzz` runs them for a chosen time.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::{load_json, parse_yaml, validate::validate};

/// Field names the config uses, so generated documents reach deep into validation.
const KEYS: &[&str] = &[
    "schemaVersion",
    "routes",
    "name",
    "match",
    "pathPrefix",
    "pathExact",
    "pathRegex",
    "authority",
    "methods",
    "headers",
    "exact",
    "prefix",
    "regex",
    "present",
    "canary",
    "variants",
    "cluster",
    "weight",
    "rules",
    "variant",
    "header",
    "cookie",
    "query",
    "sticky",
    "trustedSources",
    "trustedOnly",
    "revision",
    "analysis",
    "alpha",
    "ramp",
    "steps",
    "rateLimits",
    "key",
    "clientAddress",
    "limit",
    "burst",
    "rate",
    "per",
    "maxKeys",
    "shadow",
    "global",
    "lease",
    "hits",
    "breaker",
    "window",
    "calls",
    "seconds",
    "consecutiveFailures",
    "maxConcurrent",
    "whenOpen",
    "fallbackVariant",
    "failureStatuses",
    "failureGrpcCodes",
    "protocol",
    "latency",
    "explain",
    "filterState",
    "statusPath",
    "askHeader",
    "rateLimitService",
    "fleetService",
    "fleet",
    "whileUnreachable",
    "syncMs",
    "unreachableAfterMs",
    "domain",
    "timeoutMs",
    "metrics",
    "unmatched",
    "counters",
    "routeHeader",
    "variantHeader",
    "requestHeaders",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..20_000).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "/",
            "/api",
            "stable",
            "canary",
            "second",
            "5xx",
            "a.b",
            "*",
            "10.0.0.0/8",
            "x-user"
        ])
        .prop_map(Value::from),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                let mut m = Map::new();
                for (k, v) in kv {
                    m.insert(k.to_string(), v);
                }
                Value::Object(m)
            }),
        ]
    })
}

/// Valid configs to mutate: every feature, so a mutation lands deep in validation.
const SEEDS: &[&str] = &[
    r#"{"schemaVersion":1,"routeHeader":"x-r","explain":{"trustedSources":["10.0.0.0/8"],"filterState":true,"header":true,"statusPath":"/s"},
        "rateLimitService":{"cluster":"rls","domain":"d","timeoutMs":20},
        "fleetService":{"cluster":"fleet","syncMs":250,"timeoutMs":100},
        "rateLimits":[{"name":"per-client","key":[{"clientAddress":{}}],"limit":{"burst":5,"rate":5,"per":"second"},"headers":{"onAllowed":true}},
                      {"name":"fleet","key":[{"header":"x-k"}],"global":{"lease":{"hits":5},"fallback":{"burst":1,"rate":1,"per":"second"}}}],
        "routes":[{"name":"api","match":{"pathPrefix":"/api","methods":["GET"],"headers":[{"name":"x-a","exact":"1"}]},
                   "canary":{"variants":[{"name":"stable","cluster":"s"},{"name":"canary","cluster":"c"}],
                             "rules":[{"variant":"canary","header":{"name":"x-beta","exact":"1"}},{"variant":"stable","cookie":{"name":"pin","exact":"s"}}],
                             "sticky":{"header":"x-user"},"trustedSources":["10.0.0.0/8"],"revision":"r1",
                             "analysis":{"alpha":0.01,"minRequests":20,"slowCallMs":500},"ramp":{"steps":[500,5000,10000],"holdSeconds":10},
                             "fleet":{"whileUnreachable":"local"}},
                   "breaker":{"consecutiveFailures":5,"failureRateThreshold":50,"window":{"calls":100},"maxConcurrent":10,
                              "whenOpen":{"fallbackVariant":"stable"},"failureStatuses":["5xx","429"]},
                   "protocol":"grpc","latency":"headers"},
                  {"name":"web","match":{"pathRegex":"/w/[a-z]+"}}]}"#,
    r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{"slowCall":{"durationMs":100,"rateThreshold":50},"window":{"seconds":10}}}],
        "metrics":{"unmatched":"skip","counters":"immediate"},"requestHeaders":"all","routingHeaders":"variant"}"#,
];

/// `doc` with the subtree at the `pick`-th position (in document order) replaced.
fn mutate(doc: &mut Value, pick: &mut usize, with: &Value) -> bool {
    if *pick == 0 {
        *doc = with.clone();
        return true;
    }
    *pick -= 1;
    match doc {
        Value::Array(a) => a.iter_mut().any(|v| mutate(v, pick, with)),
        Value::Object(m) => m.values_mut().any(|v| mutate(v, pick, with)),
        _ => false,
    }
}

fn paths_are_named(problems: &[crate::Problem]) -> Result<(), TestCaseError> {
    prop_assert!(!problems.is_empty());
    for p in problems {
        prop_assert!(!p.path.is_empty(), "{p:?}");
        prop_assert!(!p.reason.is_empty(), "{p:?}");
    }
    Ok(())
}

proptest! {

    #[test]
    fn any_bytes_are_a_config_or_problems_with_paths(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(problems) = load_json(&bytes) {
            paths_are_named(&problems)?;
        }
        if let Err(p) = parse_yaml(&bytes) {
            paths_are_named(&[p])?;
        }
    }

    #[test]
    fn a_mutated_valid_config_is_a_config_or_problems_with_paths(
        seed in prop::sample::select(SEEDS),
        picks in prop::collection::vec((0usize..200, document()), 1..4),
    ) {
        let mut doc: Value = serde_json::from_str(seed).unwrap_or_default();
        prop_assert!(load_json(seed.as_bytes()).is_ok(), "the seed itself is valid");
        for (pick, with) in &picks {
            let mut at = *pick;
            mutate(&mut doc, &mut at, with);
        }
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        if let Err(problems) = load_json(&bytes) {
            paths_are_named(&problems)?;
        }
    }

    #[test]
    fn any_document_is_a_config_or_problems_with_paths(mut doc in document()) {
        // Most documents get the schema version right, so validation runs.
        if let Value::Object(m) = &mut doc {
            m.entry("schemaVersion").or_insert(json!(1));
        }
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        match load_json(&bytes) {
            Ok(c) => {
                // A compiled config keeps its promises.
                for r in &c.routes {
                    if let Some(canary) = &r.canary {
                        prop_assert_eq!(canary.weights.iter().sum::<u32>(), 10_000);
                    }
                }
            }
            Err(problems) => paths_are_named(&problems)?,
        }
        // The raw form (when it parses) validates the same way the filter does.
        if let Ok(raw) = crate::parse_json(&bytes) {
            prop_assert_eq!(validate(&raw).is_ok(), load_json(&bytes).is_ok());
        }
    }
}
