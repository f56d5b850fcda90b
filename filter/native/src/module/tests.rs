//! The module's hooks driven through mocks of Envoy's handles: what each hook
//! asks of Envoy, without Envoy (the same paths run against a real Envoy in
//! `integration-tests`, with `MESHGUARD_HOST=native`).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use meshguard_core::host::MetricKind;

use super::*;
use crate::abi::envoy::MetricOp;
use crate::abi::mock::{take_logs, MockConfig, MockStream};
use crate::abi::{Flow, Hook, HttpFilter};

const LIMITED: &str = r#"{"schemaVersion":1,"rateLimits":[{"name":"one",
    "key":[{"route":true}],"limit":{"burst":1,"rate":1,"per":"hour"}}],
    "routes":[{"name":"web"}]}"#;

const BREAKER: &str = r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{}}]}"#;

const GLOBAL: &str = r#"{"schemaVersion":1,
    "rateLimitService":{"cluster":"rls","domain":"d","timeoutMs":100},
    "rateLimits":[{"name":"g","key":[{"route":true}],"global":{}}],
    "routes":[{"name":"web"}]}"#;

fn load(json: &str) -> (Arc<MockConfig>, Arc<Module>) {
    let mock = MockConfig::new();
    let module = Module::new(&Config::mock(mock.clone()), "meshguard", json.as_bytes());
    (mock, Arc::new(module.expect("the configuration loads")))
}

fn stream(module: &Arc<Module>, headers: &[(&str, &str)]) -> (Rc<MockStream>, Stream, Filter) {
    let mock = MockStream::with(headers);
    let envoy = Stream::mock(mock.clone());
    let f = Module::new_filter(module, envoy.clone()).expect("a stream");
    (mock, envoy, f)
}

/// One request through the hooks, answered `status` upstream unless meshguard
/// answered it: the stream's mock and the headers hook's flow.
fn request(module: &Arc<Module>, status: &str) -> (Rc<MockStream>, Flow) {
    let (mock, envoy, f) = stream(module, &[(":path", "/"), (":method", "GET")]);
    let flow = f.request_headers(&envoy, true);
    if flow == Flow::Continue {
        mock.response
            .borrow_mut()
            .push((":status".into(), status.as_bytes().to_vec()));
        f.response_headers(&envoy, true);
    }
    f.stream_complete(&envoy);
    drop(f);
    (mock, flow)
}

#[test]
fn a_configuration_loads_once_defining_labelled_families_and_a_bad_one_is_refused_with_its_path() {
    let (mock, module) = load(LIMITED);
    let families = mock.families.lock().unwrap().clone();
    assert!(families.contains(&(
        MetricKind::Counter,
        "meshguard_ratelimit_requests_total".to_owned(),
        vec!["policy".into(), "outcome".into()]
    )));
    assert!(
        module.shared.metrics.keeps_counts(),
        "Envoy gave a scheduler"
    );
    take_logs();
    let bad = Module::new(
        &Config::mock(MockConfig::new()),
        "meshguard",
        br#"{"schemaVersion":1,"routes":[{"name":""}]}"#,
    );
    assert!(bad.is_none());
    let logs = take_logs();
    assert!(
        logs.iter().any(
            |(_, m)| m == "meshguard: invalid configuration: routes[0].name: must not be empty"
        ),
        "{logs:?}"
    );
}

#[test]
fn a_limited_request_is_answered_locally_and_its_counts_wait_for_the_main_thread() {
    let (config, module) = load(LIMITED);
    let (first, flow) = request(&module, "200");
    assert_eq!(flow, Flow::Continue);
    assert!(first.replies.borrow().is_empty());
    let (second, flow) = request(&module, "200");
    assert_eq!(flow, Flow::Stop);
    let replies = second.replies.borrow();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, 429);
    // Counts went to the configuration, not through the streams.
    let counted = |m: &MockStream| {
        m.writes
            .borrow()
            .iter()
            .filter(|w| w.0 == MetricOp::AddCounter)
            .count()
    };
    assert_eq!(counted(&first) + counted(&second), 0);
    config.writes.lock().unwrap().clear();
    module.scheduled(&Config::mock(config.clone()), ticker::FLUSH_EVENT);
    let writes = config.writes.lock().unwrap().clone();
    let outcome = |o: &str| {
        writes
            .iter()
            .find(|w| w.2 == vec!["one".to_owned(), o.to_owned()])
            .map(|w| w.3)
    };
    assert_eq!(outcome("allowed"), Some(1));
    assert_eq!(outcome("limited"), Some(1));
    // The duration of the answered request, held and recorded there too.
    assert!(writes.iter().any(|w| w.0 == MetricOp::Record));
}

