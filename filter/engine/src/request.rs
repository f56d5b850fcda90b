//! The request path, as the engine decides it: one call per host callback.
//!
//! 1. [`Runtime::decide`] (request headers): route → rate limits → variant →
//!    breaker gate → routing headers, stopping at the first local reply;
//! 2. [`Runtime::respond`] (response headers): the RateLimit fields, the variant tag
//!    and the sticky cookie to add;
//! 3. [`Runtime::finish`] (stream end): the RED sample, the breaker's outcome;
//! 4. [`Runtime::tick`] (the root context's timer): held breaker outcomes.
//!
//! Each returns a value (see [`crate::decision`]); the glue applies it.

use std::borrow::Cow;

use crate::breaker::{self, Gate};
use crate::canary::{self, Split};
use crate::decision::{
    Completion, Event, LogRecord, RedSample, RedSlot, RequestEffects, ResponseEdits, ResponseHead,
    ResponseReads, StreamState,
};
use crate::explain;
use crate::grpc;
use crate::metrics::{CodeClass, GrpcLabel};
use crate::outcome::{flags_matter, is_failure};
use crate::ratelimit;
use crate::ratelimit::global::Reply;
use crate::rng::Rng;
use crate::route::select_route;
use crate::runtime::{Ids, Runtime};
use crate::store::SharedStore;
use crate::view::RequestView;
use meshguard_config::route::Latency;

/// Logged when the host's clock fails on the request path.
const NO_CLOCK: &str =
    "meshguard: the clock is unavailable; rate limits, breakers and the duration are skipped for this request";

impl<I: Ids> Runtime<I> {
    /// Whether a request must wait for the fleet's state: some fleet rollout
    /// has never read one, and the service is not yet unreachable. Reads
    /// only what the last tick left (no host call).
    pub fn awaits_fleet(&self) -> bool {
        self.fleet_rollouts().any(|(_, rt, _)| rt.awaiting.get())
    }

