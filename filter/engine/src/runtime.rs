//! The engine's state for one configured plugin instance (one per VM), one struct
//! per route and one per rate-limit policy: what the request path needs, built once
//! at configure time.
//!
//! The host's metric ids ride along as the associated types of an [`Ids`] family,
//! so each route, breaker instance and policy carries its own ids as named fields
//! and the engine never needs to know what they are.

use std::cell::{Cell, RefCell};

use meshguard_config::compiled::{CompiledConfig, CompiledRoute};
use meshguard_config::ratelimit::{CompiledRateLimit, CompiledRateLimitService};

use crate::analysis::RolloutRuntime;
use crate::breaker::local::Local;
use crate::le::u64_at;
use crate::metrics::{ALL_VARIANTS, NO_VARIANT, UNMATCHED_ROUTE};
use crate::ratelimit::global::GlobalState;
use crate::ratelimit::lease::Leases;
use crate::ratelimit::table::Table;

/// How long after configure the fingerprint secret is read again (1 s).
pub const SECRET_SETTLE_NS: u64 = 1_000_000_000;

/// What a VM brings to [`Runtime::prepare`].
#[derive(Debug, Clone, Copy)]
pub struct Vm {
    /// This VM's id, the owner of its concurrency slots (random, fixed per VM).
    pub owner: u64,
    /// Fresh random bits: the fingerprint secret, if this VM is the one to create it.
    pub secret: [u64; 2],
    /// The time, ns.
    pub now: u64,
}

/// Version of the shared-data layout; part of every key.
pub const STORE_VERSION: &str = "mg1";

/// The host's metric ids, as a family of types.
pub trait Ids {
    /// A route's RED series (in-flight gauge, counters per variant and class,
    /// duration histograms).
    type Red: std::fmt::Debug;
    /// A breaker instance's gauge and counters.
    type Breaker: std::fmt::Debug;
    /// A rate-limit policy's outcome counters.
    type Policy: std::fmt::Debug;
    /// A canary rollout's gauges and counters.
    type Rollout: std::fmt::Debug;
    /// The fleet sync's counters, histogram and gauge.
    type Fleet: std::fmt::Debug;
}

/// Defines the metrics of one configuration (the host's side of [`Runtime::build`]).
pub trait DefineIds<I: Ids> {
    /// Why a metric could not be defined.
    type Error;
    /// The RED series of `route`, with one set per label in `variants` (and the
    /// gRPC status series when `grpc`: routes with `protocol: grpc`).
    fn red(&mut self, route: &str, variants: &[&str], grpc: bool) -> Result<I::Red, Self::Error>;
    /// The metrics of the breaker of `route` kept for `variant` (or `all`).
    fn breaker(&mut self, route: &str, variant: &str) -> Result<I::Breaker, Self::Error>;
    /// The metrics of rate-limit policy `policy` (global ones have more).
    fn policy(&mut self, policy: &CompiledRateLimit) -> Result<I::Policy, Self::Error>;
    /// The rollout metrics of `route`'s canary policy with `variants` (baseline
    /// first); `fleet`: judged by the fleet (its mode gauge too); `method`: how
    /// its analysis judges, when it has one.
    fn rollout(
        &mut self,
        route: &str,
        variants: &[&str],
        fleet: bool,
        method: Option<&str>,
    ) -> Result<I::Rollout, Self::Error>;
    /// The metrics of the sync with the fleet service.
    fn fleet(&mut self) -> Result<I::Fleet, Self::Error>;
}

/// The header names meshguard reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    /// Carries the matched route's name upstream, if configured.
    pub route: Option<String>,
    /// The chosen variant.
    pub variant: String,
    /// The chosen variant's cluster.
    pub cluster: String,
}

