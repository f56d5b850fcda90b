//! Rate limiting on the request path: charge each applicable policy, count the
//! outcome, and answer 429 with the RateLimit fields when a policy says no.

use meshguard_config::ratelimit::CompiledRateLimit;
use meshguard_config::raw::FailureMode;
use meshguard_engine::metrics::RateLimitOutcome;
use meshguard_engine::ratelimit::gcra::{Bucket, Verdict};
use meshguard_engine::ratelimit::headers::{
    ceil_seconds, legacy_fields, policy_field, ratelimit_field, PolicyState,
};
use meshguard_engine::ratelimit::key::build_key;
use meshguard_engine::ratelimit::lease::charge_leased;
use meshguard_engine::ratelimit::table::{Charge, SharedStore, StoreError};
use meshguard_engine::RequestView;

use super::plugin::Plugin;
use crate::host::{Host, Level};

/// Proxy-wasm shared data as the engine's CAS store.
pub struct HostStore<'h, H: Host>(pub &'h H);

impl<H: Host> SharedStore for HostStore<'_, H> {
    fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        self.0
            .shared_get(key)
            .map_err(|e| StoreError::Host(e.to_string()))
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match self.0.shared_set(key, value, cas) {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::CasMismatch),
            Err(e) => Err(StoreError::Host(e.to_string())),
        }
    }
}

/// A policy rejected the request; its local reply has been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

/// A policy's state to advertise on the response: policy index, tokens left,
/// nanoseconds until full.
pub type Advertised = (usize, u64, u64);

fn count(host: &impl Host, plugin: &Plugin, policy: usize, outcome: RateLimitOutcome) {
    if let Some(id) = plugin
        .metrics
        .ratelimit
        .get(policy)
        .and_then(|ids| ids.get(outcome as usize))
    {
        let _ = host.increment_metric(*id, 1);
    }
}

fn state<'a>(p: &'a CompiledRateLimit, remaining: u64, full_in_ns: u64) -> PolicyState<'a> {
    PolicyState {
        name: &p.name,
        quota: p.burst,
        window_s: p.window_s,
        remaining,
        full_in_ns,
    }
}

/// Charges every policy that applies to route `route_index`, top-level ones first.
/// `Ok(advertised)`: the request may pass. `Err(Rejected)`: a policy rejected it and the
/// local reply has been sent (the caller pauses the stream).
pub fn apply(
    host: &impl Host,
    plugin: &Plugin,
    route_index: usize,
    view: &mut impl RequestView,
    now: u64,
) -> Result<Vec<Advertised>, Rejected> {
    let config = &plugin.config;
    let Some(route) = config.routes.get(route_index) else {
        return Ok(Vec::new());
    };
    let mut policies = config
        .global_rate_limits
        .iter()
        .chain(route.rate_limits.iter())
        .peekable();
    if policies.peek().is_none() {
        return Ok(Vec::new());
    }
    let mut passed: Vec<(usize, Verdict)> = Vec::new();
    for &i in policies {
        let Some(p) = config.rate_limits.get(i) else {
            continue;
        };
        let Some(key) = build_key(&p.key, &route.name, view) else {
            continue;
        };
        let (Some(prefix), Some(leases)) = (plugin.ratelimit_prefix(i), plugin.leases(i)) else {
            continue;
        };
        let bucket = Bucket {
            burst: p.burst,
            interval_ns: p.interval_ns,
        };
        let charged = charge_leased(
            &mut leases.borrow_mut(),
            &mut HostStore(host),
            prefix,
            &bucket,
            p.max_keys,
            &key,
            now,
        );
        match charged {
            Charge::Decided { verdict, .. } if verdict.allowed => {
                count(host, plugin, i, RateLimitOutcome::Allowed);
                if !p.shadow {
                    passed.push((i, verdict));
                }
            }
            Charge::Decided { .. } if p.shadow => {
                count(host, plugin, i, RateLimitOutcome::ShadowLimited)
            }
            Charge::Decided { verdict, .. } => {
                count(host, plugin, i, RateLimitOutcome::Limited);
                reply(host, plugin, &passed, Some((i, verdict)), p);
                return Err(Rejected);
            }
            Charge::StoreFailed(_) if p.on_store_error == FailureMode::Allow || p.shadow => {
                count(host, plugin, i, RateLimitOutcome::ErrorAllowed);
            }
            Charge::StoreFailed(_) => {
                count(host, plugin, i, RateLimitOutcome::ErrorDenied);
                reply(host, plugin, &passed, None, p);
                return Err(Rejected);
            }
        }
    }
    Ok(passed
        .into_iter()
        .filter(|(i, _)| {
            config
                .rate_limits
                .get(*i)
                .is_some_and(|p| p.headers_on_allowed)
        })
        .map(|(i, v)| (i, v.remaining, v.full_in_ns))
        .collect())
}

/// Sends the limited reply of `limiter`: `retry-after`, and the RateLimit fields of
/// the policies charged so far plus the limiting one (unknown after a store failure).
fn reply(
    host: &impl Host,
    plugin: &Plugin,
    passed: &[(usize, Verdict)],
    limiting: Option<(usize, Verdict)>,
    limiter: &CompiledRateLimit,
) {
    let config = &plugin.config;
    let states: Vec<PolicyState<'_>> = passed
        .iter()
        .chain(limiting.iter())
        .filter_map(|(i, v)| {
            config
                .rate_limits
                .get(*i)
                .map(|p| state(p, v.remaining, v.full_in_ns))
        })
        .collect();
    let retry = limiting
        .map_or(1, |(_, v)| ceil_seconds(v.retry_in_ns).max(1))
        .to_string();
    let (policy, current) = (policy_field(&states), ratelimit_field(&states));
    let mut headers: Vec<(&str, &str)> = vec![
        ("retry-after", &retry),
        ("content-type", "text/plain; charset=utf-8"),
    ];
    if !states.is_empty() {
        headers.push(("ratelimit-policy", &policy));
        headers.push(("ratelimit", &current));
    }
    let legacy = if limiter.legacy_headers {
        legacy_fields(&states)
    } else {
        None
    };
    if let Some(l) = &legacy {
        headers.extend(l.iter().map(|(k, v)| (*k, v.as_str())));
    }
    if let Err(e) = host.send_local_reply(limiter.status, &headers, limiter.body.as_bytes()) {
        host.log(Level::Warn, &e.to_string());
    }
}

/// Adds the RateLimit fields of allowed policies to the response.
pub fn add_response_fields(host: &impl Host, plugin: &Plugin, advertised: &[Advertised]) {
    let config = &plugin.config;
    let states: Vec<PolicyState<'_>> = advertised
        .iter()
        .filter_map(|(i, r, f)| config.rate_limits.get(*i).map(|p| state(p, *r, *f)))
        .collect();
    if states.is_empty() {
        return;
    }
    let _ = host.set_response_header("ratelimit-policy", policy_field(&states).as_bytes());
    let _ = host.set_response_header("ratelimit", ratelimit_field(&states).as_bytes());
    let wants_legacy = advertised
        .iter()
        .any(|(i, _, _)| config.rate_limits.get(*i).is_some_and(|p| p.legacy_headers));
    if let (true, Some(l)) = (wants_legacy, legacy_fields(&states)) {
        for (k, v) in l {
            let _ = host.set_response_header(k, v.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests;