    /// Decides a request on its headers at `now` (`None`: the clock failed, and
    /// the time-dependent steps, rate limits and breakers, are skipped).
    pub fn decide<'rt>(
        &'rt self,
        req: &mut impl RequestView,
        store: &mut impl SharedStore,
        rng: &Rng,
        now: Option<u64>,
    ) -> (StreamState, RequestEffects<'rt>) {
        let mut fx = RequestEffects::default();
        if explain::wants_status(self, req) {
            fx.reply = Some(explain::status_reply(self, store, now));
            let state = StreamState {
                rejected: true,
                ..StreamState::default()
            };
            return (state, fx);
        }
        let index = select_route(self.routes.iter().map(|r| &r.route), req);
        let route = index.and_then(|i| self.routes.get(i));
        let mut state = StreamState {
            route: index,
            start_ns: now,
            red: match index {
                Some(i) => Some(RedSlot::Route(i)),
                None => self.unmatched.as_ref().map(|_| RedSlot::Unmatched),
            },
            ..StreamState::default()
        };
        if now.is_none() && route.is_some() {
            fx.events.push(Event::Warning(NO_CLOCK.into()));
        }
        state.asked = explain::asks_decision(self, req);
        let Some((i, route)) = index.zip(route) else {
            self.routing_headers(None, None, &mut fx);
            explain::explain_decision(self, &mut state, &[], &mut fx);
            return (state, fx);
        };
        if let Some(now) = now {
            match ratelimit::charge_route(self, route, req, store, now, &mut fx.events) {
                Ok(charged) => {
                    state.advertise = charged.advertise;
                    state.pending = charged.calls;
                }
                Err(mut reply) => {
                    grpc::shape(&mut reply, grpc::is_grpc_request(req));
                    state.rejected = true;
                    fx.reply = Some(reply);
                    explain::explain_decision(self, &mut state, &[], &mut fx);
                    return (state, fx);
                }
            }
        }
        let policy = route.route.canary.as_ref();
        if let Some(policy) = policy {
            let view = route.rollout.as_ref().map(|r| r.state.view.borrow());
            let split = match &view {
                Some(v) => Split {
                    slices: &v.slices,
                    rolled_back: &v.rolled_back,
                },
                None => Split {
                    slices: &policy.slices,
                    rolled_back: &[],
                },
            };
            let (choice, cookie) = canary::decide(policy, split, &self.headers.variant, req, rng);
            state.variant = Some(choice.variant);
            state.reason = Some(choice.reason);
            state.set_cookie = cookie;
        }
        if state.pending.is_empty() {
            self.pass_limits(i, &mut state, &mut fx, store, now);
            if let Some(reply) = &mut fx.reply {
                grpc::shape(reply, grpc::is_grpc_request(req));
            }
            explain::explain_decision(self, &mut state, &[], &mut fx);
        } else {
            state.grpc_request = grpc::is_grpc_request(req);
            if self.explain.is_some() {
                state.earlier = fx
                    .events
                    .iter()
                    .filter_map(crate::explain::limit_of)
                    .collect();
            }
        }
        (state, fx)
    }

    /// The rate limit service answered every pending call (`replies`, in the order
    /// of `state.pending`) at `now`: its verdict, then the rest of the decision.
    pub fn resume<'rt>(
        &'rt self,
        state: &mut StreamState,
        replies: &[Reply],
        store: &mut impl SharedStore,
        now: Option<u64>,
    ) -> RequestEffects<'rt> {
        let mut fx = RequestEffects::default();
        let pending = std::mem::take(&mut state.pending);
        let at = now.unwrap_or_else(|| pending.iter().map(|c| c.sent_at).max().unwrap_or(0));
        match ratelimit::answer_calls(self, &pending, replies, at, &mut fx.events) {
            Err(mut reply) => {
                grpc::shape(&mut reply, state.grpc_request);
                state.rejected = true;
                fx.reply = Some(reply);
            }
            Ok(added) => {
                fx.service_headers = added.request;
                state.service_headers = added.response;
                if let Some(i) = state.route {
                    self.pass_limits(i, state, &mut fx, store, now);
                    if let Some(reply) = &mut fx.reply {
                        grpc::shape(reply, state.grpc_request);
                    }
                }
            }
        }
        let earlier = std::mem::take(&mut state.earlier);
        explain::explain_decision(self, state, &earlier, &mut fx);
        fx
    }

    /// The request passed its rate limits: the breaker gate, then the routing
    /// headers (or the gate's reply).
    fn pass_limits<'rt>(
        &'rt self,
        i: usize,
        state: &mut StreamState,
        fx: &mut RequestEffects<'rt>,
        store: &mut impl SharedStore,
        now: Option<u64>,
    ) {
        let Some(route) = self.routes.get(i) else {
            return;
        };
        if let Some(now) = now {
            match breaker::gate(route, i, state.variant, store, now, &mut fx.events) {
                Gate::Pass(ticket) => state.ticket = ticket,
                Gate::Fallback(v, ticket) => {
                    state.variant = Some(v);
                    state.ticket = Some(ticket);
                    state.fallback = true;
                }
                Gate::Rejected(reply) => {
                    state.rejected = true;
                    fx.reply = Some(reply);
                    return;
                }
            }
        }
        let policy = route.route.canary.as_ref();
        let variant = policy
            .zip(state.variant)
            .and_then(|(p, v)| p.variants.get(v));
        self.routing_headers(Some(&route.route.name), variant, fx);
    }

    /// The variant and cluster headers (overwritten on a canary route, removed
    /// elsewhere when any policy exists, so no client can steer routing through
    /// them) and the route header.
    fn routing_headers<'rt>(
        &'rt self,
        route: Option<&'rt str>,
        variant: Option<&'rt meshguard_config::canary::CompiledVariant>,
        fx: &mut RequestEffects<'rt>,
    ) {
        match variant {
            Some(v) => {
                let write = self.tuning.routing_headers;
                if write.variant() {
                    fx.headers
                        .push((&self.headers.variant, Some(v.name.as_bytes())));
                }
                if write.cluster() {
                    fx.headers
                        .push((&self.headers.cluster, Some(v.cluster.as_bytes())));
                }
                fx.clear_route_cache = true;
            }
            None if self.scrub_routing_headers => {
                fx.headers.push((&self.headers.variant, None));
                fx.headers.push((&self.headers.cluster, None));
            }
            None => {}
        }
        if let Some(header) = &self.headers.route {
            fx.headers.push((header, route.map(str::as_bytes)));
        }
    }

    /// What the glue must read from this stream's response: the status (when the
    /// stream is counted or judged), `grpc-status` (on 200 responses of routes that
    /// look for gRPC: the glue reads the status first), the clock (`latency:
    /// headers`).
    pub fn response_reads(&self, state: &StreamState) -> ResponseReads {
        let status = state.needs_status();
        let route = state.route.and_then(|i| self.routes.get(i));
        ResponseReads {
            status,
            grpc_status: status
                && route.is_none_or(|r| r.route.protocol != meshguard_config::grpc::Protocol::Http),
            time: status && route.is_some_and(|r| r.route.latency == Latency::Headers),
        }
    }

    /// The response headers passed: note what the glue read (as
    /// [`Runtime::response_reads`] asked) and say what to add to the response.
    pub fn respond<'rt>(
        &'rt self,
        state: &mut StreamState,
        head: ResponseHead,
    ) -> ResponseEdits<'rt> {
        state.response_complete |= head.end_of_stream;
        state.code = head.status;
        state.grpc_status = head.grpc_status;
        state.headers_ns = head.now;
        let mut edits = ResponseEdits {
            set: ratelimit::response_fields(self, &state.advertise),
            add: Vec::new(),
        };
        edits.set.extend(
            state
                .service_headers
                .iter()
                .map(|(k, v)| (Cow::Owned(k.clone()), v.clone())),
        );
        let asked = self.explain.as_ref().and_then(|e| e.header.as_ref());
        if let (Some((_, name)), Some(value)) = (asked, state.decision_header.take()) {
            edits.set.push((Cow::Borrowed(name.as_str()), value));
        }
        let policy = state
            .route
            .and_then(|i| self.routes.get(i))
            .and_then(|r| r.route.canary.as_ref());
        let (Some(policy), Some(v)) = (policy, state.variant) else {
            return edits;
        };
        if policy.respond_with_variant {
            if let Some(variant) = policy.variants.get(v) {
                edits.set.push((
                    Cow::Borrowed(self.headers.variant.as_str()),
                    variant.name.clone(),
                ));
            }
        }
        if let Some(cookie) = &state.set_cookie {
            edits.add.push(("set-cookie".into(), cookie.clone()));
        }
        edits
    }

    /// The response trailers passed (the response is complete), with the
    /// `grpc-status` they carry (read when [`ResponseReads::grpc_status`]).
    pub fn trailers(&self, state: &mut StreamState, grpc_status: Option<u32>) {
        state.response_complete = true;
        if grpc_status.is_some() {
            state.grpc_status = grpc_status;
        }
    }

    /// Whether stream end needs Envoy's response flags for a call with final status
    /// `code`: a breaker or a canary analysis judges it and the flags can change the
    /// verdict.
    pub fn needs_flags(&self, state: &StreamState, code: u64) -> bool {
        if !flags_matter(code, state.response_complete) {
            return false;
        }
        let analysed = state
            .route
            .and_then(|i| self.routes.get(i))
            .and_then(|r| r.route.canary.as_ref()?.rollout.as_ref()?.analysis.as_ref())
            .is_some();
        // RED counts failures too: the flags are read when the status does not
        // already say the request failed (a reset, no status, a 4xx).
        state.ticket.is_some()
            || analysed
            || (state.red.is_some()
                && !is_failure(self.failures_of(state), code, state.grpc_status, 0))
    }

    /// What counts as a failure on the stream's route (the default off routes).
    fn failures_of(&self, state: &StreamState) -> &meshguard_config::status::FailureStatuses {
        state
            .route
            .and_then(|i| self.routes.get(i))
            .map_or(&self.default_failures, |r| &r.failures)
    }

    /// The stream ended (answered, reset or abandoned): what to record.
    pub fn finish(
        &self,
        state: &StreamState,
        end: Completion,
        store: &mut impl SharedStore,
    ) -> LogRecord {
        let mut record = LogRecord::default();
        let route = state.route.and_then(|i| self.routes.get(i));
        if let Some(slot) = state.red {
            let headers_only = route.is_some_and(|r| r.route.latency == Latency::Headers);
            let until = if headers_only {
                state.headers_ns.or(end.now)
            } else {
                end.now
            };
            record.red = Some(RedSample {
                slot,
                variant: state.variant,
                class: CodeClass::of(end.code),
                failed: is_failure(
                    self.failures_of(state),
                    end.code,
                    state.grpc_status,
                    end.flags,
                ),
                grpc: route
                    .filter(|r| r.route.protocol == meshguard_config::grpc::Protocol::Grpc)
                    .map(|_| GrpcLabel::of(state.grpc_status)),
                // An upgraded stream (101: a WebSocket) lasts as long as its
                // session: its length is not a request's latency.
                duration_ms: state
                    .start_ns
                    .zip(until)
                    .filter(|_| end.code != 101)
                    .map(|(start, now)| now.saturating_sub(start) / 1_000_000),
            });
        }
        if let Some(t) = &state.ticket {
            if let Some(route) = self.routes.get(t.route) {
                breaker::settle(route, t, &end, state.grpc_status, store, &mut record.events);
                if self.retired.get() {
                    // No tick writes what a retired configuration holds.
                    let now = end.now.unwrap_or(t.start_ns);
                    breaker::flush(route, t.route, store, now, &mut record.events, true);
                }
            }
        }
        let rollout = route.and_then(|r| {
            Some((
                r.rollout.as_ref()?,
                r.route.canary.as_ref()?.rollout.as_ref()?,
            ))
        });
        if let (Some((rt, config)), Some(v), false) = (rollout, state.variant, state.rejected) {
            let duration = state
                .start_ns
                .zip(end.now)
                .map(|(s, n)| n.saturating_sub(s));
            rt.state.count(config, v, &end, state.grpc_status, duration);
        }
        record
    }

    /// The root context's tick at `now`: writes held breaker outcomes that are due,
    /// and folds each rollout's counts (reading back its verdicts and steps).
    pub fn tick(&self, store: &mut impl SharedStore, now: u64) -> Vec<Event> {
        self.tick_with(store, now, false)
    }

    /// The last tick of a configuration being replaced (its root context is
    /// done): writes every breaker outcome still held and folds every rollout
    /// count, which no later tick of this configuration would; from now on its
    /// streams' breaker outcomes are written as they end.
    pub fn retire(&self, store: &mut impl SharedStore, now: u64) -> Vec<Event> {
        self.retired.set(true);
        self.tick_with(store, now, true)
    }

    /// A tick that writes every breaker outcome held, due or not, and folds every
    /// rollout count: for a host whose ticks run on its streams' hooks (the
    /// native build), when the last stream of a configuration on a worker ends and
    /// no later hook would write them.
    pub fn flush_held(&self, store: &mut impl SharedStore, now: u64) -> Vec<Event> {
        self.tick_with(store, now, true)
    }

    fn tick_with(&self, store: &mut impl SharedStore, now: u64, all: bool) -> Vec<Event> {
        let mut events = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            breaker::flush(route, i, store, now, &mut events, all);
        }
        self.tick_rollouts(store, now, &mut events);
        events
    }

    /// Reads (and, when due, advances) every rollout's shared record at `now`: at
    /// configure time, so a new VM or config routes by a verdict reached before it
    /// from its first request, and on every tick.
    pub fn tick_rollouts(&self, store: &mut impl SharedStore, now: u64, events: &mut Vec<Event>) {
        for (i, route) in self.routes.iter().enumerate() {
            let (Some(rt), Some(policy)) = (&route.rollout, &route.route.canary) else {
                continue;
            };
            if let Some(config) = &policy.rollout {
                let envoy = crate::hash::mix64(self.owner.get() ^ now);
                let service = self.fleet_service.as_ref();
                rt.state
                    .tick(i, policy, config, service, store, now, envoy, events);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::ReplyReason;
    use crate::metrics::RateLimitOutcome;
    use crate::runtime::testing::runtime;
    use crate::store::fake::FakeStore;
    use wasm_bindgen_test::wasm_bindgen_test;

    const SEC: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * SEC;

    use crate::view::testing::Req;

    const CANARY: &str = r#"{"schemaVersion":1,"routeHeader":"x-route","routes":[
        {"name":"api","match":{"pathPrefix":"/api"}},
        {"name":"web","match":{"pathPrefix":"/"},"canary":{"variants":[{"name":"stable","weight":0},{"name":"canary","cluster":"web-v2","weight":10000}],
          "respondWithVariant":true}}]}"#;

    #[wasm_bindgen_test(unsupported = test)]
    fn a_canary_route_sets_both_routing_headers_and_asks_for_a_re_pick() {
        let rt = runtime(CANARY);
        let (state, fx) = rt.decide(
            &mut Req(vec![(":path", b"/")]),
            &mut FakeStore::default(),
            &Rng::new(1),
            Some(SEC),
        );
        assert_eq!((state.route, state.variant), (Some(1), Some(1)));
        assert_eq!(state.red, Some(RedSlot::Route(1)));
        assert_eq!(
            fx.headers,
            vec![
                ("x-meshguard-variant", Some(&b"canary"[..])),
                ("x-meshguard-cluster", Some(&b"web-v2"[..])),
                ("x-route", Some(&b"web"[..])),
            ]
        );
        assert!(fx.clear_route_cache && fx.reply.is_none() && fx.events.is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn elsewhere_client_copies_of_routing_headers_are_removed() {
        let rt = runtime(CANARY);
        for (path, route) in [(&b"/api"[..], Some(&b"api"[..])), (&b""[..], None)] {
            let mut req = Req(vec![(":path", path)]);
            if path.is_empty() {
                req.0.clear();
            }
            let (_, fx) = rt.decide(&mut req, &mut FakeStore::default(), &Rng::new(1), Some(SEC));
            assert_eq!(
                fx.headers,
                vec![
                    ("x-meshguard-variant", None),
                    ("x-meshguard-cluster", None),
                    ("x-route", route)
                ]
            );
            assert!(!fx.clear_route_cache);
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_response_gets_the_variant_tag_and_stream_end_a_red_sample() {
        let rt = runtime(CANARY);
        let (mut state, _) = rt.decide(
            &mut Req(vec![(":path", b"/")]),
            &mut FakeStore::default(),
            &Rng::new(1),
            Some(SEC),
        );
        let head = ResponseHead {
            status: Some(503),
            end_of_stream: true,
            ..ResponseHead::default()
        };
        let edits = rt.respond(&mut state, head);
        assert_eq!(
            edits.set,
            vec![("x-meshguard-variant".into(), "canary".to_string())]
        );
        assert!(edits.add.is_empty());
        assert_eq!((state.code, state.response_complete), (Some(503), true));
        let end = Completion {
            code: 503,
            flags: 0,
            complete: true,
            now: Some(SEC + 42_000_000),
        };
        let record = rt.finish(&state, end, &mut FakeStore::default());
        assert_eq!(
            record.red,
            Some(RedSample {
                slot: RedSlot::Route(1),
                variant: Some(1),
                class: CodeClass::ServerError,
                failed: true,
                grpc: None,
                duration_ms: Some(42)
            })
        );
        let record = rt.finish(
            &state,
            Completion { now: None, ..end },
            &mut FakeStore::default(),
        );
        assert_eq!(
            record.red.and_then(|r| r.duration_ms),
            None,
            "no clock, no duration"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_rejection_stops_the_decision_with_one_reply_and_its_outcome() {
        let rt = runtime(
            r#"{"schemaVersion":1,"routeHeader":"x-route","routes":[{"name":"web"}],
                "rateLimits":[{"name":"one","key":[],"limit":{"burst":1,"rate":1,"per":"minute"},
                  "response":{"status":503,"body":"slow down"}}]}"#,
        );
        let mut store = FakeStore::default();
        let first = rt.decide(&mut Req::default(), &mut store, &Rng::new(1), Some(SEC));
        assert!(!first.0.rejected);
        let (state, fx) = rt.decide(&mut Req::default(), &mut store, &Rng::new(1), Some(SEC));
        assert!(state.rejected);
        let reply = fx.reply.expect("a reply");
        assert_eq!((reply.status, reply.body.as_ref()), (503, "slow down"));
        assert_eq!(reply.reason, ReplyReason::RateLimited { policy: 0 });
        assert!(reply
            .headers
            .contains(&("retry-after".into(), "60".to_string())));
        assert!(fx.headers.is_empty(), "nothing forwarded, nothing written");
        assert_eq!(
            fx.events,
            vec![Event::RateLimit {
                policy: 0,
                outcome: RateLimitOutcome::Limited,
                remaining: Some(0),
                cost: 0,
            }]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn without_a_clock_limits_and_breakers_are_skipped_and_said_so() {
        let rt = runtime(
            r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{"maxConcurrent":1}}],
                "rateLimits":[{"name":"one","key":[],"limit":{"burst":1,"rate":1,"per":"hour"}}]}"#,
        );
        let mut store = FakeStore::default();
        for _ in 0..3 {
            let (state, fx) = rt.decide(&mut Req::default(), &mut store, &Rng::new(1), None);
            assert!(!state.rejected && state.ticket.is_none() && state.start_ns.is_none());
            assert_eq!(fx.events, vec![Event::Warning(NO_CLOCK.into())]);
        }
        assert_eq!((store.gets, store.sets), (0, 0));
    }

    fn vm(owner: u64, now: u64) -> crate::runtime::Vm {
        crate::runtime::Vm {
            owner,
            secret: [owner, owner ^ 1],
            now,
        }
    }

    const LIMITED: &str = r#"{"schemaVersion":1,"routes":[{"name":"web"}],
        "rateLimits":[{"name":"k","key":[{"header":"x-k"}],"limit":{"burst":1,"rate":1,"per":"hour"},"maxKeys":8}]}"#;

    #[wasm_bindgen_test(unsupported = test)]
    fn workers_adopt_one_fingerprint_secret_even_when_they_configure_at_once() {
        let mut store = FakeStore::default();
        let (a, b) = (runtime(LIMITED), runtime(LIMITED));
        assert!(a.prepare(&mut store, vm(10, T0)).is_empty());
        assert_eq!(
            a.policies[0].table.secret.get(),
            [10, 11],
            "the first creates it"
        );
        b.prepare(&mut store, vm(20, T0));
        assert_eq!(
            b.policies[0].table.secret.get(),
            [10, 11],
            "the next adopts it"
        );
        // A third worker configured at the same moment wrote its own after `a`
        // read: `a` re-reads once, a second after configure, and then agrees.
        let c = runtime(LIMITED);
        store.data.remove("mg1.meshguard.secret");
        c.prepare(&mut store, vm(30, T0));
        assert_eq!(c.policies[0].table.secret.get(), [30, 31]);
        let req = || Req(vec![(":path", b"/"), ("x-k", b"1")]);
        let _ = a.decide(&mut req(), &mut store, &Rng::new(1), Some(T0 + SEC - 1));
        assert_eq!(a.policies[0].table.secret.get(), [10, 11], "not yet");
        let _ = a.decide(&mut req(), &mut store, &Rng::new(1), Some(T0 + SEC));
        assert_eq!(a.policies[0].table.secret.get(), [30, 31]);
        // Only once: a later change is not picked up request by request.
        let mut other = 40u64.to_le_bytes().to_vec();
        other.extend_from_slice(&41u64.to_le_bytes());
        store.set("mg1.meshguard.secret", &other, None).unwrap();
        let _ = a.decide(&mut req(), &mut store, &Rng::new(1), Some(T0 + 2 * SEC));
        assert_eq!(a.policies[0].table.secret.get(), [30, 31]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_secret_left_by_another_version_is_replaced_and_a_config_without_limits_reads_none() {
        let mut store = FakeStore::default();
        store.set("mg1.meshguard.secret", b"short", None).unwrap();
        let a = runtime(LIMITED);
        a.prepare(&mut store, vm(5, T0));
        assert_eq!(a.policies[0].table.secret.get(), [5, 4]);
        let mut empty = FakeStore::default();
        runtime(r#"{"schemaVersion":1,"routes":[{"name":"web"}]}"#).prepare(&mut empty, vm(1, T0));
        assert_eq!((empty.gets, empty.sets), (0, 0));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_trapped_vms_slots_are_reclaimed_while_a_live_vms_are_kept_by_its_tick() {
        let cfg = r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{"maxConcurrent":2}}]}"#;
        let mut store = FakeStore::default();
        let (dead, live) = (runtime(cfg), runtime(cfg));
        dead.prepare(&mut store, vm(1, T0));
        live.prepare(&mut store, vm(2, T0));
        let req = || Req(vec![(":path", b"/")]);
        let go = |rt: &Runtime<_>, store: &mut FakeStore, at| {
            let (state, _) = rt.decide(&mut req(), store, &Rng::new(1), Some(at));
            state
        };
        // The dead VM takes one slot and traps (its stream never finishes); the
        // live VM holds one for a long stream, ticking every 50 ms.
        assert!(go(&dead, &mut store, T0).ticket.is_some());
        let long = go(&live, &mut store, T0);
        assert!(long.ticket.is_some());
        assert!(live.holds_work(), "a held slot keeps the tick running");
        assert!(go(&live, &mut store, T0).rejected, "2 of 2 taken");
        let mut now = T0;
        while now < T0 + 3 * crate::breaker::shared::RECLAIM_NS {
            now += 50_000_000;
            live.tick(&mut store, now);
        }
        // The dead VM's slot is back; the live one's is still held.
        let next = go(&live, &mut store, now);
        assert!(next.ticket.is_some() && !next.rejected);
        assert!(
            go(&live, &mut store, now).rejected,
            "the long stream still counts"
        );
        let end = Completion {
            code: 200,
            flags: 0,
            complete: true,
            now: Some(now),
        };
        live.finish(&long, end, &mut store);
        live.finish(&next, end, &mut store);
        assert_eq!(live.routes[0].slots.as_ref().map(|s| s.held.get()), Some(0));
        assert_eq!(
            crate::breaker::shared::in_flight(&mut store, "mg1.meshguard.cc2.web", now),
            Ok(0)
        );
    }

    /// RED counts failures as the route's breaker and analysis do: a failure
    /// status, a failure gRPC code under HTTP 200, a reset; not a caller's error.
    #[wasm_bindgen_test(unsupported = test)]
    fn red_counts_a_failure_as_the_breaker_does_and_reads_flags_only_when_the_status_cannot_say() {
        let plain = runtime(r#"{"schemaVersion":1,"routes":[{"name":"rpc"}]}"#);
        let own = runtime(
            r#"{"schemaVersion":1,"routes":[{"name":"rpc","breaker":{"consecutiveFailures":1000,
                "failureStatuses":["429"],"failureGrpcCodes":["INVALID_ARGUMENT"]}}]}"#,
        );
        let decide = |rt: &Runtime<_>| {
            rt.decide(
                &mut Req(vec![(":path", b"/")]),
                &mut FakeStore::default(),
                &Rng::new(1),
                Some(SEC),
            )
            .0
        };
        let failed = |rt: &Runtime<_>, code: u64, grpc: Option<u32>, flags: u64, complete: bool| {
            let mut state = decide(rt);
            state.grpc_status = grpc;
            state.response_complete = complete;
            let end = Completion {
                code,
                flags,
                complete,
                now: Some(2 * SEC),
            };
            rt.finish(&state, end, &mut FakeStore::default())
                .red
                .is_some_and(|r| r.failed)
        };
        // The default: 5xx, the default gRPC codes, resets.
        assert!(failed(&plain, 503, None, 0, true));
        assert!(
            failed(&plain, 200, Some(14), 0, true),
            "UNAVAILABLE under 200"
        );
        assert!(
            !failed(&plain, 200, Some(3), 0, true),
            "INVALID_ARGUMENT: the caller's"
        );
        assert!(!failed(&plain, 404, None, 0, true));
        assert!(
            failed(&plain, 0, None, 0x10, false),
            "reset before any response"
        );
        assert!(failed(&plain, 200, None, 0x10, false), "reset mid-body");
        assert!(!failed(&plain, 0, None, 0, false), "the client left");
        assert!(!failed(&plain, 200, Some(0), 0, true));
        // A breaker's own definition is the route's.
        assert!(failed(&own, 429, None, 0, true));
        assert!(!failed(&own, 503, None, 0, true));
        assert!(failed(&own, 200, Some(3), 0, true));
        assert!(!failed(&own, 200, Some(14), 0, true));
        // Flags: read only where they could change the verdict.
        let mut s = decide(&plain);
        s.response_complete = true;
        assert!(!plain.needs_flags(&s, 200), "a complete 2xx");
        assert!(
            !plain.needs_flags(&s, 503),
            "already a failure by its status"
        );
        assert!(plain.needs_flags(&s, 404), "a 4xx may carry a failure flag");
        s.response_complete = false;
        assert!(plain.needs_flags(&s, 200), "cut short");
        assert!(plain.needs_flags(&s, 0), "no status");
        let unmatched =
            runtime(r#"{"schemaVersion":1,"routes":[{"name":"a","match":{"pathPrefix":"/a"}}]}"#);
        assert!(
            failed(&unmatched, 502, None, 0, true),
            "requests off every route: the default"
        );
    }
}
