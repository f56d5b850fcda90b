//! Metric series, their label values, and the Envoy `stats_tags` that turn
//! flat names into Prometheus labels.
//!
//! A series is a family and its `(label, value)` pairs ([`Series`]); each host
//! defines it as its proxy allows. Proxy-Wasm metrics have no labels, so the
//! Wasm host defines the flat name [`Series::flat_name`], with the labels as
//! `.label.value` pairs after the metric's own name:
//! `meshguard.ratelimit_requests_total.policy.api.outcome.limited`. Envoy stores
//! it as `wasmcustom.meshguard.…`; one `stats_tags` regex per label, anchored at
//! the start of that full name and stepping over earlier pairs two segments at a
//! time, removes `.label.value` and keeps the value as the tag. Prometheus then
//! sees `meshguard_ratelimit_requests_total{policy="api",outcome="limited"}`. The
//! native host defines the family and its labels as they are. Label values come
//! only from config names (`A-Z a-z 0-9 _ -`) and the fixed enums here
//! ([`Label`]), so the series count is fixed at configure time.

use std::marker::PhantomData;

pub use meshguard_config::names::{ALL_VARIANTS, NO_VARIANT, UNMATCHED_ROUTE};
pub use meshguard_config::telemetry::{
    histogram_buckets, native_histogram_buckets, stats_tags, tag_regex, DURATION_BUCKETS_MS,
    DURATION_STORED_PREFIX, LABELS,
};

/// One series: a metric family and its label values, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// The family without the `meshguard` prefix (`requests_total`).
    pub family: &'static str,
    /// `(label, value)` pairs, in order.
    pub labels: Vec<(&'static str, String)>,
}

impl Series {
    fn new(family: &'static str, labels: &[(&'static str, &str)]) -> Series {
        Series {
            family,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        }
    }

    /// `meshguard.<family>(.<label>.<value>)*`: the name on a host whose
    /// metrics have no labels (Proxy-Wasm), cut back into labels by
    /// [`stats_tags`].
    pub fn flat_name(&self) -> String {
        let mut name = format!("meshguard.{}", self.family);
        for (label, value) in &self.labels {
            name.push('.');
            name.push_str(label);
            name.push('.');
            name.push_str(value);
        }
        name
    }

    /// `meshguard_<family>`: the family as Prometheus shows it.
    pub fn family_name(&self) -> String {
        format!("meshguard_{}", self.family)
    }
}

/// A fixed set of label values (an enum whose every value is a series).
pub trait Label: Copy + 'static {
    /// Every value, in index order.
    const ALL: &'static [Self];
    /// The label value.
    fn label(self) -> &'static str;
    /// Position in [`Label::ALL`].
    fn index(self) -> usize;
}

/// One `T` (a metric id, say) per value of label `L`, looked up by value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByLabel<L: Label, T> {
    items: Vec<T>,
    label: PhantomData<L>,
}

impl<L: Label, T> ByLabel<L, T> {
    /// Builds one `T` per label value, stopping at the first error.
    pub fn try_new<E>(mut make: impl FnMut(L) -> Result<T, E>) -> Result<Self, E> {
        Ok(ByLabel {
            items: L::ALL.iter().map(|l| make(*l)).collect::<Result<_, E>>()?,
            label: PhantomData,
        })
    }

    /// The `T` of `label`.
    pub fn get(&self, label: L) -> Option<&T> {
        self.items.get(label.index())
    }
}

macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl Label for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label_enum! {
    /// Rate-limit outcomes, the `outcome` label of `meshguard_ratelimit_requests_total`.
    RateLimitOutcome {
        /// The bucket had a token.
        Allowed = "allowed",
        /// Rejected.
        Limited = "limited",
        /// Would have been rejected; shadow mode let it through.
        ShadowLimited = "shadow_limited",
        /// The store failed; the policy's failure mode allowed the request.
        ErrorAllowed = "error_allowed",
        /// The store failed; the policy's failure mode rejected the request.
        ErrorDenied = "error_denied",
        /// The rate limit service was in back-off; the local fallback limit allowed it.
        Fallback = "fallback",
        /// The rate limit service was in back-off; the local fallback limit rejected it.
        FallbackLimited = "fallback_limited",
    }
}

label_enum! {
    /// Status classes, the `code_class` label; `none` when no response was sent
    /// (the client went away first).
    CodeClass {
        /// 100–199.
        Informational = "1xx",
        /// 200–299.
        Success = "2xx",
        /// 300–399.
        Redirection = "3xx",
        /// 400–499.
        ClientError = "4xx",
        /// 500–599.
        ServerError = "5xx",
        /// No (valid) status.
        None = "none",
    }
}

