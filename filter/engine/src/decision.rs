//! What the engine decides, as values: the glue applies them in one place each.
//!
//! - on the request headers, [`RequestEffects`]: the request-header edits, whether
//!   Envoy must pick the route again, at most one [`LocalReply`], and the
//!   [`Event`]s to count and log; plus the [`StreamState`] the stream keeps;
//! - on the response headers, [`ResponseEdits`]: the headers to set and add;
//! - at stream end, [`LogRecord`]: the RED sample and the events.

use std::borrow::Cow;

use crate::analysis::rollout::Change;
use crate::breaker::Ticket;
use crate::canary::Reason;
use crate::metrics::{CanaryState, CodeClass, RateLimitOutcome, RejectKind};
use crate::ratelimit::PendingCall;
use crate::Transition;

/// Which RED series a stream is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedSlot {
    /// The route with this index.
    Route(usize),
    /// Requests that matched no route (`route="other"`).
    Unmatched,
}

/// A rate-limit policy's numbers to advertise on the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertised {
    /// Index of the policy in the config.
    pub policy: usize,
    /// Whole tokens left.
    pub remaining: u64,
    /// Nanoseconds until the bucket is full again.
    pub full_in_ns: u64,
}

/// What a stream keeps from its request headers to its end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// Index of the matched route; `None`: passed through.
    pub route: Option<usize>,
    /// Index of the chosen variant in the route's canary policy.
    pub variant: Option<usize>,
    /// Why that variant.
    pub reason: Option<Reason>,
    /// The RED series this stream is counted under, if any.
    pub red: Option<RedSlot>,
    /// When the request started, ns (`None`: the clock failed; no duration).
    pub start_ns: Option<u64>,
    /// A local reply was sent: the stream must pause.
    pub rejected: bool,
    /// Rate-limit states to advertise on the response.
    pub advertise: Vec<Advertised>,
    /// The breaker's ticket, settled at stream end.
    pub ticket: Option<Ticket>,
    /// A `Set-Cookie` value for the response (a freshly issued sticky key).
    pub set_cookie: Option<String>,
    /// The response's status, noted as it passed (`None`: no response headers).
    pub code: Option<u64>,
    /// The response reached its end of stream through the filter.
    pub response_complete: bool,
    /// Calls to the rate limit service the request waits for (see
    /// `Runtime::resume`).
    pub pending: Vec<PendingCall>,
    /// Headers the rate limit service asked to add to the response.
    pub service_headers: Vec<(String, String)>,
    /// The gRPC status the response carried (`grpc-status` in its headers, as a
    /// trailers-only answer, or in its trailers); `None`: none seen.
    pub grpc_status: Option<u32>,
    /// When the response headers passed, ns (read only for `latency: headers`).
    pub headers_ns: Option<u64>,
    /// The request is gRPC (noted only when it waits for the rate limit service,
    /// whose verdict may need a gRPC reply).
    pub grpc_request: bool,
    /// A trusted caller asked for the decision header.
    pub asked: bool,
    /// The decision header's value, to add to the response.
    pub decision_header: Option<String>,
    /// The breaker of the chosen variant was open: its fallback variant serves.
    pub fallback: bool,
    /// Rate-limit outcomes `(policy, outcome, remaining)` from before a wait for
    /// the rate limit service, kept for the decision record (only with `explain`).
    pub earlier: Vec<(usize, &'static str, Option<u64>)>,
}

impl StreamState {
    /// Whether the response's status is needed (metrics or a breaker judge it).
    pub fn needs_status(&self) -> bool {
        self.red.is_some() || self.ticket.is_some()
    }
}

/// Why meshguard answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyReason {
    /// Rate-limit policy `policy` had no token.
    RateLimited {
        /// Index of the policy.
        policy: usize,
    },
    /// Policy `policy`'s bucket could not be updated and its `onStoreError` is deny.
    RateLimitStoreError {
        /// Index of the policy.
        policy: usize,
    },
    /// The breaker instance is open.
    BreakerOpen,
    /// The breaker instance is half-open with all probes out.
    BreakerHalfOpen,
    /// The route's concurrency limit is reached.
    Concurrency,
    /// A trusted caller asked for the status document.
    Status,
}

