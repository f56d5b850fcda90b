//! What `on_configure` builds for a VM: the engine's runtime of the compiled config,
//! with the ids of every metric it can produce (defined once, here, never on the
//! request path) and the shared-data prefix that keeps this plugin's state apart
//! from any other's, next to the worker's VM-wide state.

use std::cell::Cell;
use std::ops::Deref;
use std::rc::Rc;

use meshguard_config::CompiledConfig;
use meshguard_engine::{Runtime, Vm};

use super::metrics::{Definer, WasmIds};
use super::worker::Worker;
use crate::host::{Host, HostError};

/// A configured plugin instance: the engine's runtime (one struct per route and
/// per rate-limit policy, see [`meshguard_engine::RouteRuntime`], carrying this
/// host's metric ids) and the worker it runs on.
#[derive(Debug)]
pub struct Plugin {
    /// The engine's runtime of this configuration.
    pub runtime: Runtime<WasmIds>,
    /// The worker's counts and tick, shared with every other configuration of
    /// this VM.
    pub worker: Rc<Worker>,
    /// This worker's fleet sync in flight: its token and when it was sent.
    pub fleet_call: Cell<Option<(u32, u64)>>,
}

impl Deref for Plugin {
    type Target = Runtime<WasmIds>;

    fn deref(&self) -> &Runtime<WasmIds> {
        &self.runtime
    }
}

impl Plugin {
    /// Adds `delta` to counter or gauge `id`, batched or not as configured.
    pub fn add(&self, host: &impl Host, id: u32, delta: i64) {
        self.worker
            .add(host, id, delta, self.runtime.tuning.batch_counters);
    }

    /// Whether this configuration needs the tick at all: breakers, rollouts, or
    /// batched counts to hand over.
    pub fn needs_tick(&self) -> bool {
        self.needs_tick_keeping(false)
    }

    /// [`Plugin::needs_tick`] on a host that keeps the batched counts itself
    /// (`Host::add_batched`, the native build): the worker then holds none, so
    /// only breakers and rollouts need its tick.
    pub fn needs_tick_keeping(&self, host_keeps_counts: bool) -> bool {
        self.runtime.needs_tick() || (self.runtime.tuning.batch_counters && !host_keeps_counts)
    }
}

/// Builds the plugin from a compiled config, defining its metrics.
pub fn build(
    host: &impl Host,
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
    for w in runtime.prepare(&mut crate::host::store::HostStore(host), vm) {
        host.log(crate::host::Level::Warn, &w);
    }
    Ok(Plugin {
        runtime,
        worker,
        fleet_call: Cell::new(None),
    })
}
