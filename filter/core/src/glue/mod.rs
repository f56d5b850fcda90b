//! The glue between the engine and a host: each hook reads a view from the
//! host, asks the engine, and has the decision applied in one place
//! ([`apply`]). Every function is written against the host traits of its
//! scope ([`crate::host`]), so unit tests drive it with the fake host and both
//! builds run it unchanged.
//!
//! A request: [`request::on_request_headers`] (the tick woken, the engine's
//! decision, [`apply::apply_request`]) → [`request::on_response_headers`] →
//! [`request::on_stream_end`] ([`apply::apply_log`]). A tick:
//! [`tick::on_tick`]. A configuration: [`configure::configure`].

pub mod apply;
pub mod configure;
pub mod decide;
pub mod fleet;
pub mod ids;
pub mod plugin;
pub mod record;
pub mod request;
pub mod stream;
pub mod tick;
pub mod worker;

#[cfg(test)]
mod tests;