/// A local reply: the request is answered by meshguard, not the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply<'rt> {
    /// HTTP status.
    pub status: u16,
    /// Response headers (a rate limit service may name some).
    pub headers: Vec<(Cow<'static, str>, String)>,
    /// Body.
    pub body: Cow<'rt, str>,
    /// Why.
    pub reason: ReplyReason,
    /// The gRPC status this reply carries when the request is gRPC.
    pub grpc_status: u32,
    /// The request is gRPC: answer as gRPC does (see [`GrpcReply`]).
    pub grpc: Option<GrpcReply<'rt>>,
}

/// A local reply to a gRPC request: HTTP 200, trailers-only, with `grpc-status`
/// and `grpc-message` (Envoy builds it from these), and the headers of the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcReply<'rt> {
    /// `grpc-status`.
    pub status: u32,
    /// `grpc-message`: the body without its trailing newline.
    pub message: Cow<'rt, str>,
}

/// Something to count or log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A rate-limit policy's outcome for one request.
    RateLimit {
        /// Index of the policy.
        policy: usize,
        /// What happened.
        outcome: RateLimitOutcome,
        /// Whole tokens left after the charge, when a local bucket decided.
        remaining: Option<u64>,
        /// Tokens (hits) charged: the request's cost when a bucket, a lease or
        /// the rate limit service admitted it; 0 otherwise.
        cost: u64,
    },
    /// A local charge of policy `policy` used its table: the shared overflow
    /// bucket (`overflow`), or a slot no key had held before (`claimed`).
    TableUse {
        /// Index of the policy.
        policy: usize,
        /// Charged to the overflow bucket: every candidate slot was busy.
        overflow: bool,
        /// A new key took a slot never used before (the table's occupancy grew).
        claimed: bool,
    },
    /// A local charge of policy `policy` gave up after its compare-and-swap
    /// retries ran out (other workers kept writing the same slot).
    StoreConflict {
        /// Index of the policy.
        policy: usize,
    },
    /// A breaker instance changed phase.
    BreakerTransition {
        /// Route index.
        route: usize,
        /// Breaker instance within the route.
        instance: usize,
        /// From, to, why.
        transition: Transition,
    },
    /// A breaker instance rejected a request.
    BreakerRejected {
        /// Route index.
        route: usize,
        /// Breaker instance within the route.
        instance: usize,
        /// Why.
        kind: RejectKind,
    },
    /// A canary rollout changed (a state, a shadow verdict, a ramp step): counted
    /// and logged by the worker whose fold made the change.
    Rollout {
        /// Route index.
        route: usize,
        /// What changed, and why.
        change: Change,
    },
    /// A canary rollout's status as this worker now routes by it (set when it
    /// differs from the last one reported): the gauges.
    RolloutStatus {
        /// Route index.
        route: usize,
        /// Per variant, baseline first.
        variants: Vec<VariantStatus>,
        /// A fleet rollout's mode (`None`: judged by this Envoy alone).
        fleet: Option<crate::metrics::FleetMode>,
    },
    /// A sync with the fleet service ended after `duration_ms` (`error`: why
    /// it failed; the batches are sent again by the next sync).
    FleetSync {
        /// From the call to the answer, ms.
        duration_ms: u64,
        /// Why it failed, if it did.
        error: Option<String>,
        /// When, Unix ns.
        now: u64,
    },
    /// A global policy's call to the rate limit service was answered (or failed)
    /// after `duration_ms`.
    GlobalCall {
        /// Index of the policy.
        policy: usize,
        /// From the request to the answer, ms.
        duration_ms: u64,
    },
    /// A worker took a quota lease from the rate limit service.
    GlobalLease {
        /// Index of the policy.
        policy: usize,
    },
    /// A request was rejected from a remembered `OVER_LIMIT`, without a call.
    GlobalCachedRejection {
        /// Index of the policy.
        policy: usize,
    },
    /// Unexpected but handled (a store or clock failure and its fallback), for the log.
    Warning(String),
}

