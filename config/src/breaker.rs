//! Circuit-breaker policies: the compiled form and its validation.

use crate::canary::CompiledCanary;
use crate::problem::{join, Problems};
use crate::raw::Breaker;

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

/// A compiled breaker policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledBreaker {
    /// One breaker per variant (true) or per route.
    pub per_variant: bool,
    /// Failure statuses: a bit per code 100..=599 would be overkill; classes and codes.
    pub failure_classes: Vec<u16>,
    /// Exact failure codes.
    pub failure_codes: Vec<u16>,
    /// Failure-rate threshold, percent.
    pub failure_rate: u32,
    /// Consecutive-failure trip, if any.
    pub consecutive: Option<u32>,
    /// Slow-call duration (ns) and rate threshold (percent), if any.
    pub slow: Option<(u64, u32)>,
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
    /// Changes whenever a parameter that gives stored state its meaning changes.
    pub fingerprint: u64,
}

impl CompiledBreaker {
    /// Whether a final status counts as a failure.
    pub fn is_failure_status(&self, status: u16) -> bool {
        self.failure_codes.contains(&status) || self.failure_classes.contains(&(status / 100))
    }
}

fn pct(v: Option<u32>, default: u32, path: &str, p: &mut Problems) -> u32 {
    let v = v.unwrap_or(default);
    if v == 0 || v > 100 {
        p.push(path, format!("must be a percentage from 1 to 100, got {v}"));
    }
    v
}

/// Validates and compiles `routes[i].breaker` (`path` is that field's path).
pub fn compile_breaker(
    b: &Breaker,
    canary: Option<&CompiledCanary>,
    path: &str,
    p: &mut Problems,
) -> Option<CompiledBreaker> {
    let mut local = Problems::default();
    let mut classes = Vec::new();
    let mut codes = Vec::new();
    for (i, s) in b
        .failure_statuses
        .clone()
        .unwrap_or_else(|| vec!["5xx".into()])
        .iter()
        .enumerate()
    {
        let at = crate::problem::index(&join(path, "failureStatuses"), i);
        match (
            s.strip_suffix("xx").and_then(|c| c.parse::<u16>().ok()),
            s.parse::<u16>(),
        ) {
            (Some(c), _) if (1..=5).contains(&c) => classes.push(c),
            (_, Ok(code)) if (100..=599).contains(&code) => codes.push(code),
            _ => local.push(
                at,
                format!("{s:?} is neither a status class (1xx-5xx) nor a code (100-599)"),
            ),
        }
    }
    let failure_rate = pct(
        b.failure_rate_threshold,
        DEFAULT_FAILURE_RATE,
        &join(path, "failureRateThreshold"),
        &mut local,
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
        let rate = pct(
            Some(s.rate_threshold),
            0,
            &join(path, "slowCall.rateThreshold"),
            &mut local,
        );
        (s.duration_ms.saturating_mul(1_000_000), rate)
    });
    let window = match b.window.as_ref().map(|w| (w.calls, w.seconds)) {
        None => WindowKind::Calls(DEFAULT_WINDOW_CALLS),
        Some((Some(n), None)) => {
            if n == 0 || n > MAX_WINDOW_CALLS {
                local.push(
                    join(path, "window.calls"),
                    format!("must be 1 to {MAX_WINDOW_CALLS}, got {n}"),
                );
            }
            WindowKind::Calls(n)
        }
        Some((None, Some(n))) => {
            if n == 0 || n > MAX_WINDOW_SECONDS {
                local.push(
                    join(path, "window.seconds"),
                    format!("must be 1 to {MAX_WINDOW_SECONDS}, got {n}"),
                );
            }
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
    if open_ms == 0 || open_ms > MAX_OPEN_MS {
        local.push(
            join(path, "openDurationMs"),
            format!("must be 1 to {MAX_OPEN_MS}, got {open_ms}"),
        );
    }
    let max_open_ms = b.max_open_duration_ms.unwrap_or(open_ms);
    if max_open_ms < open_ms || max_open_ms > MAX_OPEN_MS {
        local.push(
            join(path, "maxOpenDurationMs"),
            format!("must be {open_ms} (openDurationMs) to {MAX_OPEN_MS}, got {max_open_ms}"),
        );
    }
    let probes = b.half_open_probes.unwrap_or(DEFAULT_PROBES);
    if probes == 0 || probes > MAX_PROBES {
        local.push(
            join(path, "halfOpenProbes"),
            format!("must be 1 to {MAX_PROBES}, got {probes}"),
        );
    }
    if b.max_concurrent == Some(0) {
        local.push(
            join(path, "maxConcurrent"),
            "must be at least 1 (omit it for no limit)",
        );
    }
    let per_variant = b.per_variant.unwrap_or(true);
    let wo = b.when_open.clone().unwrap_or_default();
    let status = wo.status.unwrap_or(503);
    if !(400..=599).contains(&status) {
        local.push(
            join(path, "whenOpen.status"),
            format!("must be 400 to 599, got {status}"),
        );
    }
    let body = wo.body.unwrap_or_else(|| "circuit open\n".into());
    let when_open = match &wo.fallback_variant {
        None => OpenAction::Respond {
            status,
            body: body.clone(),
        },
        Some(v) => match canary.and_then(|c| c.variants.iter().position(|x| &x.name == v)) {
            Some(i) if per_variant => OpenAction::Fallback(i),
            Some(_) => {
                local.push(join(path, "whenOpen.fallbackVariant"), "needs perVariant: true (one breaker for all variants cannot fall back to one of them)");
                OpenAction::Fallback(0)
            }
            None => {
                let why = if canary.is_some() {
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
        WindowKind::Seconds(n) => 1 << 32 | u64::from(n),
    };
    ok.then(|| CompiledBreaker {
        per_variant,
        failure_classes: classes,
        failure_codes: codes,
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
        fingerprint: [
            window_code,
            u64::from(probes),
            open_ms,
            max_open_ms,
            u64::from(per_variant),
        ]
        .iter()
        .flat_map(|n| n.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }),
    })
}

#[cfg(test)]
mod tests;
