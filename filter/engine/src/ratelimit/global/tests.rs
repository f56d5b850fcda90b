use super::*;
use meshguard_config::load_json;
use meshguard_config::ratelimit::CompiledRateLimit;
use wasm_bindgen_test::wasm_bindgen_test;

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000_000;

/// The service and the first policy of a config with `global` as that policy's
/// `global`.
fn config(global: &str) -> (CompiledRateLimitService, CompiledRateLimit) {
    let json = format!(
        r#"{{"schemaVersion":1,"rateLimitService":{{"cluster":"rls","domain":"d","errorsBeforeBackoff":3,"backoffMs":500}},
            "rateLimits":[{{"name":"g","key":[{{"header":"x-key"}},{{"route":true,"descriptorKey":"r"}}],"global":{global}}}],
            "routes":[{{"name":"web"}}]}}"#
    );
    let c = load_json(json.as_bytes()).unwrap();
    (c.rate_limit_service.unwrap(), c.rate_limits[0].clone())
}

fn ok() -> Reply {
    Reply::Ok {
        request_headers: vec![],
        response_headers: vec![],
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn without_a_lease_every_request_asks_for_one_hit() {
    let (s, p) = config("{}");
    let g = p.global.as_ref().unwrap();
    let mut state = GlobalState::default();
    for i in 0..5 {
        assert_eq!(state.precheck(g, 7, T0 + i, 10 * MS), Pre::Ask { hits: 1 });
        let a = state.answer(&s, g, 7, 1, &ok(), T0 + i);
        assert_eq!(a, Answered::Allowed { leased: false });
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_lease_is_spent_locally_until_it_is_used_up_or_ends() {
    let (s, p) = config(r#"{"lease":{"hits":5,"ttlMs":100}}"#);
    let g = p.global.as_ref().unwrap();
    let mut state = GlobalState::default();
    assert_eq!(state.precheck(g, 7, T0, 10 * MS), Pre::Ask { hits: 5 });
    assert_eq!(
        state.answer(&s, g, 7, 5, &ok(), T0),
        Answered::Allowed { leased: true }
    );
    for _ in 0..4 {
        assert_eq!(state.precheck(g, 7, T0 + MS, 10 * MS), Pre::Leased);
    }
    assert_eq!(
        state.precheck(g, 7, T0 + MS, 10 * MS),
        Pre::Ask { hits: 5 },
        "spent"
    );
    state.answer(&s, g, 7, 5, &ok(), T0 + MS);
    assert_eq!(
        state.precheck(g, 7, T0 + 200 * MS, 10 * MS),
        Pre::Ask { hits: 5 },
        "ended"
    );
    assert_eq!(
        state.precheck(g, 8, T0 + MS, 10 * MS),
        Pre::Ask { hits: 5 },
        "another key"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_costly_request_asks_its_cost_and_spends_a_lease_only_when_it_holds_enough() {
    let (s, p) = config(r#"{"lease":{"hits":10,"ttlMs":100}}"#);
    let g = p.global.as_ref().unwrap();
    let mut state = GlobalState::default();
    // A request of 4 hits asks for 4, not a lease, and its answer leases nothing.
    assert_eq!(
        state.precheck_cost(g, 7, T0, 10 * MS, 4),
        Pre::Ask { hits: 4 }
    );
    assert_eq!(
        state.answer_cost(&s, g, 7, 4, 4, &ok(), T0),
        Answered::Allowed { leased: false }
    );
    // A one-hit request leases 10 (9 left after its own).
    assert_eq!(state.precheck(g, 7, T0, 10 * MS), Pre::Ask { hits: 10 });
    state.answer(&s, g, 7, 10, &ok(), T0);
    assert_eq!(state.precheck_cost(g, 7, T0 + MS, 10 * MS, 4), Pre::Leased);
    assert_eq!(state.precheck_cost(g, 7, T0 + MS, 10 * MS, 4), Pre::Leased);
    assert_eq!(
        state.precheck_cost(g, 7, T0 + MS, 10 * MS, 4),
        Pre::Ask { hits: 4 },
        "one hit left: not enough"
    );
    assert_eq!(
        state.precheck(g, 7, T0 + MS, 10 * MS),
        Pre::Leased,
        "the last one"
    );
    // A costly request's refusal is not remembered for the key's cheaper ones.
    let over = Reply::OverLimit {
        reset_ns: Some(40 * MS),
        response_headers: vec![],
    };
    state.answer_cost(&s, g, 8, 4, 4, &over, T0);
    assert_eq!(state.precheck(g, 8, T0, 10 * MS), Pre::Ask { hits: 10 });
}

#[wasm_bindgen_test(unsupported = test)]
fn an_over_limit_answer_is_remembered_until_the_window_resets() {
    let (s, p) = config(r#"{"lease":{"hits":5},"overLimitCacheMs":300}"#);
    let g = p.global.as_ref().unwrap();
    let mut state = GlobalState::default();
    let over = Reply::OverLimit {
        reset_ns: Some(40 * MS),
        response_headers: vec![],
    };
    assert_eq!(
        state.answer(&s, g, 7, 5, &over, T0),
        Answered::OverLimit { retry_ns: 40 * MS }
    );
    assert_eq!(
        state.precheck(g, 7, T0 + 10 * MS, 10 * MS),
        Pre::Cached { retry_ns: 30 * MS }
    );
    assert_eq!(
        state.precheck(g, 7, T0 + 40 * MS, 10 * MS),
        Pre::Ask { hits: 5 }
    );
    // Without a reset time from the service: overLimitCacheMs.
    let silent = Reply::OverLimit {
        reset_ns: None,
        response_headers: vec![],
    };
    state.answer(&s, g, 9, 5, &silent, T0);
    assert_eq!(
        state.precheck(g, 9, T0 + 299 * MS, 10 * MS),
        Pre::Cached { retry_ns: MS }
    );
    // Without a lease a rejection is not remembered: every request asks.
    let (s, p) = config("{}");
    let g = p.global.as_ref().unwrap();
    let mut state = GlobalState::default();
    state.answer(&s, g, 7, 1, &over, T0);
    assert_eq!(state.precheck(g, 7, T0 + MS, 10 * MS), Pre::Ask { hits: 1 });
}

#[wasm_bindgen_test(unsupported = test)]
fn failures_in_a_row_start_a_back_off_and_an_answer_resets_the_count() {
    let (s, p) = config("{}");
    let g = p.global.as_ref().unwrap();
    let mut state = GlobalState::default();
    let err = Reply::Error("timeout".into());
    assert_eq!(
        state.answer(&s, g, 1, 1, &err, T0),
        Answered::Error { backoff: false }
    );
    assert_eq!(
        state.answer(&s, g, 1, 1, &err, T0),
        Answered::Error { backoff: false }
    );
    state.answer(&s, g, 1, 1, &ok(), T0);
    assert_eq!(
        state.answer(&s, g, 1, 1, &err, T0),
        Answered::Error { backoff: false }
    );
    assert_eq!(
        state.answer(&s, g, 1, 1, &err, T0),
        Answered::Error { backoff: false }
    );
    assert_eq!(
        state.answer(&s, g, 1, 1, &err, T0),
        Answered::Error { backoff: true }
    );
    assert_eq!(state.precheck(g, 1, T0 + 499 * MS, 10 * MS), Pre::Backoff);
    // The status document's view of it: in back-off for exactly `backoffMs`.
    assert!(state.in_backoff(T0) && state.in_backoff(T0 + 100 * MS));
    assert!(state.in_backoff(T0 + 499 * MS));
    assert!(!state.in_backoff(T0 + 500 * MS));
    assert!(!GlobalState::default().in_backoff(T0));
    assert_eq!(
        state.precheck(g, 1, T0 + 500 * MS, 10 * MS),
        Pre::Ask { hits: 1 }
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn cookie_and_query_entries_are_named_by_the_cookie_and_the_parameter() {
    struct Req;
    impl RequestView for Req {
        fn header(&mut self, name: &str) -> Option<&[u8]> {
            match name {
                "cookie" => Some(b"sid=9; tenant=acme"),
                ":path" => Some(b"/v1/search?plan=pro%20plus"),
                _ => None,
            }
        }
        fn source_address(&mut self) -> Option<&[u8]> {
            None
        }
    }
    let json = r#"{"schemaVersion":1,"rateLimitService":{"cluster":"rls","domain":"d"},
        "rateLimits":[{"name":"g","key":[{"cookie":"tenant"},{"query":"plan","descriptorKey":"p"}],"global":{}},
                      {"name":"h","key":[{"cookie":"missing"}],"global":{}}],
        "routes":[{"name":"web"}]}"#;
    let c = load_json(json.as_bytes()).unwrap();
    let p = &c.rate_limits[0];
    let e = entries(p.global.as_ref().unwrap(), &p.key, "web", &mut Req).unwrap();
    assert_eq!(
        e,
        vec![
            ("tenant".to_string(), "acme".to_string()),
            ("p".to_string(), "pro plus".to_string())
        ]
    );
    let q = &c.rate_limits[1];
    assert_eq!(
        entries(q.global.as_ref().unwrap(), &q.key, "web", &mut Req),
        None,
        "a missing cookie: the policy does not apply"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn descriptors_follow_envoys_entry_conventions_and_stay_valid_utf8() {
    struct Req;
    impl RequestView for Req {
        fn header(&mut self, name: &str) -> Option<&[u8]> {
            match name {
                "x-key" => Some(b"k\xff%1"),
                ":path" => Some(b"/a?b"),
                _ => None,
            }
        }
        fn source_address(&mut self) -> Option<&[u8]> {
            Some(b"10.1.2.3:4567")
        }
    }
    let (_, p) = config("{}");
    let g = p.global.as_ref().unwrap();
    let e = entries(g, &p.key, "web", &mut Req).unwrap();
    assert_eq!(
        e,
        vec![
            ("x-key".to_string(), "k%FF%251".to_string()),
            ("r".to_string(), "web".to_string())
        ]
    );
    assert_eq!(
        address_value(b"10.1.2.3:4567", 32, 64).as_deref(),
        Some("10.1.2.3")
    );
    assert_eq!(
        address_value(b"10.1.2.3:4567", 24, 64).as_deref(),
        Some("10.1.2.0/24")
    );
    assert_eq!(
        address_value(b"[2001:db8::1]:80", 32, 64).as_deref(),
        Some("2001:db8::/64")
    );
    assert_eq!(address_value(b"[::1]:80", 32, 128).as_deref(), Some("::1"));
    assert_eq!(address_value(b"garbage", 32, 64), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn requests_and_answers_round_trip_through_protobuf() {
    use meshguard_rls_proto::rate_limit_response::DescriptorStatus;
    use meshguard_rls_proto::HeaderValue;
    let bytes = request("d", &[("k".into(), "v".into())], 5);
    let r = RateLimitRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!((r.domain.as_str(), r.hits_addend), ("d", 5));
    assert_eq!(r.descriptors[0].entries[0].value, "v");
    let over = RateLimitResponse {
        overall_code: Code::OverLimit as i32,
        statuses: vec![DescriptorStatus {
            code: Code::OverLimit as i32,
            duration_until_reset: Some(prost_types::Duration {
                seconds: 2,
                nanos: 5,
            }),
            ..DescriptorStatus::default()
        }],
        response_headers_to_add: vec![HeaderValue {
            key: "X-RateLimit-Reset".into(),
            value: "2".into(),
        }],
        request_headers_to_add: vec![],
    };
    assert_eq!(
        reply(&over.encode_to_vec()),
        Reply::OverLimit {
            reset_ns: Some(2_000_000_005),
            response_headers: vec![("x-ratelimit-reset".into(), "2".into())]
        }
    );
    let ok = RateLimitResponse {
        overall_code: Code::Ok as i32,
        ..RateLimitResponse::default()
    };
    assert_eq!(
        reply(&ok.encode_to_vec()),
        Reply::Ok {
            request_headers: vec![],
            response_headers: vec![]
        }
    );
    assert!(
        matches!(reply(&[]), Reply::Error(_)),
        "UNKNOWN is no decision"
    );
    assert!(matches!(reply(&[0xff, 0xff, 0xff]), Reply::Error(_)));
}

#[wasm_bindgen_test(unsupported = test)]
fn while_a_lease_is_asked_for_other_requests_ask_for_their_own_hit_only() {
    let (s, p) = config(r#"{"lease":{"hits":5}}"#);
    let g = p.global.as_ref().unwrap();
    let mut state = GlobalState::default();
    assert_eq!(state.precheck(g, 7, T0, 10 * MS), Pre::Ask { hits: 5 });
    assert_eq!(state.precheck(g, 7, T0, 10 * MS), Pre::Ask { hits: 1 });
    assert_eq!(
        state.answer(&s, g, 7, 1, &ok(), T0),
        Answered::Allowed { leased: false },
        "a single hit's answer leaves the pending lease alone"
    );
    assert_eq!(state.precheck(g, 7, T0, 10 * MS), Pre::Ask { hits: 1 });
    assert_eq!(
        state.answer(&s, g, 7, 5, &ok(), T0),
        Answered::Allowed { leased: true }
    );
    assert_eq!(state.precheck(g, 7, T0, 10 * MS), Pre::Leased);
    // An ask whose answer never comes (the stream ended) stops blocking after the
    // timeout.
    let mut state = GlobalState::default();
    assert_eq!(state.precheck(g, 8, T0, 10 * MS), Pre::Ask { hits: 5 });
    assert_eq!(
        state.precheck(g, 8, T0 + 10 * MS, 10 * MS),
        Pre::Ask { hits: 5 }
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_lease_ends_exactly_at_its_ttl() {
    let (s, p) = config(r#"{"lease":{"hits":5,"ttlMs":100}}"#);
    let g = p.global.as_ref().unwrap();
    let mut state = GlobalState::default();
    state.precheck(g, 7, T0, 10 * MS);
    state.answer(&s, g, 7, 5, &ok(), T0);
    assert_eq!(
        state.precheck(g, 7, T0 + 100 * MS - 1, 10 * MS),
        Pre::Leased
    );
    assert_eq!(
        state.precheck(g, 7, T0 + 100 * MS, 10 * MS),
        Pre::Ask { hits: 5 }
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_key_whose_slot_holds_another_keys_live_lease_asks_for_its_own_hit_and_leaves_it_be() {
    let (s, p) = config(r#"{"lease":{"hits":5,"ttlMs":100}}"#);
    let g = p.global.as_ref().unwrap();
    let other = 7 + SLOTS as u64; // the same slot as 7
    let mut state = GlobalState::default();
    assert_eq!(state.precheck(g, 7, T0, 10 * MS), Pre::Ask { hits: 5 });
    state.answer(&s, g, 7, 5, &ok(), T0);
    assert_eq!(
        state.precheck(g, other, T0 + MS, 10 * MS),
        Pre::Ask { hits: 1 }
    );
    assert_eq!(
        state.answer(&s, g, other, 1, &ok(), T0 + MS),
        Answered::Allowed { leased: false }
    );
    // 7's lease is untouched: its 4 hits are still there.
    for _ in 0..4 {
        assert_eq!(state.precheck(g, 7, T0 + 2 * MS, 10 * MS), Pre::Leased);
    }
    // Once 7's lease has ended the slot is free: the other key leases.
    assert_eq!(
        state.precheck(g, other, T0 + 200 * MS, 10 * MS),
        Pre::Ask { hits: 5 }
    );
    assert_eq!(
        state.precheck(g, 7, T0 + 200 * MS, 10 * MS),
        Pre::Ask { hits: 1 },
        "now the other key's pending lease holds the slot"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_lease_of_one_hit_holds_no_slot_while_it_is_asked_for() {
    // `lease: {hits: 1}` asks one hit at a time, like no lease: asking takes no
    // slot, so another key sharing it can have its OVER_LIMIT remembered.
    let (s, p) = config(r#"{"lease":{"hits":1,"ttlMs":100}}"#);
    let g = p.global.as_ref().unwrap();
    let other = 7 + SLOTS as u64;
    let mut state = GlobalState::default();
    assert_eq!(state.precheck(g, 7, T0, 10 * MS), Pre::Ask { hits: 1 });
    let over = Reply::OverLimit {
        reset_ns: Some(1_000 * MS),
        response_headers: vec![],
    };
    state.answer(&s, g, other, 1, &over, T0);
    assert_eq!(
        state.precheck(g, other, T0 + MS, 10 * MS),
        Pre::Cached { retry_ns: 999 * MS }
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_failed_lease_frees_its_own_slot_only() {
    let (s, p) = config(r#"{"lease":{"hits":5,"ttlMs":100}}"#);
    let g = p.global.as_ref().unwrap();
    let mut state = GlobalState::default();
    let err = Reply::Error("timeout".into());
    assert_eq!(state.precheck(g, 7, T0, 10 * MS), Pre::Ask { hits: 5 });
    state.answer(&s, g, 7, 5, &err, T0 + MS);
    assert_eq!(
        state.precheck(g, 7, T0 + MS, 10 * MS),
        Pre::Ask { hits: 5 },
        "the pending lease's slot was freed: the next request asks for a lease again"
    );
    // Another key's failed lease leaves 7's pending one alone.
    let other = 7 + SLOTS as u64;
    state.answer(&s, g, other, 5, &err, T0 + MS);
    assert_eq!(state.precheck(g, 7, T0 + MS, 10 * MS), Pre::Ask { hits: 1 });
}

#[wasm_bindgen_test(unsupported = test)]
fn another_keys_slot_is_free_once_its_lease_is_spent_or_ended_or_its_ask_timed_out() {
    let (s, p) = config(r#"{"lease":{"hits":2,"ttlMs":100}}"#);
    let g = p.global.as_ref().unwrap();
    let other = 7 + SLOTS as u64;
    // A lease with hits left, until the instant it ends.
    let leased = || {
        let mut state = GlobalState::default();
        state.precheck(g, 7, T0, 10 * MS);
        state.answer(&s, g, 7, 2, &ok(), T0);
        state
    };
    let mut state = leased();
    assert_eq!(
        state.precheck(g, other, T0 + 100 * MS - 1, 10 * MS),
        Pre::Ask { hits: 1 }
    );
    let mut state_at_end = leased();
    assert_eq!(
        state_at_end.precheck(g, other, T0 + 100 * MS, 10 * MS),
        Pre::Ask { hits: 2 }
    );
    // Spent (its one hit left used): free at once.
    assert_eq!(state.precheck(g, 7, T0 + MS, 10 * MS), Pre::Leased);
    assert_eq!(
        state.precheck(g, other, T0 + MS, 10 * MS),
        Pre::Ask { hits: 2 }
    );
    // A pending ask holds the slot until its timeout, not at it.
    let mut state = GlobalState::default();
    state.precheck(g, 7, T0, 10 * MS);
    assert_eq!(
        state.precheck(g, other, T0 + 10 * MS - 1, 10 * MS),
        Pre::Ask { hits: 1 }
    );
    assert_eq!(
        state.precheck(g, other, T0 + 10 * MS, 10 * MS),
        Pre::Ask { hits: 2 }
    );
}