#[test]
fn a_worker_ticks_through_a_lent_scheduler_and_its_last_stream_hands_back_what_it_holds() {
    let (_, module) = load(BREAKER);
    let (mock, envoy, f) = stream(&module, &[(":path", "/")]);
    assert_eq!(f.request_headers(&envoy, true), Flow::Continue);
    // The breaker needs the tick: this stream lent its scheduler.
    let lent = mock.schedulers.borrow().first().cloned().expect("lent");
    assert!(f.instance.lender.lending());
    let plugin = f.instance.plugin.clone().expect("built");
    assert!(plugin.worker.ticking());
    // A tick posted to it runs the worker's tick.
    f.scheduled(&envoy, ticker::TICK_EVENT);
    mock.response
        .borrow_mut()
        .push((":status".into(), b"503".to_vec()));
    f.response_headers(&envoy, true);
    f.stream_complete(&envoy);
    // The last live stream is over: its scheduler is deleted, the ticks
    // stopped, and the breaker's held outcome is written (none held).
    assert!(lent.deleted.load(Ordering::Acquire));
    assert!(!plugin.worker.ticking());
    let breaker = &plugin.runtime.routes[0].breakers[0];
    assert_eq!(breaker.local.borrow().pending(), 0);
    // The next request asks for ticks again, from its own stream.
    let (next, envoy, f) = stream(&module, &[(":path", "/")]);
    f.request_headers(&envoy, true);
    assert_eq!(next.schedulers.borrow().len(), 1);
    assert!(plugin.worker.ticking());
    f.stream_complete(&envoy);
}

#[test]
fn a_panicked_request_is_answered_503_or_unavailable_for_grpc_and_later_hooks_continue() {
    let (_, module) = load(LIMITED);
    let (mock, envoy, f) = stream(&module, &[(":path", "/")]);
    assert_eq!(f.panicked(&envoy, Hook::RequestHeaders), Flow::Stop);
    assert_eq!(mock.replies.borrow()[0].0, 503);
    let (grpc, envoy, f) = stream(&module, &[("content-type", "application/grpc")]);
    assert_eq!(f.panicked(&envoy, Hook::RequestBody), Flow::Stop);
    let replies = grpc.replies.borrow();
    assert_eq!(replies[0].0, 200);
    assert!(replies[0]
        .1
        .contains(&("grpc-status".to_owned(), "14".to_owned())));
    assert_eq!(f.panicked(&envoy, Hook::Later), Flow::Continue);
}

#[test]
fn a_request_waits_for_the_rate_limit_service_and_a_failed_answer_lets_it_go_on() {
    let (_, module) = load(GLOBAL);
    let (mock, envoy, f) = stream(&module, &[(":path", "/"), (":authority", "a")]);
    assert_eq!(f.request_headers(&envoy, false), Flow::Stop);
    let callouts = mock.callouts.borrow().clone();
    assert_eq!(callouts.len(), 1);
    assert_eq!(callouts[0].0, "rls");
    assert!(callouts[0].1.contains(&(
        ":path".to_owned(),
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit".to_owned()
    )));
    // The body waits for the verdict.
    assert_eq!(f.request_body(&envoy, false), Flow::Stop);
    f.callout_done(&envoy, 1, Answer::default());
    assert_eq!(mock.notes.borrow().as_slice(), ["continue_decoding"]);
    assert!(mock.replies.borrow().is_empty(), "a service error allows");
    assert_eq!(f.request_body(&envoy, true), Flow::Continue);
    f.stream_complete(&envoy);
}

#[test]
fn a_destroyed_configuration_flushes_its_counts_and_workers_drop_their_copies() {
    let (config, module) = load(LIMITED);
    request(&module, "200");
    config.writes.lock().unwrap().clear();
    module.destroy();
    assert!(!config.writes.lock().unwrap().is_empty(), "the last flush");
    assert!(module.shared.destroyed.load(Ordering::Acquire));
    let schedulers = config.schedulers.lock().unwrap().clone();
    assert!(schedulers.iter().all(|s| s.deleted.load(Ordering::Acquire)));
    // The next configuration's first stream builds a new copy.
    let (_, other) = load(LIMITED);
    let (_, _, f) = stream(&other, &[]);
    assert_eq!(f.instance.shared.generation, other.shared.generation);
}
