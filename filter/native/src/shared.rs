//! What every worker shares of one Envoy filter configuration: its name and
//! bytes (each worker builds its own copy from them) and its metrics.

use std::sync::atomic::AtomicBool;

use crate::host::metrics::Metrics;

/// One loaded configuration, shared by every worker.
#[derive(Debug)]
pub struct Shared {
    /// Distinguishes configurations (a new one may reuse a freed address).
    pub generation: u64,
    /// The filter's name (`filter_name`), the plugin name of shared-data keys.
    pub name: String,
    /// The configuration's JSON bytes.
    pub config: Vec<u8>,
    /// The metrics, fixed once the configuration has loaded.
    pub metrics: Metrics,
    /// Set when Envoy destroyed the configuration: workers drop their copy.
    pub destroyed: AtomicBool,
}