label_enum! {
    /// Why a breaker rejected a request, the `outcome` label of
    /// `meshguard_breaker_rejected_total`.
    RejectKind {
        /// The breaker is open.
        Open = "open",
        /// Half-open, every probe already out.
        HalfOpen = "half_open",
        /// The route's concurrency limit is reached.
        Concurrency = "concurrency",
    }
}

label_enum! {
    /// Where a canary variant's rollout is, the `state` label of the canary series.
    CanaryState {
        /// The ramp is stepping its weight up.
        Ramping = "ramping",
        /// Judged at a weight that does not move (no ramp, or paused).
        Holding = "holding",
        /// The ramp reached its last step.
        Promoted = "promoted",
        /// A verdict (or the config) took its weight to 0.
        RolledBack = "rolled_back",
    }
}

label_enum! {
    /// What a canary analysis judges, the `signal` label.
    Signal {
        /// Failed calls.
        Errors = "errors",
        /// Calls over the slow-call threshold.
        Slow = "slow",
    }
}

label_enum! {
    /// How a fleet rollout is judged now, the `state` label of
    /// `meshguard_fleet_state`.
    FleetMode {
        /// By the fleet service, whose state is fresh.
        Fleet = "fleet",
        /// The service is unreachable: routing by the last fleet state, the
        /// counts kept for when it returns.
        Hold = "hold",
        /// The service is unreachable: this Envoy also judges its own counts.
        Local = "local",
    }
}

label_enum! {
    /// What became of a sync with the fleet service, the `outcome` label of
    /// `meshguard_fleet_syncs_total`.
    SyncOutcome {
        /// Answered.
        Ok = "ok",
        /// Not answered: a timeout, a refused connection, an unknown cluster,
        /// a server error, an answer that could not be read.
        Error = "error",
    }
}

impl CodeClass {
    /// The class of a final status (0: no response).
    pub fn of(status: u64) -> CodeClass {
        match status {
            100..=199 => CodeClass::Informational,
            200..=299 => CodeClass::Success,
            300..=399 => CodeClass::Redirection,
            400..=499 => CodeClass::ClientError,
            500..=599 => CodeClass::ServerError,
            _ => CodeClass::None,
        }
    }
}

/// `meshguard.ratelimit_requests_total.policy.<policy>.outcome.<outcome>`.
pub fn ratelimit_requests(policy: &str, outcome: RateLimitOutcome) -> Series {
    Series::new(
        "ratelimit_requests_total",
        &[("policy", policy), ("outcome", outcome.label())],
    )
}

/// `meshguard.ratelimit_rpc_duration_milliseconds.policy.<policy>` (histogram).
pub fn ratelimit_rpc_duration(policy: &str) -> Series {
    Series::new("ratelimit_rpc_duration_milliseconds", &[("policy", policy)])
}

/// `meshguard.ratelimit_leases_total.policy.<policy>`.
pub fn ratelimit_leases(policy: &str) -> Series {
    Series::new("ratelimit_leases_total", &[("policy", policy)])
}

/// `meshguard.ratelimit_overflow_total.policy.<policy>`: charges that went to the
/// shared overflow bucket (every candidate slot busy: `maxKeys` exhausted).
pub fn ratelimit_overflow(policy: &str) -> Series {
    Series::new("ratelimit_overflow_total", &[("policy", policy)])
}

/// `meshguard.ratelimit_table_keys.policy.<policy>`: slots of the table that a key
/// has taken since Envoy started (a gauge every worker adds to).
pub fn ratelimit_table_keys(policy: &str) -> Series {
    Series::new("ratelimit_table_keys", &[("policy", policy)])
}

/// `meshguard.ratelimit_store_conflicts_total.policy.<policy>`: charges that gave
/// up after their compare-and-swap retries ran out.
pub fn ratelimit_store_conflicts(policy: &str) -> Series {
    Series::new("ratelimit_store_conflicts_total", &[("policy", policy)])
}

/// `meshguard.ratelimit_cost_total.policy.<policy>`: tokens (hits) charged to
/// admitted requests, for a policy with a `cost`.
pub fn ratelimit_cost(policy: &str) -> Series {
    Series::new("ratelimit_cost_total", &[("policy", policy)])
}

/// `meshguard.ratelimit_cached_rejections_total.policy.<policy>`.
pub fn ratelimit_cached_rejections(policy: &str) -> Series {
    Series::new("ratelimit_cached_rejections_total", &[("policy", policy)])
}

/// `meshguard.requests_total.route.<r>.variant.<v>.code_class.<c>`.
pub fn requests_total(route: &str, variant: &str, class: CodeClass) -> Series {
    Series::new(
        "requests_total",
        &[
            ("route", route),
            ("variant", variant),
            ("code_class", class.label()),
        ],
    )
}

