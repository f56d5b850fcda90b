//! Rate limiting: token buckets shared by every worker through a CAS store.
//!
//! - [`gcra`]: the bucket arithmetic (a token bucket kept as one timestamp);
//! - [`table`]: the bounded, CAS-updated table of buckets behind a [`crate::SharedStore`];
//! - [`key`]: building a policy's key from the request;
//! - [`lease`]: a worker's tokens taken ahead from a bucket far from empty;
//! - [`headers`]: the IETF `RateLimit-Policy` / `RateLimit` fields and the legacy trio;
//! - [`global`]: global policies' calls to the rate limit service, leases, back-off;
//! - `charge`: one request against every policy of its route, as outcomes and a reply.

mod charge;
pub mod gcra;
pub mod global;
pub mod headers;
pub mod key;
pub mod lease;
pub mod table;

pub use charge::{answer_calls, charge_route, response_fields, PendingCall};
