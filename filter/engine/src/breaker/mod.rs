//! Circuit breaking: a state machine per route (and variant), shared by every
//! worker through the CAS store.
//!
//! ```text
//!            trip (rate, slow rate, consecutive)
//!   CLOSED ──────────────────────────────────────▶ OPEN
//!     ▲                                              │ openDuration elapsed
//!     │ all P probes succeeded                       ▼
//!     └──────────────────────────────────────── HALF-OPEN ── a probe failed ──▶ OPEN (longer)
//! ```
//!
//! - [`window`]: the sliding window of recent outcomes (last N calls, or N seconds);
//! - [`state`]: the whole breaker state and its byte encoding;
//! - [`machine`]: admission and outcome recording, pure functions of state and time;
//! - [`local`]: the machine over the CAS store as one worker sees it (it batches
//!   writes and reuses what it read);
//! - [`shared`]: the concurrency limit's in-flight count;
//! - `gate`: one request's admission (slot, breaker, fallback) and its outcome at
//!   stream end, as decisions and events.

mod gate;
pub mod local;
pub mod machine;
pub mod shared;
pub mod state;
#[cfg(test)]
pub mod testing;
pub mod window;

pub use gate::{flush, gate, settle, Gate, Ticket};