/// One configured plugin instance.
#[derive(Debug)]
pub struct Runtime<I: Ids> {
    /// Routes in match order.
    pub routes: Vec<RouteRuntime<I>>,
    /// Every rate-limit policy, in config order.
    pub policies: Vec<PolicyRuntime<I>>,
    /// Indices into `policies` of the top-level ones (charged first, on every route).
    pub top_level_policies: Vec<usize>,
    /// Header names.
    pub headers: HeaderNames,
    /// Some route has a canary policy: client copies of the variant and cluster
    /// headers are removed from every request no policy decides.
    pub scrub_routing_headers: bool,
    /// RED series of requests that match no route, when they are counted.
    pub unmatched: Option<I::Red>,
    /// What counts as a failure for requests that match no route (the default).
    pub default_failures: meshguard_config::status::FailureStatuses,
    /// `mg1.<plugin name>`: prefix of every shared-data key.
    pub store_prefix: String,
    /// The rate limit service global policies ask.
    pub rate_limit_service: Option<CompiledRateLimitService>,
    /// The fleet service rollouts with `canary.fleet` sync with.
    pub fleet_service: Option<meshguard_config::fleet::CompiledFleetService>,
    /// The sync's metrics (with `fleet_service`).
    pub fleet_ids: Option<I::Fleet>,
    /// Shared-data key of the sync slot (which worker syncs next, and when).
    pub sync_key: String,
    /// This Envoy's name in the fleet service's logs (its node id, when the
    /// host knows one).
    pub envoy_name: RefCell<String>,
    /// This VM's id (see [`Vm::owner`]), set by [`Runtime::prepare`].
    pub owner: Cell<u64>,
    /// The last sync failed (its error is logged once, until one succeeds).
    pub sync_failing: Cell<bool>,
    /// How the host is used (routing headers, route cache, reads, counters).
    pub tuning: meshguard_config::tuning::Tuning,
    /// Decision records and the status document, when any is on.
    pub explain: Option<meshguard_config::explain::CompiledExplain>,
    /// The config's revision (a fingerprint of its bytes).
    pub revision: u64,
    /// When to re-read the fingerprint secret (0: done).
    pub confirm_secret_at: Cell<u64>,
    /// Replaced by a newer configuration: no tick of this one runs again.
    pub retired: Cell<bool>,
}

/// One route and what deciding its requests needs.
#[derive(Debug)]
pub struct RouteRuntime<I: Ids> {
    /// The compiled route.
    pub route: CompiledRoute,
    /// Its RED series.
    pub red: I::Red,
    /// Its breaker instances (one per variant, one for the route, or none).
    pub breakers: Vec<BreakerInstance<I>>,
    /// The in-flight count, when the breaker limits concurrency.
    pub slots: Option<crate::breaker::shared::Slots>,
    /// The canary policy's rollout (analysis, ramp), when it has one.
    pub rollout: Option<Rollout<I>>,
    /// What counts as a failed request in its RED series: the breaker's
    /// failure statuses and gRPC codes, else the analysis', else the default
    /// (5xx and the default gRPC codes); resets and timeouts always.
    pub failures: meshguard_config::status::FailureStatuses,
}

/// A canary rollout as this worker holds it.
#[derive(Debug)]
pub struct Rollout<I: Ids> {
    /// Its counts, what it read, the split it routes by.
    pub state: RolloutRuntime,
    /// Its metrics.
    pub ids: I::Rollout,
}

/// One breaker instance as this worker holds it.
#[derive(Debug)]
pub struct BreakerInstance<I: Ids> {
    /// `route/variant`, for logs.
    pub name: String,
    /// Shared-data key of its state.
    pub key: String,
    /// This worker's view: the phase it read, the outcomes it has not written.
    pub local: RefCell<Local>,
    /// Its metrics.
    pub ids: I::Breaker,
}

/// One rate-limit policy as this worker holds it.
#[derive(Debug)]
pub struct PolicyRuntime<I: Ids> {
    /// The compiled policy.
    pub policy: CompiledRateLimit,
    /// Its table of buckets in shared data.
    pub table: Table,
    /// The tokens this worker has leased.
    pub leases: RefCell<Leases>,
    /// A global policy's leases, remembered rejections and back-off on this worker.
    pub global: Option<RefCell<GlobalState>>,
    /// Its metrics.
    pub ids: I::Policy,
    /// What this worker counted for the status document.
    pub counts: Cell<meshguard_config::report::WorkerCounts>,
}

/// The `variant` labels of a route's RED series: its variants and `none` (requests
/// decided before a variant was chosen), or only `none` without a canary policy.
pub fn red_labels(route: &CompiledRoute) -> Vec<&str> {
    let mut labels: Vec<&str> = route
        .canary
        .iter()
        .flat_map(|c| c.variants.iter().map(|v| v.name.as_str()))
        .collect();
    labels.push(NO_VARIANT);
    labels
}

