//! What loading a configuration builds for a worker: the engine's runtime of
//! the compiled config, with the ids of every metric it can produce (defined
//! once, here, never on the request path) and the shared-data prefix that
//! keeps this plugin's state apart from any other's, next to the worker's
//! state.

use std::cell::Cell;
use std::rc::Rc;

use meshguard_config::CompiledConfig;
use meshguard_engine::{Runtime, Vm};

use super::ids::{Definer, HostIds};
use super::worker::Worker;
use crate::host::{Configuration, HostError, Level};

/// A configured plugin instance: the engine's runtime (one struct per route and
/// per rate-limit policy, see [`meshguard_engine::RouteRuntime`], carrying this
/// host's metric ids) and the worker it runs on.
#[derive(Debug)]
pub struct Plugin {
    /// The engine's runtime of this configuration.
    pub runtime: Runtime<HostIds>,
    /// The worker's tick and owner id, shared with every other configuration
    /// it runs.
    pub worker: Rc<Worker>,
    /// This worker's fleet sync in flight: its token and when it was sent.
    pub fleet_call: Cell<Option<(u32, u64)>>,
}

/// Builds the plugin from a compiled config, defining its metrics.
pub fn build(
    host: &impl Configuration,
    config: CompiledConfig,
    worker: Rc<Worker>,
) -> Result<Plugin, HostError> {
    let name = host.plugin_name()?.unwrap_or_default();
    let runtime = Runtime::build(config, &name, &mut Definer(host))?;
    if runtime.fleet_service.is_some() {
        *runtime.envoy_name.borrow_mut() = host.node_name().unwrap_or_default();
    }
    let owner = worker.owner.get();
    let now = host.now_ns().unwrap_or(0);
    // The fingerprint secret, if this VM is the first: 128 fresh bits from the
    // host (from the VM's id and the clock when `random_get` fails).
    let random = || host.random_seed().unwrap_or(owner ^ now);
    let vm = Vm {
        owner,
        secret: [random(), meshguard_engine::mix64(random())],
        now,
    };
    for w in runtime.prepare(&mut host.store(), vm) {
        host.log(Level::Warn, &w);
    }
    Ok(Plugin {
        runtime,
        worker,
        fleet_call: Cell::new(None),
    })
}
