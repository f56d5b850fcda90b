//! What `on_configure` builds for a VM: the engine's runtime of the compiled config,
//! with the ids of every metric it can produce (defined once, here, never on the
//! request path) and the shared-data prefix that keeps this plugin's state apart
//! from any other's.

use meshguard_config::CompiledConfig;
use meshguard_engine::Runtime;

use super::metrics::{Definer, WasmIds};
use crate::host::{Host, HostError};

/// A configured plugin instance: one struct per route and per rate-limit policy
/// (see [`meshguard_engine::RouteRuntime`]), carrying this host's metric ids.
pub type Plugin = Runtime<WasmIds>;

/// Builds the plugin from a compiled config, defining its metrics.
pub fn build(host: &impl Host, config: CompiledConfig) -> Result<Plugin, HostError> {
    let name = host.plugin_name()?.unwrap_or_default();
    Runtime::build(config, &name, &mut Definer(host))
}
