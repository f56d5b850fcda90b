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
const RAMPED: &str = r#""variants":[{"name":"stable"},{"name":"canary"}]"#;

#[wasm_bindgen_test(unsupported = test)]
fn a_complete_rollout_compiles_with_its_defaults() {
    let json = format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web","canary":{{{RAMPED},"revision":"v2-1",
            "analysis":{{"successRate":{{"min":99.5,"intervalSeconds":30}},"zTest":{{"intervalSeconds":10}}}},
            "ramp":{{"steps":[500,2500,5000,10000]}}}}}}]}}"#
    );
    let c = load_json(json.as_bytes()).unwrap().routes[0]
        .canary
        .clone()
        .unwrap();
    assert_eq!(c.weights, vec![9_500, 500], "the ramp's first step");
    let r = c.rollout.unwrap();
    let a = r.analysis.unwrap();
    assert_eq!((a.alpha, a.min_requests, a.sequential), (0.01, 20, true));
    assert!(a.failures.contains(503) && !a.failures.contains(429));
    let g = a.success_rate.unwrap();
    assert_eq!(
        (g.min, g.interval_ns, g.intervals),
        (0.995, 30_000_000_000, 3)
    );
    assert_eq!(a.z_test.unwrap().z, 1.96);
    let ramp = r.ramp.unwrap();
    assert_eq!((ramp.hold_ns, ramp.min_requests), (60_000_000_000, 100));
    assert!(!r.pause && !r.rollback);
}

