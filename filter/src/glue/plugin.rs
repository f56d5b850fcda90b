//! What `on_configure` builds for a VM: the compiled config, the ids of every
//! metric (defined once, here, never on the request path), and the shared-data
//! prefix that keeps this plugin's buckets apart from any other's.

use std::cell::RefCell;

use meshguard_config::CompiledConfig;
use meshguard_engine::breaker::local::Local;
use meshguard_engine::metrics::{
    breaker_rejected, breaker_state, breaker_transitions, ratelimit_requests, request_duration,
    requests_in_flight, requests_total, CODE_CLASSES, NO_VARIANT, RATELIMIT_OUTCOMES,
    UNMATCHED_ROUTE,
};
use meshguard_engine::ratelimit::lease::Leases;

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
    /// Per route: per breaker instance.
    breakers: Vec<Vec<BreakerInstance>>,
    /// Per route: the concurrency-slot key, when the route has a limit.
    slots: Vec<Option<String>>,
    /// Per rate-limit policy: the shared-data prefix of its buckets.
    ratelimit_prefixes: Vec<String>,
    /// Per rate-limit policy: the tokens this worker has leased.
    leases: Vec<RefCell<Leases>>,
}

/// One breaker instance as this worker holds it.
#[derive(Debug)]
struct BreakerInstance {
    /// `route/variant`, for logs.
    name: String,
    /// Shared-data key of its state.
    key: String,
    /// This worker's view: the phase it read, the outcomes it has not written.
    local: RefCell<Local>,
}

/// Metric ids of one breaker instance.
#[derive(Debug, Clone, Copy, Default)]
pub struct BreakerIds {
    /// Gauge: 0 closed, 1 half-open, 2 open.
    pub state: u32,
    /// Transitions into closed, half-open, open.
    pub transitions: [u32; 3],
    /// Rejections while open, while half-open (probes out), by the concurrency limit.
    pub rejected: [u32; 3],
}

/// Metric ids, indexed like the config.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Per rate-limit policy, one counter per outcome.
    pub ratelimit: Vec<[u32; 5]>,
    /// Per route, per breaker instance.
    pub breakers: Vec<Vec<BreakerIds>>,
    /// RED metrics per route, then one more for unmatched requests when counted.
    pub red: Vec<RouteRed>,
}

/// RED metric ids of one route.
#[derive(Debug, Clone, Default)]
pub struct RouteRed {
    /// Gauge of requests in flight.
    pub in_flight: u32,
    /// Per variant label (the policy's variants, then `none`; or just `none`):
    /// a counter per status class and the duration histogram.
    pub variants: Vec<([u32; 6], u32)>,
}

/// The `variant` labels of a route's RED series: its variants and `none` (requests
/// decided before a variant was chosen), or only `none` without a canary policy.
pub fn red_labels(route: &meshguard_config::compiled::CompiledRoute) -> Vec<String> {
    let mut labels: Vec<String> = route
        .canary
        .iter()
        .flat_map(|c| c.variants.iter().map(|v| v.name.clone()))
        .collect();
    labels.push(NO_VARIANT.to_string());
    labels
}

fn define_red(host: &impl Host, route: &str, labels: &[String]) -> Result<RouteRed, HostError> {
    let mut red = RouteRed {
        in_flight: host.define_metric(MetricKind::Gauge, &requests_in_flight(route))?,
        variants: Vec::new(),
    };
    for v in labels {
        let mut classes = [0u32; 6];
        for (id, class) in classes.iter_mut().zip(CODE_CLASSES) {
            *id = host.define_metric(MetricKind::Counter, &requests_total(route, v, class))?;
        }
        red.variants.push((
            classes,
            host.define_metric(MetricKind::Histogram, &request_duration(route, v))?,
        ));
    }
    Ok(red)
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
        let mut breakers = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let mut ids = Vec::new();
            for variant in breaker_labels(route) {
                let r = &route.name;
                let mut b = BreakerIds {
                    state: host.define_metric(MetricKind::Gauge, &breaker_state(r, &variant))?,
                    ..BreakerIds::default()
                };
                for (id, s) in b
                    .transitions
                    .iter_mut()
                    .zip(["closed", "half_open", "open"])
                {
                    *id = host
                        .define_metric(MetricKind::Counter, &breaker_transitions(r, &variant, s))?;
                }
                for (id, o) in b
                    .rejected
                    .iter_mut()
                    .zip(["open", "half_open", "concurrency"])
                {
                    *id =
                        host.define_metric(MetricKind::Counter, &breaker_rejected(r, &variant, o))?;
                }
                ids.push(b);
            }
            breakers.push(ids);
        }
        let mut red = Vec::with_capacity(config.routes.len() + 1);
        for route in &config.routes {
            red.push(define_red(host, &route.name, &red_labels(route))?);
        }
        if config.count_unmatched {
            red.push(define_red(
                host,
                UNMATCHED_ROUTE,
                &[NO_VARIANT.to_string()],
            )?);
        }
        Ok(Metrics {
            ratelimit,
            breakers,
            red,
        })
    }

    /// Ids of breaker instance `inst` of route `route`.
    pub fn breaker(&self, route: usize, inst: usize) -> Option<&BreakerIds> {
        self.breakers.get(route)?.get(inst)
    }
}

