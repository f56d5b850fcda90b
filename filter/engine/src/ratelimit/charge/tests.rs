//! Charging a route's policies, as the engine decides it: each outcome, what is
//! counted, the limited reply and its fields, and the rate limit service's answers.

use super::*;
use crate::runtime::testing::{runtime, NoIds};
use crate::store::fake::FakeStore;
use wasm_bindgen_test::wasm_bindgen_test;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const T0: u64 = 1_700_000_000 * SEC;

use crate::view::testing::Req;

/// A config of route `web` and one local policy with `policy`'s extra fields.
fn local(policy: &str) -> Runtime<NoIds> {
    runtime(&format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web"}}],
            "rateLimits":[{{"name":"one","key":[],"limit":{{"burst":2,"rate":1,"per":"minute"}}{policy}}}]}}"#
    ))
}

/// A config of route `web` and one global policy (`global` its `global`, `extra`
/// more policy fields), the service failing closed or open (`on_error`).
fn global(global: &str, extra: &str, on_error: &str) -> Runtime<NoIds> {
    runtime(&format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web"}}],
            "rateLimitService":{{"cluster":"rls","domain":"d","errorsBeforeBackoff":1,"backoffMs":500,"onError":"{on_error}"}},
            "rateLimits":[{{"name":"g","key":[],"global":{global}{extra}}}]}}"#
    ))
}

fn charge<'rt>(
    rt: &'rt Runtime<NoIds>,
    store: &mut FakeStore,
    now: u64,
    events: &mut Vec<Event>,
) -> Result<Charged, LocalReply<'rt>> {
    charge_route(rt, &rt.routes[0], &mut Req::default(), store, now, events)
}

fn outcomes(events: &[Event]) -> Vec<RateLimitOutcome> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RateLimit { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect()
}