#[wasm_bindgen_test(unsupported = test)]
fn the_fingerprint_follows_the_revision_and_the_variants_only() {
    let fp = |canary: &str| {
        let route = crate::tests::web_route(&format!(r#""canary":{canary}"#));
        route.canary.unwrap().rollout.unwrap().fingerprint
    };
    let a = fp(&format!(r#"{{{TWO},"revision":"a","analysis":{{}}}}"#));
    assert_eq!(
        a,
        fp(&format!(
            r#"{{{TWO},"revision":"a","analysis":{{"alpha":0.05}}}}"#
        ))
    );
    assert_ne!(
        a,
        fp(&format!(r#"{{{TWO},"revision":"b","analysis":{{}}}}"#))
    );
    assert_ne!(
        a,
        fp(
            r#"{"variants":[{"name":"stable","weight":9500},{"name":"blue","weight":500}],"revision":"a","analysis":{}}"#
        )
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn without_its_own_statuses_the_analysis_counts_errors_as_the_breaker_does() {
    let json = format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web","canary":{{{TWO},"revision":"a","analysis":{{}}}},
            "breaker":{{"failureStatuses":["5xx","429"]}}}}]}}"#
    );
    let c = load_json(json.as_bytes()).unwrap();
    let a = c.routes[0]
        .canary
        .as_ref()
        .unwrap()
        .rollout
        .as_ref()
        .unwrap()
        .analysis
        .as_ref()
        .unwrap();
    assert!(a.failures.contains(429));
    let own = json.replace(
        r#""analysis":{}"#,
        r#""analysis":{"failureStatuses":["500"]}"#,
    );
    let c = load_json(own.as_bytes()).unwrap();
    let a = c.routes[0]
        .canary
        .as_ref()
        .unwrap()
        .rollout
        .as_ref()
        .unwrap()
        .analysis
        .as_ref()
        .unwrap();
    assert!(a.failures.contains(500) && !a.failures.contains(429) && !a.failures.contains(503));
}

#[wasm_bindgen_test(unsupported = test)]
fn bad_analyses_name_their_fields() {
    assert_eq!(
        problems(&format!(
            r#"{{{TWO},"revision":"a","analysis":{{"alpha":0.5,"minRequests":0,"failureStatuses":["6xx"],"slowCallMs":0,
                "successRate":{{"min":0,"intervals":0}},"zTest":{{"z":-1}}}}}}"#
        )),
        vec![
            "routes[0].canary.analysis.alpha: must be above 0 and below 0.5, got 0.5",
            "routes[0].canary.analysis.minRequests: must be 1 to 10000000, got 0",
            "routes[0].canary.analysis.failureStatuses[0]: \"6xx\" is neither a status class (1xx-5xx) nor a code (100-599)",
            "routes[0].canary.analysis.slowCallMs: must be 1 to 600000, got 0",
            "routes[0].canary.analysis.successRate.min: must be a percentage above 0 and at most 100, got 0",
            "routes[0].canary.analysis.successRate.intervalSeconds: required: the gate's interval, in seconds",
            "routes[0].canary.analysis.successRate.intervals: must be 1 to 100, got 0",
            "routes[0].canary.analysis.zTest.z: must be above 0 and at most 10, got -1",
            "routes[0].canary.analysis.zTest.intervalSeconds: required: the gate's interval, in seconds",
        ]
    );
    assert_eq!(
        problems(&format!(
            r#"{{{TWO},"revision":"a","analysis":{{"alpha":0}}}}"#
        )),
        vec!["routes[0].canary.analysis.alpha: must be above 0 and below 0.5, got 0"]
    );
    assert_eq!(
        problems(&format!(
            r#"{{{TWO},"revision":"a","analysis":{{"alpha":0.4999}}}}"#
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        problems(&format!(
            r#"{{{TWO},"revision":"a","analysis":{{"successRate":{{"min":99,"intervalSeconds":3601}}}}}}"#
        )),
        vec!["routes[0].canary.analysis.successRate.intervalSeconds: must be 1 to 3600, got 3601"]
    );
    assert_eq!(
        problems(&format!(r#"{{{TWO},"revision":"a","analysis":{{"sequential":false}}}}"#)),
        vec!["routes[0].canary.analysis.sequential: false leaves nothing to judge by: add successRate or zTest, or keep it"]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn bad_ramps_name_their_fields() {
    assert_eq!(
        problems(&format!(
            r#"{{{RAMPED},"revision":"a","ramp":{{"steps":[500,500,400,20000],"holdSeconds":86401}}}}"#
        )),
        vec![
            "routes[0].canary.ramp.steps[1]: steps must increase: 500 does not exceed the step before (500)",
            "routes[0].canary.ramp.steps[2]: steps must increase: 400 does not exceed the step before (500)",
            "routes[0].canary.ramp.steps[3]: must be 1 to 10000 basis points, got 20000",
            "routes[0].canary.ramp.holdSeconds: must be 0 to 86400, got 86401",
        ]
    );
    assert_eq!(
        problems(&format!(
            r#"{{{RAMPED},"revision":"a","ramp":{{"steps":[]}}}}"#
        )),
        vec!["routes[0].canary.ramp.steps: need 1 to 16 steps, got 0"]
    );
    assert_eq!(
        problems(&format!(r#"{{{TWO},"revision":"a","ramp":{{"steps":[100]}}}}"#)),
        vec!["routes[0].canary.variants[0].weight: set by ramp.steps: leave the variants' weights out"]
    );
    assert_eq!(
        problems(
            r#"{"variants":[{"name":"a"},{"name":"b"},{"name":"c"}],"revision":"x","ramp":{"steps":[100]}}"#
        ),
        vec!["routes[0].canary.ramp: needs exactly two variants (baseline and canary), got 3"]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn the_revision_and_the_manual_controls_need_a_rollout() {
    assert_eq!(
        problems(&format!(r#"{{{TWO},"analysis":{{}}}}"#)),
        vec!["routes[0].canary.revision: required with analysis or ramp: the rollout's state is kept per revision"]
    );
    assert_eq!(
        problems(&format!(r#"{{{TWO},"revision":"a.b","analysis":{{}}}}"#)),
        vec!["routes[0].canary.revision: may contain only A-Z a-z 0-9 _ -, found '.' in \"a.b\""]
    );
    assert_eq!(
        problems(&format!(
            r#"{{{TWO},"revision":"a","pause":true,"rollback":true}}"#
        )),
        vec![
            "routes[0].canary.pause: needs a rollout: add analysis or ramp",
            "routes[0].canary.rollback: needs a rollout: add analysis or ramp",
            "routes[0].canary.revision: names a rollout: add analysis or ramp (or leave it out)",
        ]
    );
    assert_eq!(
        problems(&format!(
            r#"{{{TWO},"revision":"a","analysis":{{}},"pause":true}}"#
        )),
        vec!["routes[0].canary.pause: needs a ramp to hold"]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_z_threshold_of_zero_is_refused_and_a_ramp_takes_up_to_16_steps() {
    assert_eq!(
        problems(&format!(
            r#"{{{TWO},"revision":"a","analysis":{{"zTest":{{"z":0,"intervalSeconds":10}}}}}}"#
        )),
        vec!["routes[0].canary.analysis.zTest.z: must be above 0 and at most 10, got 0"]
    );
    assert_eq!(
        problems(&format!(
            r#"{{{TWO},"revision":"a","analysis":{{"zTest":{{"z":10,"intervalSeconds":10}}}}}}"#
        )),
        Vec::<String>::new()
    );
    let steps = |n: u32| {
        let list: Vec<String> = (1..=n).map(|i| (i * 100).to_string()).collect();
        problems(&format!(
            r#"{{{RAMPED},"revision":"a","ramp":{{"steps":[{}]}}}}"#,
            list.join(",")
        ))
    };
    assert_eq!(steps(1), Vec::<String>::new());
    assert_eq!(steps(16), Vec::<String>::new());
    assert_eq!(
        steps(17),
        vec!["routes[0].canary.ramp.steps: need 1 to 16 steps, got 17"]
    );
}