label_enum! {
    /// gRPC status codes, the `grpc_status` label of `meshguard_grpc_requests_total`
    /// (`none`: no `grpc-status` was seen, e.g. a reset stream).
    GrpcLabel {
        /// 0.
        Ok = "OK",
        /// 1.
        Cancelled = "CANCELLED",
        /// 2 (and any code above 16).
        Unknown = "UNKNOWN",
        /// 3.
        InvalidArgument = "INVALID_ARGUMENT",
        /// 4.
        DeadlineExceeded = "DEADLINE_EXCEEDED",
        /// 5.
        NotFound = "NOT_FOUND",
        /// 6.
        AlreadyExists = "ALREADY_EXISTS",
        /// 7.
        PermissionDenied = "PERMISSION_DENIED",
        /// 8.
        ResourceExhausted = "RESOURCE_EXHAUSTED",
        /// 9.
        FailedPrecondition = "FAILED_PRECONDITION",
        /// 10.
        Aborted = "ABORTED",
        /// 11.
        OutOfRange = "OUT_OF_RANGE",
        /// 12.
        Unimplemented = "UNIMPLEMENTED",
        /// 13.
        Internal = "INTERNAL",
        /// 14.
        Unavailable = "UNAVAILABLE",
        /// 15.
        DataLoss = "DATA_LOSS",
        /// 16.
        Unauthenticated = "UNAUTHENTICATED",
        /// No status.
        None = "none",
    }
}

impl GrpcLabel {
    /// The label of a stream's gRPC status (`None`: none seen).
    pub fn of(code: Option<u32>) -> GrpcLabel {
        match code {
            None => GrpcLabel::None,
            Some(c) => GrpcLabel::ALL
                .get(c as usize)
                .copied()
                .filter(|l| *l != GrpcLabel::None)
                .unwrap_or(GrpcLabel::Unknown),
        }
    }
}

/// `meshguard.grpc_requests_total.route.<r>.variant.<v>.grpc_status.<s>`.
pub fn grpc_requests_total(route: &str, variant: &str, status: GrpcLabel) -> Series {
    Series::new(
        "grpc_requests_total",
        &[
            ("route", route),
            ("variant", variant),
            ("grpc_status", status.label()),
        ],
    )
}

/// `meshguard.request_failures_total.route.<r>.variant.<v>`: requests that
/// failed, as the route's breaker and analysis count failures.
pub fn request_failures_total(route: &str, variant: &str) -> Series {
    Series::new(
        "request_failures_total",
        &[("route", route), ("variant", variant)],
    )
}

/// `meshguard.request_duration_milliseconds.route.<r>.variant.<v>`.
pub fn request_duration(route: &str, variant: &str) -> Series {
    Series::new(
        "request_duration_milliseconds",
        &[("route", route), ("variant", variant)],
    )
}

/// `meshguard.requests_in_flight.route.<r>`.
pub fn requests_in_flight(route: &str) -> Series {
    Series::new("requests_in_flight", &[("route", route)])
}

/// `meshguard.breaker_state.route.<route>.variant.<variant>` (gauge 0/1/2).
pub fn breaker_state(route: &str, variant: &str) -> Series {
    Series::new("breaker_state", &[("route", route), ("variant", variant)])
}

/// `meshguard.breaker_transitions_total.route.<r>.variant.<v>.state.<target>`.
pub fn breaker_transitions(route: &str, variant: &str, target: crate::Phase) -> Series {
    Series::new(
        "breaker_transitions_total",
        &[
            ("route", route),
            ("variant", variant),
            ("state", target.label()),
        ],
    )
}

/// `meshguard.breaker_rejected_total.route.<r>.variant.<v>.outcome.<why>`.
pub fn breaker_rejected(route: &str, variant: &str, why: RejectKind) -> Series {
    Series::new(
        "breaker_rejected_total",
        &[
            ("route", route),
            ("variant", variant),
            ("outcome", why.label()),
        ],
    )
}

/// `meshguard.canary_weight.route.<r>.variant.<v>` (gauge, basis points).
pub fn canary_weight(route: &str, variant: &str) -> Series {
    Series::new("canary_weight", &[("route", route), ("variant", variant)])
}

/// `meshguard.canary_state.route.<r>.variant.<v>.state.<s>` (gauge, 1 in the state).
pub fn canary_state(route: &str, variant: &str, state: CanaryState) -> Series {
    Series::new(
        "canary_state",
        &[
            ("route", route),
            ("variant", variant),
            ("state", state.label()),
        ],
    )
}

