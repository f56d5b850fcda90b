//! Request-path steps, written over [`Host`] so the fake host can drive them.

use meshguard_config::canary::StickyKey;
use meshguard_engine::canary::{choose_variant, is_trusted, Draw, Reason};
use meshguard_engine::metrics::code_class;
use meshguard_engine::select_route;

use super::breaker::{self, Gate};
use super::plugin::Plugin;
use super::ratelimit;
use super::rng::Rng;
use crate::host::view::CachedRequest;
use crate::host::{Host, Level};

/// What the filter decided for one request, kept for later callbacks (metrics and
/// breakers read `route` and `variant`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestState {
    /// Index of the matched route in the compiled config; `None`: pass through.
    pub route: Option<usize>,
    /// Index of the chosen variant in that route's canary policy.
    pub variant: Option<usize>,
    /// A `Set-Cookie` value to add to the response (a freshly issued sticky key).
    pub set_cookie: Option<String>,
    /// A rate limit rejected the request and a local reply was sent.
    pub rejected: bool,
    /// Rate-limit states to advertise on the response.
    pub ratelimit_fields: Vec<ratelimit::Advertised>,
    /// The breaker's ticket, settled in `on_log`.
    pub ticket: Option<breaker::Ticket>,
    /// Index into the plugin's RED metrics (a route, or the unmatched slot) when
    /// this request is counted.
    pub red: Option<usize>,
    /// When the request started, ns.
    pub start_ns: u64,
    /// The response's status, read in `on_http_response_headers` when metrics or a
    /// breaker need it (`None`: no response headers passed through this filter).
    pub code: Option<u64>,
    /// The response reached end of stream through this filter (headers, body or
    /// trailers): it was not cut short by a reset.
    pub response_complete: bool,
}

fn warn_on_err(host: &impl Host, r: Result<(), crate::host::HostError>) {
    if let Err(e) = r {
        host.log(Level::Warn, &e.to_string());
    }
}

/// `on_http_request_headers`: select the route; on a canary route choose the variant
/// and route to it; remove client copies of meshguard's own headers.
pub fn on_request_headers(host: &impl Host, plugin: &Plugin, rng: &Rng) -> RequestState {
    let config = &plugin.config;
    let mut view = CachedRequest::new(host);
    let route_index = select_route(config, &mut view);
    let route = route_index.and_then(|i| config.routes.get(i));
    let now = host.now_ns().unwrap_or(0);
    let mut state = RequestState {
        route: route_index,
        start_ns: now,
        red: match route_index {
            Some(i) => Some(i),
            None if config.count_unmatched => Some(config.routes.len()),
            None => None,
        },
        ..RequestState::default()
    };
    if let Some(ids) = state.red.and_then(|i| plugin.metrics.red.get(i)) {
        let _ = host.increment_metric(ids.in_flight, 1);
    }
    if let Some(i) = route_index {
        match ratelimit::apply(host, plugin, i, &mut view, now) {
            Ok(fields) => state.ratelimit_fields = fields,
            Err(ratelimit::Rejected) => {
                state.rejected = true;
                return state;
            }
        }
    }

    let policy = route.and_then(|r| r.canary.as_ref());
    if let Some(policy) = policy {
        let trusted = is_trusted(policy, &mut view);
        let fresh = policy
            .sticky
            .as_ref()
            .and_then(|s| s.issue_cookie.as_ref())
            .map(|_| rng.fresh_key());
        let draw = Draw {
            trusted,
            roll: rng.next_u64(),
            fresh_key: fresh.as_ref().map(|k| &k[..]),
        };
        let choice = choose_variant(policy, &config.variant_header, &mut view, draw);
        state.variant = Some(choice.variant);
        if let (Reason::StickyIssued, Some(sticky), Some(key)) =
            (choice.reason, &policy.sticky, &fresh)
        {
            if let (StickyKey::Cookie(name), Some(attrs)) = (&sticky.key, &sticky.issue_cookie) {
                state.set_cookie =
                    Some(format!("{name}={}; {attrs}", String::from_utf8_lossy(key)));
            }
        }
    }

    if let Some(i) = route.filter(|r| r.breaker.is_some()).and(route_index) {
        match breaker::gate(host, plugin, i, state.variant, now) {
            Gate::Rejected => {
                state.rejected = true;
                return state;
            }
            Gate::Pass(ticket) => state.ticket = ticket,
            Gate::Fallback(v, ticket) => {
                state.variant = Some(v);
                state.ticket = Some(ticket);
            }
        }
    }

    match (policy, state.variant.and_then(|v| policy?.variants.get(v))) {
        (Some(_), Some(v)) => {
            // Overwrites whatever the client sent in both headers, then has Envoy
            // pick the route again.
            warn_on_err(
                host,
                host.set_request_header(&config.variant_header, Some(v.name.as_bytes())),
            );
            warn_on_err(
                host,
                host.set_request_header(&config.cluster_header, Some(v.cluster.as_bytes())),
            );
            warn_on_err(host, host.clear_route_cache());
        }
        _ if config.has_canary => {
            // No policy decides here, so no client may steer routing through our headers.
            warn_on_err(host, host.set_request_header(&config.variant_header, None));
            warn_on_err(host, host.set_request_header(&config.cluster_header, None));
        }
        _ => {}
    }

    if let Some(header) = &config.route_header {
        let name = route.map(|r| r.name.as_bytes());
        warn_on_err(host, host.set_request_header(header, name));
    }
    state
}