/// What to do with the request, decided on its headers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestEffects<'rt> {
    /// Request-header edits in order: set (`Some`) or remove every copy (`None`).
    pub headers: Vec<(&'rt str, Option<&'rt [u8]>)>,
    /// Request headers the rate limit service asked to set.
    pub service_headers: Vec<(String, String)>,
    /// A routing header changed: Envoy must pick the route again.
    pub clear_route_cache: bool,
    /// Answer locally instead of forwarding.
    pub reply: Option<LocalReply<'rt>>,
    /// What to count and log.
    pub events: Vec<Event>,
    /// The decision record, JSON, for filter state and the debug log (when
    /// `explain` asks for them).
    pub decision: Option<String>,
}

/// What to add to the response as it passes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResponseEdits<'rt> {
    /// Headers to set (replacing copies).
    pub set: Vec<(Cow<'rt, str>, String)>,
    /// Headers to add (keeping copies, as `set-cookie` needs).
    pub add: Vec<(Cow<'rt, str>, String)>,
}

/// How a stream ended, as the host saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Final status (0: none was sent).
    pub code: u64,
    /// Envoy's response flags (0 when not read: see [`crate::flags_matter`]).
    pub flags: u64,
    /// The response reached its end of stream.
    pub complete: bool,
    /// Now, ns (`None`: the clock failed).
    pub now: Option<u64>,
}

/// One RED sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedSample {
    /// The series.
    pub slot: RedSlot,
    /// The variant label: the policy's variant index, or `None` for `none`.
    pub variant: Option<usize>,
    /// The status class.
    pub class: CodeClass,
    /// It failed, as the route's breaker and analysis count failures (a
    /// failure status or gRPC code, a reset, a timeout, an overflow).
    pub failed: bool,
    /// The gRPC status label, on routes with `protocol: grpc`.
    pub grpc: Option<crate::metrics::GrpcLabel>,
    /// Duration in ms (`None`: nothing to record: the clock failed, or the stream
    /// was upgraded, e.g. a WebSocket, whose length is not latency).
    pub duration_ms: Option<u64>,
}

/// What the glue read from the response headers (each only when
/// [`crate::Runtime::response_reads`] asked for it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// `:status`.
    pub status: Option<u64>,
    /// `grpc-status` (a trailers-only gRPC answer).
    pub grpc_status: Option<u32>,
    /// The time, ns.
    pub now: Option<u64>,
    /// The response ends with its headers.
    pub end_of_stream: bool,
}

/// Which response values a stream needs read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResponseReads {
    /// `:status` (metrics or a breaker judge the stream).
    pub status: bool,
    /// `grpc-status`, from the headers of a 200 response or from the trailers.
    pub grpc_status: bool,
    /// The clock at the response headers (`latency: headers`).
    pub time: bool,
}

/// What to record when a stream ends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The RED sample (and the in-flight gauge to decrement), when counted.
    pub red: Option<RedSample>,
    /// Breaker transitions and warnings.
    pub events: Vec<Event>,
}
/// One variant's status, as the gauges show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VariantStatus {
    /// Effective weight, basis points.
    pub weight: u32,
    /// Its state (`None` for the baseline).
    pub state: Option<CanaryState>,
    /// Each sequential test's progress to its threshold, ‰ (errors, slow).
    pub evidence: [u32; 2],
    /// A shadow verdict was reached.
    pub shadow: bool,
    /// The verdict, once there is one.
    pub verdict: Option<VerdictInfo>,
}

/// A verdict as the status document shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerdictInfo {
    /// What decided it (`errors`, `slow`, `success_rate`, `z_test`, `manual`).
    pub cause: &'static str,
    /// The window that decided: seconds into the rollout.
    pub at_s: u64,
    /// A changepoint verdict: seconds into the rollout since which the
    /// evidence grew (an estimate of when the change began).
    pub since_s: Option<u64>,
}
