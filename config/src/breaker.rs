//! Circuit-breaker policies: the compiled form and its validation.

use crate::fingerprint::fingerprint;
use crate::problem::{in_range, join, percentage, Problems};
use crate::raw::Breaker;
use crate::status::{default_failure_statuses, failure_statuses, FailureStatuses};

/// Default failure-rate threshold, percent.
pub const DEFAULT_FAILURE_RATE: u32 = 50;
/// Default window: the last 100 calls.
pub const DEFAULT_WINDOW_CALLS: u32 = 100;
/// Largest count window.
pub const MAX_WINDOW_CALLS: u32 = 1000;
/// Largest time window, seconds.
pub const MAX_WINDOW_SECONDS: u32 = 3600;
/// Buckets of a time window.
pub const TIME_BUCKETS: u32 = 10;
/// Default minimum calls.
pub const DEFAULT_MINIMUM_CALLS: u32 = 10;
/// Default open duration, ms.
pub const DEFAULT_OPEN_MS: u64 = 30_000;
/// Longest open duration, ms (one day).
pub const MAX_OPEN_MS: u64 = 86_400_000;
/// Default half-open probes.
pub const DEFAULT_PROBES: u32 = 3;
/// Most half-open probes.
pub const MAX_PROBES: u32 = 1000;

/// The window kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The last N calls.
    Calls(u32),
    /// The last N seconds, as [`TIME_BUCKETS`] buckets.
    Seconds(u32),
}

/// What a rejected request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenAction {
    /// A local reply.
    Respond {
        /// Status.
        status: u16,
        /// Body.
        body: String,
    },
    /// Route to this variant index instead.
    Fallback(usize),
}

/// The slow-call trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowTrip {
    /// A call longer than this is slow, ns.
    pub threshold_ns: u64,
    /// Percentage of slow calls in the window that opens the breaker.
    pub rate_pct: u32,
}

/// A compiled breaker policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledBreaker {
    /// One breaker per variant (true) or per route.
    pub per_variant: bool,
    /// Statuses that count as failures.
    pub failures: FailureStatuses,
    /// Failure-rate threshold, percent.
    pub failure_rate: u32,
    /// Consecutive-failure trip, if any.
    pub consecutive: Option<u32>,
    /// Slow-call trip, if any.
    pub slow: Option<SlowTrip>,
    /// Window.
    pub window: WindowKind,
    /// Minimum calls before rates count.
    pub minimum_calls: u32,
    /// Base open duration, ns.
    pub open_ns: u64,
    /// Cap of the growing open duration, ns (equal to `open_ns`: no growth).
    pub max_open_ns: u64,
    /// Half-open probes.
    pub probes: u32,
    /// Concurrency limit.
    pub max_concurrent: Option<u32>,
    /// Rejection behaviour.
    pub when_open: OpenAction,
    /// The fallback answer used when the fallback variant is unavailable too, and
    /// for the concurrency limit.
    pub status: u16,
    /// Body for `status`.
    pub body: String,
    /// The gRPC status of the reply to a gRPC request.
    pub grpc_status: u32,
    /// Changes whenever a parameter that gives stored state its meaning changes.
    pub fingerprint: u64,
}