/// The `variant` labels of a route's breaker instances: the variant names when the
/// breaker is kept per variant, else `all`. Empty without a breaker.
pub fn breaker_labels(route: &CompiledRoute) -> Vec<&str> {
    match (&route.breaker, &route.canary) {
        (None, _) => Vec::new(),
        (Some(b), Some(c)) if b.per_variant => c.variants.iter().map(|v| v.name.as_str()).collect(),
        (Some(_), _) => vec![ALL_VARIANTS],
    }
}

/// `mg1.<name>`, with anything but `A-Z a-z 0-9 _ -` in the plugin's name replaced.
pub fn store_prefix(plugin_name: &[u8]) -> String {
    let name: String = String::from_utf8_lossy(plugin_name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{STORE_VERSION}.{name}")
}

impl<I: Ids> Runtime<I> {
    /// Builds the runtime of `config` for a plugin named `plugin_name`, defining
    /// every metric the config can produce through `define`.
    pub fn build<D: DefineIds<I>>(
        config: CompiledConfig,
        plugin_name: &[u8],
        define: &mut D,
    ) -> Result<Runtime<I>, D::Error> {
        let store_prefix = store_prefix(plugin_name);
        let CompiledConfig {
            routes,
            route_header,
            variant_header,
            cluster_header,
            has_canary,
            rate_limits,
            top_level_rate_limits,
            count_unmatched,
            rate_limit_service,
            fleet_service,
            tuning,
            explain,
            revision,
        } = config;
        let policies = rate_limits
            .into_iter()
            .map(|policy| {
                Ok(PolicyRuntime {
                    ids: define.policy(&policy)?,
                    global: policy
                        .global
                        .as_ref()
                        .map(|_| RefCell::new(GlobalState::default())),
                    table: Table {
                        // `rl2`: keyed fingerprints (`rl` slots, unkeyed, stay with
                        // the VMs of the build that wrote them).
                        prefix: format!("{store_prefix}.rl2.{}", policy.store_id),
                        bucket: crate::ratelimit::gcra::Bucket {
                            burst: policy.burst,
                            interval_ns: policy.interval_ns,
                        },
                        max_keys: policy.max_keys,
                        secret: Cell::new([0, 0]),
                    },
                    leases: RefCell::new(Leases::default()),
                    counts: Cell::default(),
                    policy,
                })
            })
            .collect::<Result<_, D::Error>>()?;
        let routes = routes
            .into_iter()
            .map(|route| build_route(route, &store_prefix, define))
            .collect::<Result<_, D::Error>>()?;
        let fleet_ids = match fleet_service {
            Some(_) => Some(define.fleet()?),
            None => None,
        };
        let unmatched = if count_unmatched {
            Some(define.red(UNMATCHED_ROUTE, &[NO_VARIANT], false)?)
        } else {
            None
        };
        Ok(Runtime {
            routes,
            policies,
            top_level_policies: top_level_rate_limits,
            headers: HeaderNames {
                route: route_header,
                variant: variant_header,
                cluster: cluster_header,
            },
            scrub_routing_headers: has_canary,
            unmatched,
            default_failures: meshguard_config::status::default_failure_statuses(),
            sync_key: format!("{store_prefix}.fl.sync"),
            store_prefix,
            rate_limit_service,
            fleet_service,
            fleet_ids,
            envoy_name: RefCell::new(String::new()),
            owner: Cell::new(0),
            sync_failing: Cell::new(false),
            tuning,
            explain,
            revision,
            confirm_secret_at: Cell::new(0),
            retired: Cell::new(false),
        })
    }

    /// Prepares shared data before the first request, for a VM with id `owner`
    /// and fresh random bits `secret` (see [`Vm`]): creates each route's in-flight
    /// count (see `breaker::shared::prepare`) and each small policy's table (see
    /// `ratelimit::table::prepare`), and reads the plugin's fingerprint secret,
    /// creating it from `vm.secret` when absent. Failures are reported and leave
    /// the rest to the first request, as before.
    pub fn prepare(&self, store: &mut impl crate::store::SharedStore, vm: Vm) -> Vec<String> {
        let mut warnings = Vec::new();
        self.owner.set(vm.owner);
        for (i, (key, n)) in self.fleet_links().enumerate() {
            let envoy = crate::hash::mix64(vm.secret[0] ^ vm.owner.rotate_left(17) ^ (i as u64));
            if let Err(e) = crate::analysis::fleet::prepare(store, key, n, envoy, vm.now) {
                warnings.push(format!(
                    "meshguard: cannot create the fleet link {key} ({e:?}); a tick creates it"
                ));
            }
        }
        for s in self.routes.iter().filter_map(|r| r.slots.as_ref()) {
            s.owner.set(vm.owner);
            if let Err(e) = crate::breaker::shared::prepare(store, &s.key) {
                warnings.push(format!(
                    "meshguard: cannot create the in-flight count {} ({e:?})",
                    s.key
                ));
            }
        }
        if self.policies.is_empty() {
            return warnings;
        }
        self.adopt_secret(store, Some(vm.secret));
        self.confirm_secret_at
            .set(vm.now.saturating_add(SECRET_SETTLE_NS).max(1));
        for p in &self.policies {
            if let Err(e) = crate::ratelimit::table::prepare(store, &p.table) {
                warnings.push(format!(
                    "meshguard: cannot create the table of {} ({e:?}); its slots are created as keys arrive",
                    p.policy.name
                ));
            }
        }
        warnings
    }

    /// Reads the plugin's fingerprint secret (creating it from `create` when the
    /// store holds none) and hands it to every policy's table.
    fn adopt_secret(&self, store: &mut impl crate::store::SharedStore, create: Option<[u64; 2]>) {
        let key = format!("{}.secret", self.store_prefix);
        let mut secret = read_secret(store, &key);
        if let (None, Some(new)) = (secret, create) {
            let mut bytes = new[0].to_le_bytes().to_vec();
            bytes.extend_from_slice(&new[1].to_le_bytes());
            // Last writer wins; `confirm_secret` re-reads once the workers
            // configured at the same time have all written.
            let _ = store.set(&key, &bytes, None);
            secret = read_secret(store, &key).or(Some(new));
        }
        if let Some(secret) = secret {
            for p in &self.policies {
                p.table.secret.set(secret);
            }
        }
    }

    /// Once, [`SECRET_SETTLE_NS`] after configure: re-reads the fingerprint secret,
    /// so workers that configured at the same moment and each created one all use
    /// the one that stayed. Until then a key may have one bucket per such worker.
    pub fn confirm_secret(&self, store: &mut impl crate::store::SharedStore, now: u64) {
        let at = self.confirm_secret_at.get();
        if at != 0 && now >= at {
            self.confirm_secret_at.set(0);
            self.adopt_secret(store, None);
        }
    }

    /// Every fleet rollout's link key and variant count.
    fn fleet_links(&self) -> impl Iterator<Item = (&str, usize)> {
        self.routes.iter().filter_map(|r| {
            let rollout = r.rollout.as_ref()?;
            let canary = r.route.canary.as_ref()?;
            canary.rollout.as_ref()?.fleet.as_ref()?;
            Some((rollout.state.key.as_str(), canary.variants.len()))
        })
    }

    /// Whether the root context must tick: a breaker may hold outcomes of an idle
    /// worker, a rollout folds counts and reads verdicts.
    pub fn needs_tick(&self) -> bool {
        self.routes
            .iter()
            .any(|r| !r.breakers.is_empty() || r.rollout.is_some())
    }

    /// Whether a tick has work now: a breaker holds outcomes not yet written, or a
    /// rollout holds counts not yet folded. When neither, a worker may stop its
    /// tick until its next request (which ticks once before it is decided).
    pub fn holds_work(&self) -> bool {
        // A fleet rollout not yet settled syncs every interval.
        self.syncs_fleet()
            || self.routes.iter().any(|r| {
                r.breakers.iter().any(|b| b.local.borrow().pending() > 0)
                    || r.slots.as_ref().is_some_and(|s| s.held.get() > 0)
                    || r.rollout.as_ref().is_some_and(|ro| ro.state.holds_work())
            })
    }

    /// The RED series of `slot`.
    pub fn red(&self, slot: crate::RedSlot) -> Option<&I::Red> {
        match slot {
            crate::RedSlot::Route(i) => self.routes.get(i).map(|r| &r.red),
            crate::RedSlot::Unmatched => self.unmatched.as_ref(),
        }
    }
}

/// The fingerprint secret stored at `key` (16 bytes), if any.
fn read_secret(store: &mut impl crate::store::SharedStore, key: &str) -> Option<[u64; 2]> {
    let v = store.get(key).ok()?.0?;
    (v.len() == 16).then_some([u64_at(&v, 0)?, u64_at(&v, 8)?])
}

fn build_route<I: Ids, D: DefineIds<I>>(
    route: CompiledRoute,
    store_prefix: &str,
    define: &mut D,
) -> Result<RouteRuntime<I>, D::Error> {
    let grpc = route.protocol == meshguard_config::grpc::Protocol::Grpc;
    let red = define.red(&route.name, &red_labels(&route), grpc)?;
    let fp = route.breaker.as_ref().map_or(0, |b| b.fingerprint);
    let breakers = breaker_labels(&route)
        .into_iter()
        .map(|v| {
            Ok(BreakerInstance {
                name: format!("{}/{v}", route.name),
                key: format!("{store_prefix}.cb.{}.{v}.{fp:016x}", route.name),
                local: RefCell::new(Local::default()),
                ids: define.breaker(&route.name, v)?,
            })
        })
        .collect::<Result<_, D::Error>>()?;
    let slots = route
        .breaker
        .as_ref()
        .and_then(|b| b.max_concurrent)
        .map(|_| crate::breaker::shared::Slots::new(format!("{store_prefix}.cc2.{}", route.name)));
    let rollout = match &route.canary {
        Some(policy) => match &policy.rollout {
            Some(r) => {
                let names: Vec<&str> = policy.variants.iter().map(|v| v.name.as_str()).collect();
                // A fleet rollout's link and a rollout judged alone have
                // different shapes: different keys.
                let kind = if r.fleet.is_some() { "fl" } else { "ro" };
                let key = format!(
                    "{store_prefix}.{kind}.{}.{:016x}",
                    route.name, r.fingerprint
                );
                Some(Rollout {
                    ids: define.rollout(
                        &route.name,
                        &names,
                        r.fleet.is_some(),
                        r.analysis.as_ref().map(|a| a.method.name()),
                    )?,
                    state: RolloutRuntime::new(policy, r, key),
                })
            }
            None => None,
        },
        None => None,
    };
    let failures = route
        .breaker
        .as_ref()
        .map(|b| b.failures.clone())
        .or_else(|| {
            let a = route.canary.as_ref()?.rollout.as_ref()?.analysis.as_ref()?;
            Some(a.failures.clone())
        })
        .unwrap_or_else(meshguard_config::status::default_failure_statuses);
    Ok(RouteRuntime {
        red,
        breakers,
        slots,
        rollout,
        failures,
        route,
    })
}

#[cfg(test)]
pub mod testing {
    //! A runtime without host metrics, for the engine's own tests.
    use super::*;

    /// Ids that are nothing.
    #[derive(Debug)]
    pub struct NoIds;

    impl Ids for NoIds {
        type Red = ();
        type Breaker = ();
        type Policy = ();
        type Rollout = ();
        type Fleet = ();
    }

    impl DefineIds<NoIds> for NoIds {
        type Error = std::convert::Infallible;
        fn red(&mut self, _: &str, _: &[&str], _: bool) -> Result<(), Self::Error> {
            Ok(())
        }
        fn breaker(&mut self, _: &str, _: &str) -> Result<(), Self::Error> {
            Ok(())
        }
        fn policy(&mut self, _: &CompiledRateLimit) -> Result<(), Self::Error> {
            Ok(())
        }
        fn rollout(
            &mut self,
            _: &str,
            _: &[&str],
            _: bool,
            _: Option<&str>,
        ) -> Result<(), Self::Error> {
            Ok(())
        }
        fn fleet(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    /// The runtime of a JSON config, named `meshguard`.
    pub fn runtime(json: &str) -> Runtime<NoIds> {
        let config = meshguard_config::load_json(json.as_bytes()).unwrap();
        let Ok(rt) = Runtime::build(config, b"meshguard", &mut NoIds);
        rt
    }
}
