use crate::breaker::{OpenAction, SlowTrip, WindowKind};
use crate::{load_json, Problem};
use wasm_bindgen_test::wasm_bindgen_test;

fn problems(route: &str) -> Vec<String> {
    let json = format!(r#"{{"schemaVersion":1,"routes":[{{"name":"web",{route}}}]}}"#);
    match load_json(json.as_bytes()) {
        Ok(_) => Vec::new(),
        Err(list) => list.iter().map(Problem::to_string).collect(),
    }
}

const CANARY: &str =
    r#""canary":{"variants":[{"name":"stable","weight":9000},{"name":"canary","weight":1000}]}"#;

#[wasm_bindgen_test(unsupported = test)]
fn defaults_and_a_full_policy_compile() {
    let c = load_json(br#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{}}]}"#).unwrap();
    let b = c.routes[0].breaker.as_ref().unwrap();
    assert_eq!((b.failure_rate, b.minimum_calls, b.probes), (50, 10, 3));
    assert_eq!(b.window, WindowKind::Calls(100));
    assert!(b.failures.contains(503) && !b.failures.contains(404));
    let json = format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web",{CANARY},"breaker":{{"failureStatuses":["5xx","429"],"failureRateThreshold":40,
            "consecutiveFailures":5,"slowCall":{{"durationMs":250,"rateThreshold":80}},"window":{{"seconds":30}},"minimumCalls":20,
            "openDurationMs":5000,"maxOpenDurationMs":60000,"halfOpenProbes":2,"maxConcurrent":100,
            "whenOpen":{{"fallbackVariant":"stable"}}}}}}]}}"#
    );
    let c = load_json(json.as_bytes()).unwrap();
    let b = c.routes[0].breaker.as_ref().unwrap();
    assert!(b.failures.contains(429) && b.failures.contains(500) && !b.failures.contains(428));
    assert_eq!(b.window, WindowKind::Seconds(30));
    assert_eq!(
        b.slow,
        Some(SlowTrip {
            threshold_ns: 250_000_000,
            rate_pct: 80
        })
    );
    assert_eq!(b.when_open, OpenAction::Fallback(0));
}

