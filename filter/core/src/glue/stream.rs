//! A stream as the glue keeps it between hooks.

use meshguard_engine::{RlsReply, StreamState};

/// A stream as the glue keeps it: the engine's state, and the calls to the rate
/// limit service it waits for (`token`, `reply`, in the order of `state.pending`).
#[derive(Debug, Default)]
pub struct Stream {
    /// What the engine decided so far.
    pub state: StreamState,
    /// Per pending call: its token (none when dispatch failed) and its reply.
    pub calls: Vec<(Option<u32>, Option<RlsReply>)>,
    /// A read of the fleet's first state the request waits for before it is
    /// decided: its token and when it was sent.
    pub fleet_read: Option<(u32, u64)>,
}

impl Stream {
    /// The request must wait: for a reply, or (answered locally) for ever.
    pub fn must_pause(&self) -> bool {
        self.state.rejected
            || self.fleet_read.is_some()
            || self.calls.iter().any(|(_, r)| r.is_none())
    }
}
