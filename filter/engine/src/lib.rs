//! meshguard's decision logic, free of the proxy.
//!
//! Nothing here names `proxy_wasm`, reads a clock or draws an unseeded random
//! number: the glue passes in what the host knows (the request through a
//! [`RequestView`], shared data through a [`SharedStore`], the time, a seeded
//! [`Rng`]) and gets back a decision as a value ([`decision`]), which it applies.
//! That keeps every decision unit-testable, natively and on wasm32 under
//! `wasm-bindgen-test`.
//!
//! The request path is four calls on a [`Runtime`] (see `request.rs`): `decide`,
//! `respond`, `finish` and `tick`. Under them, one module per concern: route
//! selection, canary choice, rate limiting (`ratelimit`: GCRA buckets in a bounded
//! table, leases, headers), circuit breaking (`breaker`: window, state machine, a
//! worker's local view, the gate), failure classification and metric names.

mod analysis;
mod breaker;
mod canary;
pub mod decision;
mod explain;
mod grpc;
mod hash;
mod le;
pub mod metrics;
mod outcome;
mod params;
mod ratelimit;
mod request;
mod rng;
mod route;
mod runtime;
mod store;
mod sync;
mod time;
mod view;

pub use analysis::fleet::service::{fold_batches, Batch as FleetBatch, Decided, Folded};
pub use analysis::fleet::wire::{cause_from_pb, counts_from_pb, state_of};
pub use analysis::rollout::{Cause, Change, Counts, Record};
pub use breaker::local::{Local, MAX_DELAY_NS, STALE_NS};
pub use breaker::machine::Transition;
pub use breaker::state::{snapshot as breaker_snapshot, Phase, Snapshot as BreakerSnapshot};
pub use breaker::window::Totals;
pub use breaker::Ticket;
pub use canary::{parse_source_address, Reason};
pub use decision::{
    Advertised, Completion, Event, GrpcReply, LocalReply, LogRecord, RedSample, RedSlot,
    ReplyReason, RequestEffects, ResponseEdits, ResponseHead, ResponseReads, StreamState,
};
pub use decision::{VariantStatus, VerdictInfo};
pub use hash::mix64;
pub use metrics::{
    ByLabel, CanaryState, CodeClass, FleetMode, GrpcLabel, Label, RateLimitOutcome, RejectKind,
    Signal, SyncOutcome,
};
pub use outcome::{flags_matter, is_failure, parse_grpc_status, FAILURE_FLAGS};
pub use ratelimit::global::{reply as rls_reply, Reply as RlsReply};
pub use ratelimit::PendingCall;
pub use rng::Rng;
pub use runtime::{
    breaker_labels, red_labels, BreakerInstance, DefineIds, HeaderNames, Ids, PolicyRuntime,
    Rollout, RouteRuntime, Runtime, Vm, STORE_VERSION,
};
pub use store::{SharedStore, StoreError, MAX_CAS_ATTEMPTS};
pub use view::RequestView;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties;