#[wasm_bindgen_test(unsupported = test)]
fn thresholds_outside_percentages_are_refused() {
    assert_eq!(
        problems(
            r#""breaker":{"failureRateThreshold":0,"slowCall":{"durationMs":10,"rateThreshold":101}}"#
        ),
        vec![
            "routes[0].breaker.failureRateThreshold: must be a percentage from 1 to 100, got 0",
            "routes[0].breaker.slowCall.rateThreshold: must be a percentage from 1 to 100, got 101",
        ]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_zero_window_and_zero_probes_are_refused() {
    assert_eq!(
        problems(r#""breaker":{"window":{"calls":0},"halfOpenProbes":0}"#),
        vec![
            "routes[0].breaker.window.calls: must be 1 to 1000, got 0",
            "routes[0].breaker.halfOpenProbes: must be 1 to 1000, got 0",
        ]
    );
    assert_eq!(
        problems(r#""breaker":{"window":{"seconds":0}}"#),
        vec!["routes[0].breaker.window.seconds: must be 1 to 3600, got 0"]
    );
    assert_eq!(
        problems(r#""breaker":{"window":{"calls":10,"seconds":10}}"#),
        vec!["routes[0].breaker.window: give exactly one of calls, seconds"]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn fallback_to_an_unknown_variant_is_refused() {
    assert_eq!(
        problems(&format!(
            r#"{CANARY},"breaker":{{"whenOpen":{{"fallbackVariant":"blue"}}}}"#
        )),
        vec!["routes[0].breaker.whenOpen.fallbackVariant: unknown variant \"blue\""]
    );
    assert_eq!(
        problems(r#""breaker":{"whenOpen":{"fallbackVariant":"stable"}}"#),
        vec!["routes[0].breaker.whenOpen.fallbackVariant: the route has no canary policy to fall back within"]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn other_bad_values_name_their_fields() {
    assert_eq!(
        problems(
            r#""breaker":{"failureStatuses":["6xx","99"],"consecutiveFailures":0,"window":{"calls":5},"minimumCalls":6,
                "openDurationMs":1000,"maxOpenDurationMs":500,"maxConcurrent":0,"whenOpen":{"status":200}}"#
        ),
        vec![
            "routes[0].breaker.failureStatuses[0]: \"6xx\" is neither a status class (1xx-5xx) nor a code (100-599)",
            "routes[0].breaker.failureStatuses[1]: \"99\" is neither a status class (1xx-5xx) nor a code (100-599)",
            "routes[0].breaker.consecutiveFailures: must be at least 1 (omit it to disable)",
            "routes[0].breaker.minimumCalls: 6 can never be reached in a window of 5 calls",
            "routes[0].breaker.maxOpenDurationMs: must be 1000 (openDurationMs) to 86400000, got 500",
            "routes[0].breaker.maxConcurrent: must be at least 1 (omit it for no limit)",
            "routes[0].breaker.whenOpen.status: must be 400 to 599, got 200",
        ]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn an_invalid_canary_policy_does_not_hide_the_breakers_problems() {
    assert_eq!(
        problems(
            r#""canary":{"variants":[{"name":"stable","weight":9000},{"name":"canary","weight":500}]},
                "breaker":{"halfOpenProbes":0,"whenOpen":{"fallbackVariant":"blue"}}"#
        ),
        vec![
            "routes[0].canary.variants: weights must sum to 10000 basis points, got 9500",
            "routes[0].breaker.halfOpenProbes: must be 1 to 1000, got 0",
            "routes[0].breaker.whenOpen.fallbackVariant: unknown variant \"blue\"",
        ]
    );
}

/// The compiled breaker of `{"breaker": json}` on a route with a canary policy.
fn compiled(json: &str) -> crate::breaker::CompiledBreaker {
    let route = crate::tests::web_route(&format!(r#"{CANARY},"breaker":{json}"#));
    route.breaker.unwrap()
}

#[wasm_bindgen_test(unsupported = test)]
fn minimum_calls_and_open_durations_at_their_bounds() {
    assert_eq!(
        problems(r#""breaker":{"window":{"calls":20},"minimumCalls":20}"#),
        Vec::<String>::new()
    );
    assert_eq!(
        problems(r#""breaker":{"window":{"calls":20},"minimumCalls":21}"#),
        vec!["routes[0].breaker.minimumCalls: 21 can never be reached in a window of 20 calls"]
    );
    assert_eq!(
        problems(r#""breaker":{"maxOpenDurationMs":86400000}"#),
        Vec::<String>::new()
    );
    assert_eq!(
        problems(r#""breaker":{"maxOpenDurationMs":86400001}"#),
        vec!["routes[0].breaker.maxOpenDurationMs: must be 30000 (openDurationMs) to 86400000, got 86400001"]
    );
    let b = compiled(r#"{"openDurationMs":1500,"maxOpenDurationMs":7000}"#);
    assert_eq!((b.open_ns, b.max_open_ns), (1_500_000_000, 7_000_000_000));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_fallback_needs_one_breaker_per_variant() {
    let fallback = |per_variant: bool| {
        problems(&format!(
            r#"{CANARY},"breaker":{{"perVariant":{per_variant},"whenOpen":{{"fallbackVariant":"stable"}}}}"#
        ))
    };
    assert_eq!(fallback(true), Vec::<String>::new());
    assert_eq!(
        fallback(false),
        vec!["routes[0].breaker.whenOpen.fallbackVariant: needs perVariant: true (one breaker for all variants cannot fall back to one of them)"]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn windows_of_another_kind_or_size_get_another_state() {
    // The fingerprint names the breaker's state in shared data: a changed window
    // must not read the old one's. (`1 << 32 | n` tags time windows; `^` in
    // place of `|` would be the same, the bits never overlap.)
    let fp = |w: &str| compiled(&format!(r#"{{"window":{w}}}"#)).fingerprint;
    let (calls10, secs10, secs20) = (
        fp(r#"{"calls":10}"#),
        fp(r#"{"seconds":10}"#),
        fp(r#"{"seconds":20}"#),
    );
    assert_ne!(calls10, secs10);
    assert_ne!(secs10, secs20);
    assert_eq!(secs10, fp(r#"{"seconds":10}"#));
}
