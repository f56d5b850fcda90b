//! Rate limiting: token buckets shared by every worker through a CAS store.
//!
//! - [`gcra`]: the bucket arithmetic (a token bucket kept as one timestamp);
//! - [`table`]: the bounded, CAS-updated table of buckets behind a [`table::SharedStore`];
//! - [`key`]: building a policy's key from the request;
//! - [`headers`]: the IETF `RateLimit-Policy` / `RateLimit` fields and the legacy trio.

pub mod gcra;
pub mod headers;
pub mod key;
pub mod lease;
pub mod table;
