//! What `on_configure` builds for a VM: the compiled config, the ids of every
//! metric (defined once, here, never on the request path), and the shared-data
//! prefix that keeps this plugin's buckets apart from any other's.

use meshguard_config::CompiledConfig;
use meshguard_engine::metrics::{ratelimit_requests, RATELIMIT_OUTCOMES};

use crate::host::{Host, HostError, MetricKind};

/// Version of the shared-data layout; part of every key.
pub const STORE_VERSION: &str = "mg1";

/// A configured plugin instance.
#[derive(Debug)]
pub struct Plugin {
    /// The compiled config.
    pub config: CompiledConfig,
    /// Metric ids.
    pub metrics: Metrics,
    /// `mg1.<plugin name>`: prefix of every shared-data key.
    pub store_prefix: String,
}

/// Metric ids, indexed like the config.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Per rate-limit policy, one counter per outcome.
    pub ratelimit: Vec<[u32; 5]>,
}

impl Metrics {
    /// Defines every metric the config can produce.
    pub fn define(host: &impl Host, config: &CompiledConfig) -> Result<Metrics, HostError> {
        let mut ratelimit = Vec::with_capacity(config.rate_limits.len());
        for p in &config.rate_limits {
            let mut ids = [0u32; 5];
            for (id, outcome) in ids.iter_mut().zip(RATELIMIT_OUTCOMES) {
                *id =
                    host.define_metric(MetricKind::Counter, &ratelimit_requests(&p.name, outcome))?;
            }
            ratelimit.push(ids);
        }
        Ok(Metrics { ratelimit })
    }
}

impl Plugin {
    /// Builds the plugin from a compiled config.
    pub fn new(host: &impl Host, config: CompiledConfig) -> Result<Plugin, HostError> {
        let name = host.plugin_name()?.unwrap_or_default();
        let name: String = String::from_utf8_lossy(&name)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(Plugin {
            metrics: Metrics::define(host, &config)?,
            store_prefix: format!("{STORE_VERSION}.{name}"),
            config,
        })
    }
}