/// `on_log`: the stream is over (answered, reset or abandoned: Envoy calls this once
/// for every stream). Record RED metrics and settle the breaker's ticket.
pub fn on_log(host: &impl Host, plugin: &Plugin, state: &RequestState) {
    if state.red.is_none() && state.ticket.is_none() {
        return;
    }
    // `:status` was read as the response passed; the property is the fallback for
    // streams that ended without response headers (resets, abandoned requests).
    let code = state
        .code
        .or_else(|| host.property_u64(&["response", "code"]).ok().flatten())
        .unwrap_or(0);
    let now = host.now_ns().unwrap_or(state.start_ns);
    if let Some(ids) = state.red.and_then(|i| plugin.metrics.red.get(i)) {
        let _ = host.increment_metric(ids.in_flight, -1);
        // Variant series: the chosen variant, or the trailing `none` series.
        let slot = state
            .variant
            .unwrap_or(ids.variants.len().saturating_sub(1));
        if let Some((classes, duration)) = ids.variants.get(slot) {
            if let Some(id) = classes.get(code_class(code)) {
                let _ = host.increment_metric(*id, 1);
            }
            let _ = host.record_metric(*duration, now.saturating_sub(state.start_ns) / 1_000_000);
        }
    }
    if let Some(t) = &state.ticket {
        breaker::on_log(host, plugin, t, code, state.response_complete, now);
    }
}

/// `on_http_response_headers`: note the status for `on_log`, tag the response with
/// the variant and issue the sticky cookie, when the policy asks for them.
pub fn on_response_headers(
    host: &impl Host,
    plugin: &Plugin,
    state: &mut RequestState,
    end_of_stream: bool,
) {
    let config = &plugin.config;
    state.response_complete |= end_of_stream;
    if state.red.is_some() || state.ticket.is_some() {
        state.code = host.response_status().ok().flatten();
    }
    ratelimit::add_response_fields(host, plugin, &state.ratelimit_fields);
    let policy = state
        .route
        .and_then(|i| config.routes.get(i))
        .and_then(|r| r.canary.as_ref());
    let (Some(policy), Some(v)) = (policy, state.variant) else {
        return;
    };
    if policy.respond_with_variant {
        if let Some(variant) = policy.variants.get(v) {
            warn_on_err(
                host,
                host.set_response_header(&config.variant_header, variant.name.as_bytes()),
            );
        }
    }
    if let Some(cookie) = &state.set_cookie {
        warn_on_err(
            host,
            host.add_response_header("set-cookie", cookie.as_bytes()),
        );
    }
}

#[cfg(test)]
mod tests;