/// The `variant` labels of a route's breaker instances: the variant names when the
/// breaker is kept per variant, else `all`. Empty without a breaker.
pub fn breaker_labels(route: &meshguard_config::compiled::CompiledRoute) -> Vec<String> {
    match (&route.breaker, &route.canary) {
        (None, _) => Vec::new(),
        (Some(b), Some(c)) if b.per_variant => c.variants.iter().map(|v| v.name.clone()).collect(),
        (Some(_), _) => vec!["all".to_string()],
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
        let store_prefix = format!("{STORE_VERSION}.{name}");
        let breakers = config
            .routes
            .iter()
            .map(|r| {
                let fp = r.breaker.as_ref().map_or(0, |b| b.fingerprint);
                breaker_labels(r)
                    .into_iter()
                    .map(|v| BreakerInstance {
                        name: format!("{}/{v}", r.name),
                        key: format!("{store_prefix}.cb.{}.{v}.{fp:016x}", r.name),
                        local: RefCell::new(Local::default()),
                    })
                    .collect()
            })
            .collect();
        let slots = config
            .routes
            .iter()
            .map(|r| {
                r.breaker
                    .as_ref()
                    .and_then(|b| b.max_concurrent)
                    .map(|_| format!("{store_prefix}.cc.{}", r.name))
            })
            .collect();
        let ratelimit_prefixes: Vec<String> = config
            .rate_limits
            .iter()
            .map(|p| format!("{store_prefix}.rl.{}", p.store_id))
            .collect();
        Ok(Plugin {
            leases: ratelimit_prefixes
                .iter()
                .map(|_| RefCell::new(Leases::default()))
                .collect(),
            ratelimit_prefixes,
            metrics: Metrics::define(host, &config)?,
            store_prefix,
            breakers,
            slots,
            config,
        })
    }

    /// `route/variant` of a breaker instance, for logs.
    pub fn breaker_name(&self, route: usize, inst: usize) -> &str {
        self.breakers
            .get(route)
            .and_then(|b| b.get(inst))
            .map_or("?", |b| b.name.as_str())
    }

    /// Shared-data key of a breaker instance.
    pub fn breaker_key(&self, route: usize, inst: usize) -> Option<&str> {
        self.breakers.get(route)?.get(inst).map(|b| b.key.as_str())
    }

    /// This worker's view of a breaker instance.
    pub fn breaker_local(&self, route: usize, inst: usize) -> Option<&RefCell<Local>> {
        self.breakers.get(route)?.get(inst).map(|b| &b.local)
    }

    /// Whether any route has a breaker (the root context then ticks to write held
    /// outcomes of an idle worker).
    pub fn has_breakers(&self) -> bool {
        self.breakers.iter().any(|b| !b.is_empty())
    }

    /// Shared-data prefix of a rate-limit policy's buckets.
    pub fn ratelimit_prefix(&self, policy: usize) -> Option<&str> {
        self.ratelimit_prefixes.get(policy).map(String::as_str)
    }

    /// This worker's leases of a rate-limit policy.
    pub fn leases(&self, policy: usize) -> Option<&RefCell<Leases>> {
        self.leases.get(policy)
    }

    /// Shared-data key of a route's in-flight count.
    pub fn slot_key(&self, route: usize) -> Option<&str> {
        self.slots.get(route)?.as_deref()
    }
}