/// `meshguard.canary_transitions_total.route.<r>.variant.<v>.state.<target>`.
pub fn canary_transitions(route: &str, variant: &str, state: CanaryState) -> Series {
    Series::new(
        "canary_transitions_total",
        &[
            ("route", route),
            ("variant", variant),
            ("state", state.label()),
        ],
    )
}

/// `meshguard.canary_evidence_permille.route.<r>.variant.<v>.signal.<s>` (gauge:
/// the sequential test's progress to its threshold on a log scale, 1000 = verdict).
pub fn canary_evidence(route: &str, variant: &str, signal: Signal) -> Series {
    Series::new(
        "canary_evidence_permille",
        &[
            ("route", route),
            ("variant", variant),
            ("signal", signal.label()),
        ],
    )
}

/// `meshguard.canary_analysis.route.<r>.variant.<v>.method.<m>` (gauge, 1): how
/// the analysis judges the variant's sequential evidence (`test` or
/// `changepoint`).
pub fn canary_analysis(route: &str, variant: &str, method: &str) -> Series {
    Series::new(
        "canary_analysis",
        &[("route", route), ("variant", variant), ("method", method)],
    )
}

/// `meshguard.canary_shadow_verdict.route.<r>.variant.<v>` (gauge, 1 when a
/// shadow analysis would have rolled the variant back).
pub fn canary_shadow_verdict(route: &str, variant: &str) -> Series {
    Series::new(
        "canary_shadow_verdict",
        &[("route", route), ("variant", variant)],
    )
}

/// `meshguard.fleet_state.route.<r>.state.<mode>` (gauge, 1 in the mode a
/// fleet rollout is judged in now).
pub fn fleet_state(route: &str, mode: FleetMode) -> Series {
    Series::new("fleet_state", &[("route", route), ("state", mode.label())])
}

/// `meshguard.fleet_syncs_total.outcome.<o>`: this Envoy's syncs with the
/// fleet service.
pub fn fleet_syncs(outcome: SyncOutcome) -> Series {
    Series::new("fleet_syncs_total", &[("outcome", outcome.label())])
}

/// `meshguard.fleet_sync_duration_milliseconds` (histogram of the syncs).
pub fn fleet_sync_duration() -> Series {
    Series::new("fleet_sync_duration_milliseconds", &[])
}

/// `meshguard.fleet_last_sync_seconds` (gauge: when the service last answered,
/// Unix seconds).
pub fn fleet_last_sync() -> Series {
    Series::new("fleet_last_sync_seconds", &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn flat_names_put_labels_after_the_metric_name() {
        assert_eq!(
            ratelimit_requests("per-client", RateLimitOutcome::ShadowLimited).flat_name(),
            "meshguard.ratelimit_requests_total.policy.per-client.outcome.shadow_limited"
        );
        assert_eq!(
            breaker_rejected("web", "all", RejectKind::HalfOpen).flat_name(),
            "meshguard.breaker_rejected_total.route.web.variant.all.outcome.half_open"
        );
        assert_eq!(
            fleet_sync_duration().flat_name(),
            "meshguard.fleet_sync_duration_milliseconds"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_series_keeps_its_family_and_labels_apart() {
        let s = requests_total("web", "canary", CodeClass::of(503));
        assert_eq!(s.family_name(), "meshguard_requests_total");
        assert_eq!(
            s.labels,
            vec![
                ("route", "web".to_owned()),
                ("variant", "canary".to_owned()),
                ("code_class", "5xx".to_owned())
            ]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn status_codes_map_to_classes() {
        let class = |s| CodeClass::of(s).label();
        assert_eq!(
            [
                class(101),
                class(200),
                class(304),
                class(429),
                class(503),
                class(0),
                class(999)
            ],
            ["1xx", "2xx", "3xx", "4xx", "5xx", "none", "none"]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn label_maps_are_looked_up_by_value() {
        let ids = ByLabel::<RejectKind, usize>::try_new(|k| Ok::<_, ()>(10 + k.index())).unwrap();
        assert_eq!(ids.get(RejectKind::Concurrency), Some(&12));
        assert_eq!(RejectKind::ALL.len(), 3);
        assert!(
            ByLabel::<CodeClass, u8>::try_new(|c| if c == CodeClass::None {
                Err("no")
            } else {
                Ok(1)
            })
            .is_err()
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn tag_regexes_are_anchored_and_named_per_label() {
        let tags = stats_tags();
        assert_eq!(tags.len(), LABELS.len());
        assert!(tags
            .iter()
            .all(|(_, r)| r.starts_with(r"^wasmcustom\.meshguard\.")));
        assert_eq!(
            tag_regex("policy"),
            r"^wasmcustom\.meshguard\.[a-z_]+(?:\.[a-z_]+\.[A-Za-z0-9_-]+)*?(\.policy\.([A-Za-z0-9_-]+))"
        );
    }
}