fn header<'a>(r: &'a LocalReply<'_>, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn failing_store() -> FakeStore {
    FakeStore {
        fail_gets: true,
        ..FakeStore::default()
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn an_allowed_charge_is_advertised_unless_the_policy_is_in_shadow_mode() {
    let on_allowed = r#","headers":{"onAllowed":true}"#;
    let rt = local(on_allowed);
    let mut events = Vec::new();
    let charged = charge(&rt, &mut FakeStore::default(), T0, &mut events).expect("allowed");
    assert_eq!(charged.advertise.len(), 1);
    assert_eq!(charged.advertise[0].remaining, 1);
    assert_eq!(outcomes(&events), vec![RateLimitOutcome::Allowed]);
    let fields = response_fields(&rt, &charged.advertise);
    assert_eq!(
        fields,
        vec![
            ("ratelimit-policy".into(), "\"one\";q=2;w=120".to_string()),
            ("ratelimit".into(), "\"one\";r=1;t=60".to_string()),
        ]
    );
    let shadow = local(&format!(r#"{on_allowed},"shadow":true"#));
    let charged = charge(&shadow, &mut FakeStore::default(), T0, &mut Vec::new()).expect("allowed");
    assert!(
        charged.advertise.is_empty(),
        "a shadow policy sends no fields"
    );
    // Without `onAllowed`, nothing is advertised either.
    let plain = local("");
    assert!(
        charge(&plain, &mut FakeStore::default(), T0, &mut Vec::new())
            .expect("allowed")
            .advertise
            .is_empty()
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn legacy_fields_come_with_the_policy_that_asks_for_them() {
    let rt = local(r#","headers":{"onAllowed":true,"legacy":true}"#);
    let charged = charge(&rt, &mut FakeStore::default(), T0, &mut Vec::new()).expect("allowed");
    let fields = response_fields(&rt, &charged.advertise);
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(
        names,
        vec![
            "ratelimit-policy",
            "ratelimit",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset"
        ]
    );
    assert!(response_fields(&rt, &[]).is_empty());
}

#[wasm_bindgen_test(unsupported = test)]
fn the_limited_reply_carries_the_policys_fields_and_retry_after() {
    let rt = local(r#","headers":{"legacy":true},"response":{"status":503,"body":"slow"}"#);
    let mut store = FakeStore::default();
    for _ in 0..2 {
        charge(&rt, &mut store, T0, &mut Vec::new()).expect("within the burst");
    }
    let mut events = Vec::new();
    let reply = charge(&rt, &mut store, T0, &mut events).expect_err("limited");
    assert_eq!((reply.status, reply.body.as_ref()), (503, "slow"));
    assert_eq!(reply.reason, ReplyReason::RateLimited { policy: 0 });
    assert_eq!(header(&reply, "retry-after"), Some("60"));
    assert_eq!(
        header(&reply, "ratelimit-policy"),
        Some("\"one\";q=2;w=120")
    );
    assert_eq!(header(&reply, "ratelimit"), Some("\"one\";r=0;t=120"));
    assert_eq!(header(&reply, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(outcomes(&events), vec![RateLimitOutcome::Limited]);
    // In shadow mode the same charge is counted and goes on.
    let shadow = local(r#","shadow":true"#);
    let mut store = FakeStore::default();
    let mut events = Vec::new();
    for _ in 0..3 {
        charge(&shadow, &mut store, T0, &mut events).expect("shadow never rejects");
    }
    assert_eq!(
        outcomes(&events),
        vec![
            RateLimitOutcome::Allowed,
            RateLimitOutcome::Allowed,
            RateLimitOutcome::ShadowLimited
        ]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_store_failure_follows_on_store_error_and_is_counted() {
    // Default `allow`: the request goes on.
    let rt = local("");
    let mut events = Vec::new();
    for _ in 0..2 {
        charge(&rt, &mut failing_store(), T0, &mut events).expect("allowed");
    }
    assert_eq!(
        outcomes(&events),
        vec![
            RateLimitOutcome::ErrorAllowed,
            RateLimitOutcome::ErrorAllowed
        ]
    );
    assert_eq!(rt.policies[0].counts.get().store_errors, 2);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::StoreConflict { .. })),
        "a host error is not a conflict"
    );
    // `deny`: rejected, with no fields to report but `retry-after: 1`.
    let deny = local(r#","onStoreError":"deny""#);
    let mut events = Vec::new();
    let reply = charge(&deny, &mut failing_store(), T0, &mut events).expect_err("denied");
    assert_eq!(reply.reason, ReplyReason::RateLimitStoreError { policy: 0 });
    assert_eq!(header(&reply, "retry-after"), Some("1"));
    assert_eq!(header(&reply, "ratelimit"), None);
    assert_eq!(outcomes(&events), vec![RateLimitOutcome::ErrorDenied]);
    // `deny` in shadow mode still lets it through.
    let shadow = local(r#","onStoreError":"deny","shadow":true"#);
    let mut events = Vec::new();
    charge(&shadow, &mut failing_store(), T0, &mut events).expect("shadow");
    assert_eq!(outcomes(&events), vec![RateLimitOutcome::ErrorAllowed]);
}

#[wasm_bindgen_test(unsupported = test)]
fn retries_running_out_are_a_store_conflict() {
    let rt = local("");
    let mut store = FakeStore {
        conflicts: 1_000,
        ..FakeStore::default()
    };
    let mut events = Vec::new();
    charge(&rt, &mut store, T0, &mut events).expect("allowed on a store error");
    assert!(
        events.contains(&Event::StoreConflict { policy: 0 }),
        "{events:?}"
    );
    assert_eq!(rt.policies[0].counts.get().store_errors, 1);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_lease_is_counted_when_more_than_the_requests_own_token_is_taken() {
    // A big bucket: the first charge takes a lease, the next ones spend it.
    let rt = runtime(
        r#"{"schemaVersion":1,"routes":[{"name":"web"}],
            "rateLimits":[{"name":"big","key":[],"limit":{"burst":100000,"rate":100000,"per":"second"}}]}"#,
    );
    let mut store = FakeStore::default();
    for _ in 0..3 {
        charge(&rt, &mut store, T0, &mut Vec::new()).expect("allowed");
    }
    assert_eq!(rt.policies[0].counts.get().leases, 1);
    // Once it has ended, the next charge takes another.
    charge(&rt, &mut store, T0 + 2 * MS, &mut Vec::new()).expect("allowed");
    assert_eq!(rt.policies[0].counts.get().leases, 2);
    // A small bucket is charged one token at a time: no lease.
    let small = local("");
    charge(&small, &mut FakeStore::default(), T0, &mut Vec::new()).expect("allowed");
    assert_eq!(small.policies[0].counts.get().leases, 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn table_use_reports_new_slots_and_counts_overflow() {
    let rt = runtime(
        r#"{"schemaVersion":1,"routes":[{"name":"web"}],
            "rateLimits":[{"name":"one","key":[{"header":"x-k"}],"maxKeys":1,"limit":{"burst":5,"rate":1,"per":"minute"}}]}"#,
    );
    let mut store = FakeStore::default();
    let mut events = Vec::new();
    let keys: [&'static [u8]; 4] = [b"a", b"b", b"c", b"d"];
    for k in keys {
        charge_route(
            &rt,
            &rt.routes[0],
            &mut Req(vec![("x-k", k)]),
            &mut store,
            T0,
            &mut events,
        )
        .expect("within the burst");
    }
    let uses: Vec<(bool, bool)> = events
        .iter()
        .filter_map(|e| match e {
            Event::TableUse {
                overflow, claimed, ..
            } => Some((*overflow, *claimed)),
            _ => None,
        })
        .collect();
    // The first key claims the one slot; the others go to the overflow bucket.
    assert_eq!(uses.first(), Some(&(false, true)), "{events:?}");
    let overflowed = uses.iter().filter(|(o, _)| *o).count();
    assert_eq!(overflowed, 3, "{events:?}");
    assert_eq!(rt.policies[0].counts.get().overflow, 3);
    // A key charged again in its own slot uses nothing new.
    let mut again = Vec::new();
    charge_route(
        &rt,
        &rt.routes[0],
        &mut Req(vec![("x-k", b"a")]),
        &mut store,
        T0,
        &mut again,
    )
    .expect("allowed");
    assert!(
        !again.iter().any(|e| matches!(e, Event::TableUse { .. })),
        "{again:?}"
    );
}

/// Fails one call to the service (`errorsBeforeBackoff` is 1): back-off begins.
fn fail_once(rt: &Runtime<NoIds>, now: u64) -> Vec<Event> {
    let mut events = Vec::new();
    let charged = charge(rt, &mut FakeStore::default(), now, &mut events).expect("asks");
    assert_eq!(charged.calls.len(), 1);
    let _ = answer_calls(
        rt,
        &charged.calls,
        &[Reply::Error("timeout".into())],
        now + 3 * MS,
        &mut events,
    );
    events
}

#[wasm_bindgen_test(unsupported = test)]
fn during_back_off_the_fallback_limit_decides_or_else_on_error() {
    let with_fallback = global(
        r#"{"fallback":{"burst":1,"rate":1,"per":"minute"}}"#,
        "",
        "deny",
    );
    let events = fail_once(&with_fallback, T0);
    assert!(
        events.iter().any(|e| matches!(e, Event::Warning(w)
            if w.contains("rate limit service failed for policy g (timeout); backing off for 500 ms"))),
        "{events:?}"
    );
    assert_eq!(with_fallback.policies[0].counts.get().rpc_errors, 1);
    let mut store = FakeStore::default();
    let mut events = Vec::new();
    let charged = charge(&with_fallback, &mut store, T0 + 10 * MS, &mut events).expect("fallback");
    assert!(charged.calls.is_empty(), "no call during back-off");
    charge(&with_fallback, &mut store, T0 + 10 * MS, &mut events).expect_err("fallback limited");
    assert_eq!(
        outcomes(&events),
        vec![
            RateLimitOutcome::Fallback,
            RateLimitOutcome::FallbackLimited
        ]
    );
    // Without a fallback, back-off follows `onError`: deny…
    let deny = global("{}", "", "deny");
    fail_once(&deny, T0);
    let mut events = Vec::new();
    let reply =
        charge(&deny, &mut FakeStore::default(), T0 + 10 * MS, &mut events).expect_err("denied");
    assert_eq!(reply.status, 429);
    assert_eq!(outcomes(&events), vec![RateLimitOutcome::ErrorDenied]);
    // …or allow, and a deny policy in shadow mode lets it through too.
    for (on_error, extra) in [("allow", ""), ("deny", r#","shadow":true"#)] {
        let rt = global("{}", extra, on_error);
        fail_once(&rt, T0);
        let mut events = Vec::new();
        charge(&rt, &mut FakeStore::default(), T0 + 10 * MS, &mut events).expect("allowed");
        assert_eq!(
            outcomes(&events),
            vec![RateLimitOutcome::ErrorAllowed],
            "{on_error}{extra}"
        );
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_failed_call_is_answered_by_on_error_and_counted_each_time() {
    let deny = global("{}", "", "deny");
    let mut events = Vec::new();
    let charged = charge(&deny, &mut FakeStore::default(), T0, &mut events).expect("asks");
    let reply = answer_calls(
        &deny,
        &charged.calls,
        &[Reply::Error("unavailable".into())],
        T0 + 7 * MS,
        &mut events,
    )
    .expect_err("denied");
    assert_eq!(reply.reason, ReplyReason::RateLimitStoreError { policy: 0 });
    assert!(events.contains(&Event::GlobalCall {
        policy: 0,
        duration_ms: 7
    }));
    // A second failure (during back-off no call goes out, so answer one by hand).
    let _ = answer_calls(
        &deny,
        &charged.calls,
        &[Reply::Error("unavailable".into())],
        T0 + 8 * MS,
        &mut Vec::new(),
    );
    assert_eq!(deny.policies[0].counts.get().rpc_errors, 2);
}

#[wasm_bindgen_test(unsupported = test)]
fn an_allowed_answer_adds_the_services_headers_and_counts_leases() {
    let rt = global(r#"{"lease":{"hits":3,"ttlMs":100}}"#, "", "allow");
    let mut events = Vec::new();
    let charged = charge(&rt, &mut FakeStore::default(), T0, &mut events).expect("asks");
    assert_eq!(charged.calls[0].hits, 3);
    let ok = Reply::Ok {
        request_headers: vec![("x-up".into(), "1".into())],
        response_headers: vec![("x-down".into(), "2".into())],
    };
    let added = answer_calls(
        &rt,
        &charged.calls,
        std::slice::from_ref(&ok),
        T0 + MS,
        &mut events,
    )
    .expect("allowed");
    assert_eq!(added.request, vec![("x-up".to_string(), "1".to_string())]);
    assert_eq!(
        added.response,
        vec![("x-down".to_string(), "2".to_string())]
    );
    assert!(events.contains(&Event::GlobalLease { policy: 0 }));
    assert_eq!(outcomes(&events), vec![RateLimitOutcome::Allowed]);
    assert_eq!(rt.policies[0].counts.get().leases, 1);
    // Two more from the lease, then the next asks again and leases again.
    let mut events = Vec::new();
    for _ in 0..2 {
        let c = charge(&rt, &mut FakeStore::default(), T0 + 2 * MS, &mut events).expect("leased");
        assert!(c.calls.is_empty());
    }
    let c = charge(&rt, &mut FakeStore::default(), T0 + 2 * MS, &mut events).expect("asks");
    answer_calls(&rt, &c.calls, &[ok], T0 + 3 * MS, &mut events).expect("allowed");
    assert_eq!(rt.policies[0].counts.get().leases, 2);
}

#[wasm_bindgen_test(unsupported = test)]
fn an_over_limit_answer_rejects_with_the_windows_reset_and_is_remembered() {
    let rt = global(r#"{"lease":{"hits":3,"ttlMs":100}}"#, "", "allow");
    let mut events = Vec::new();
    let charged = charge(&rt, &mut FakeStore::default(), T0, &mut events).expect("asks");
    let over = Reply::OverLimit {
        reset_ns: Some(2_500 * MS),
        response_headers: vec![("x-why".into(), "quota".into())],
    };
    let reply =
        answer_calls(&rt, &charged.calls, &[over], T0 + MS, &mut events).expect_err("limited");
    assert_eq!(reply.reason, ReplyReason::RateLimited { policy: 0 });
    assert_eq!(header(&reply, "retry-after"), Some("3"));
    assert_eq!(
        header(&reply, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(header(&reply, "x-why"), Some("quota"));
    assert_eq!(outcomes(&events), vec![RateLimitOutcome::Limited]);
    // The key is remembered over its limit: rejected without a call.
    let mut events = Vec::new();
    let reply =
        charge(&rt, &mut FakeStore::default(), T0 + 2 * MS, &mut events).expect_err("cached");
    assert_eq!(header(&reply, "retry-after"), Some("3"));
    assert!(events.contains(&Event::GlobalCachedRejection { policy: 0 }));
    // In shadow mode the answer is counted and the request goes on.
    let shadow = global("{}", r#","shadow":true"#, "allow");
    let mut events = Vec::new();
    let charged = charge(&shadow, &mut FakeStore::default(), T0, &mut events).expect("asks");
    let over = Reply::OverLimit {
        reset_ns: None,
        response_headers: vec![],
    };
    answer_calls(&shadow, &charged.calls, &[over], T0 + MS, &mut events).expect("shadow");
    assert_eq!(outcomes(&events), vec![RateLimitOutcome::ShadowLimited]);
}
