//! An in-memory [`Host`] for unit tests of the glue: builder-style setup,
//! recorded effects, and injectable host failures.

use std::cell::RefCell;

use super::{Host, HostError, Level};

/// A fake proxy: request headers in a list, logs and header reads recorded.
#[derive(Debug, Default)]
pub struct FakeHost {
    config: Option<Vec<u8>>,
    headers: RefCell<Vec<(String, Vec<u8>)>>,
    failing_reads: Vec<String>,
    source: Option<Vec<u8>>,
    /// Response headers written.
    pub response_headers: RefCell<Vec<(String, Vec<u8>)>>,
    /// How often the route cache was cleared.
    pub route_cache_clears: std::cell::Cell<u32>,
    /// Every log line written, with its level.
    pub logs: RefCell<Vec<(Level, String)>>,
    /// Every header name read, in order.
    pub reads: RefCell<Vec<String>>,
}

impl FakeHost {
    /// An empty fake host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the plugin configuration.
    pub fn with_config(mut self, json: &str) -> Self {
        self.config = Some(json.as_bytes().to_vec());
        self
    }

    /// Adds a request header.
    pub fn with_header(self, name: &str, value: &[u8]) -> Self {
        self.headers
            .borrow_mut()
            .push((name.to_owned(), value.to_vec()));
        self
    }

    /// Sets the caller's address (`source.address`).
    pub fn from_address(mut self, addr: &str) -> Self {
        self.source = Some(addr.as_bytes().to_vec());
        self
    }

    /// Values of response header `name` written so far.
    pub fn response_values(&self, name: &str) -> Vec<Vec<u8>> {
        self.response_headers
            .borrow()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Makes reads of `name` fail as a broken host would.
    pub fn failing_read(mut self, name: &str) -> Self {
        self.failing_reads.push(name.to_owned());
        self
    }

    /// Current values of request header `name`.
    pub fn header_values(&self, name: &str) -> Vec<Vec<u8>> {
        self.headers
            .borrow()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl Host for FakeHost {
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.config.clone())
    }

    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.reads.borrow_mut().push(name.to_owned());
        if self.failing_reads.iter().any(|n| n == name) {
            return Err(HostError {
                call: format!("get_map_value_bytes({name})"),
                status: "InternalFailure".into(),
            });
        }
        Ok(self
            .headers
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone()))
    }

    fn set_request_header(&self, name: &str, value: Option<&[u8]>) -> Result<(), HostError> {
        let mut h = self.headers.borrow_mut();
        h.retain(|(n, _)| n != name);
        if let Some(v) = value {
            h.push((name.to_owned(), v.to_vec()));
        }
        Ok(())
    }

    fn source_address(&self) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.source.clone())
    }

    fn clear_route_cache(&self) -> Result<(), HostError> {
        self.route_cache_clears
            .set(self.route_cache_clears.get() + 1);
        Ok(())
    }

    fn set_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        let mut h = self.response_headers.borrow_mut();
        h.retain(|(n, _)| n != name);
        h.push((name.to_owned(), value.to_vec()));
        Ok(())
    }

    fn add_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.response_headers
            .borrow_mut()
            .push((name.to_owned(), value.to_vec()));
        Ok(())
    }

    fn random_seed(&self) -> Result<u64, HostError> {
        Ok(0x5eed)
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }
}