/// Validates and compiles `routes[i].breaker` (`path` is that field's path);
/// `variants` are the names of the route's canary variants, if it has a policy.
pub fn compile_breaker(
    b: &Breaker,
    variants: Option<&[&str]>,
    path: &str,
    p: &mut Problems,
) -> Option<CompiledBreaker> {
    let mut local = Problems::default();
    let mut failures = match &b.failure_statuses {
        Some(list) => failure_statuses(list, &join(path, "failureStatuses"), &mut local),
        None => default_failure_statuses(),
    };
    failures.grpc = crate::grpc::failure_codes(
        b.failure_grpc_codes.as_ref(),
        &join(path, "failureGrpcCodes"),
        &mut local,
    );
    let failure_rate = percentage(
        &mut local,
        &join(path, "failureRateThreshold"),
        b.failure_rate_threshold.unwrap_or(DEFAULT_FAILURE_RATE),
    );
    if b.consecutive_failures == Some(0) {
        local.push(
            join(path, "consecutiveFailures"),
            "must be at least 1 (omit it to disable)",
        );
    }
    let slow = b.slow_call.as_ref().map(|s| {
        if s.duration_ms == 0 {
            local.push(join(path, "slowCall.durationMs"), "must be at least 1");
        }
        SlowTrip {
            threshold_ns: s.duration_ms.saturating_mul(1_000_000),
            rate_pct: percentage(
                &mut local,
                &join(path, "slowCall.rateThreshold"),
                s.rate_threshold,
            ),
        }
    });
    let window = match b.window.as_ref().map(|w| (w.calls, w.seconds)) {
        None => WindowKind::Calls(DEFAULT_WINDOW_CALLS),
        Some((Some(n), None)) => {
            let at = join(path, "window.calls");
            in_range(&mut local, &at, n, (1, MAX_WINDOW_CALLS), "");
            WindowKind::Calls(n)
        }
        Some((None, Some(n))) => {
            let at = join(path, "window.seconds");
            in_range(&mut local, &at, n, (1, MAX_WINDOW_SECONDS), "");
            WindowKind::Seconds(n)
        }
        Some(_) => {
            local.push(join(path, "window"), "give exactly one of calls, seconds");
            WindowKind::Calls(DEFAULT_WINDOW_CALLS)
        }
    };
    let minimum_calls = b.minimum_calls.unwrap_or(DEFAULT_MINIMUM_CALLS);
    if minimum_calls == 0 {
        local.push(join(path, "minimumCalls"), "must be at least 1");
    }
    if let WindowKind::Calls(n) = window {
        if minimum_calls > n && n > 0 {
            local.push(
                join(path, "minimumCalls"),
                format!("{minimum_calls} can never be reached in a window of {n} calls"),
            );
        }
    }
    let open_ms = b.open_duration_ms.unwrap_or(DEFAULT_OPEN_MS);
    let at = join(path, "openDurationMs");
    in_range(&mut local, &at, open_ms, (1, MAX_OPEN_MS), "");
    let max_open_ms = b.max_open_duration_ms.unwrap_or(open_ms);
    if max_open_ms < open_ms || max_open_ms > MAX_OPEN_MS {
        local.push(
            join(path, "maxOpenDurationMs"),
            format!("must be {open_ms} (openDurationMs) to {MAX_OPEN_MS}, got {max_open_ms}"),
        );
    }
    let probes = b.half_open_probes.unwrap_or(DEFAULT_PROBES);
    let at = join(path, "halfOpenProbes");
    in_range(&mut local, &at, probes, (1, MAX_PROBES), "");
    if b.max_concurrent == Some(0) {
        local.push(
            join(path, "maxConcurrent"),
            "must be at least 1 (omit it for no limit)",
        );
    }
    let per_variant = b.per_variant.unwrap_or(true);
    let wo = b.when_open.clone().unwrap_or_default();
    let status = wo.status.unwrap_or(503);
    in_range(
        &mut local,
        &join(path, "whenOpen.status"),
        status,
        (400, 599),
        "",
    );
    let body = wo.body.unwrap_or_else(|| "circuit open\n".into());
    let grpc_status = crate::grpc::reply_code(
        wo.grpc_status.as_ref(),
        crate::grpc::UNAVAILABLE,
        &join(path, "whenOpen.grpcStatus"),
        &mut local,
    );
    let when_open = match &wo.fallback_variant {
        None => OpenAction::Respond {
            status,
            body: body.clone(),
        },
        Some(v) => match variants.and_then(|names| names.iter().position(|x| x == v)) {
            Some(i) if per_variant => OpenAction::Fallback(i),
            Some(_) => {
                local.push(join(path, "whenOpen.fallbackVariant"), "needs perVariant: true (one breaker for all variants cannot fall back to one of them)");
                OpenAction::Fallback(0)
            }
            None => {
                let why = if variants.is_some() {
                    format!("unknown variant {v:?}")
                } else {
                    "the route has no canary policy to fall back within".to_string()
                };
                local.push(join(path, "whenOpen.fallbackVariant"), why);
                OpenAction::Fallback(0)
            }
        },
    };
    let ok = local.merge_into(p);
    let window_code = match window {
        WindowKind::Calls(n) => u64::from(n),
        // Bit 32 tags a time window (`|` and `^` are the same here: n < 2^32).
        WindowKind::Seconds(n) => 1 << 32 | u64::from(n),
    };
    ok.then(|| CompiledBreaker {
        per_variant,
        failures,
        failure_rate,
        consecutive: b.consecutive_failures,
        slow,
        window,
        minimum_calls,
        open_ns: open_ms * 1_000_000,
        max_open_ns: max_open_ms * 1_000_000,
        probes,
        max_concurrent: b.max_concurrent,
        when_open,
        status,
        body,
        grpc_status,
        fingerprint: fingerprint(&[
            window_code,
            u64::from(probes),
            open_ms,
            max_open_ms,
            u64::from(per_variant),
        ]),
    })
}

#[cfg(test)]
mod tests;
