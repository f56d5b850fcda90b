//! The documents meshguard writes about itself: the decision record of one request
//! and the live status document. The filter writes them, `meshguard status` reads
//! them, and `meshguard schema decision|status` prints their JSON Schemas.

use std::fmt::Write as _;

use serde::Deserialize;

/// The status document's `schema` value.
pub const STATUS_SCHEMA: &str = "meshguard.status/v1";

/// What meshguard decided for one request, and why.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Decision {
    /// The matched route (`null`: no route matched; the request passed through).
    pub route: Option<String>,
    /// The canary variant that serves the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Why that variant: `propagated` (a trusted caller's variant header),
    /// `rule:N` (override rule N of the route's canary policy), `sticky` (the
    /// sticky key's bucket), `sticky_issued` (a new sticky key, set as a cookie),
    /// `weighted` (a random draw), `rolled_back` (the chosen variant was rolled
    /// back: the baseline serves), `fallback` (its breaker was open: the
    /// `fallbackVariant` serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Each rate-limit policy that was charged, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitDecision>,
    /// The breaker: `closed` (admitted), `probe` (admitted as a half-open probe),
    /// `open` (rejected, or sent to the fallback variant), `half_open` (rejected:
    /// every probe is out), `at_capacity` (rejected: `maxConcurrent` reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    /// The served variant's rollout state: `baseline`, `ramping`, `holding`,
    /// `promoted` or `rolled_back`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<String>,
    /// Why meshguard answered itself, when it did: `rate_limited`,
    /// `rate_limit_store_error`, `breaker_open`, `breaker_half_open`,
    /// `concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

/// One rate-limit policy's outcome for a request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitDecision {
    /// The policy.
    pub policy: String,
    /// `allowed`, `limited`, `shadow_limited`, `error_allowed`, `error_denied`,
    /// `fallback`, `fallback_limited` (the `outcome` label of
    /// `meshguard_ratelimit_requests_total`), or `cached_limited` (a remembered
    /// `OVER_LIMIT` of the rate limit service).
    pub outcome: String,
    /// Whole tokens left in the key's bucket after the charge, when a local
    /// bucket decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
}

/// The live status document: what one worker of one Envoy knows, read from the
/// state all its workers share (breakers, rollouts, rate-limit tables) and from
/// its own (the per-worker counts).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Status {
    /// Always `meshguard.status/v1`.
    pub schema: String,
    /// The plugin's shared-data prefix (`mg1.<plugin name>`).
    pub plugin: String,
    /// The config revision: 16 hex digits fingerprinting the config's bytes.
    pub revision: String,
    /// Routes in match order.
    pub routes: Vec<RouteStatus>,
    /// Rate-limit policies in config order.
    pub policies: Vec<PolicyStatus>,
}

/// One route's live state.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteStatus {
    /// The route's name.
    pub name: String,
    /// Its canary policy's split and rollout, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// Its breaker instances (per variant, or one `all`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breakers: Vec<BreakerStatus>,
    /// Requests holding a concurrency slot (with `maxConcurrent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
}

/// A canary policy's live split.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CanaryStatus {
    /// The policy has a rollout (analysis, ramp or manual control).
    pub rollout: bool,
    /// The ramp's current step (0-based), with a ramp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// A fleet rollout (`canary.fleet`): how it is judged now, `fleet` (by
    /// the fleet service), or `hold` / `local` while the service cannot be
    /// reached (see `whileUnreachable`). Absent: this Envoy judges alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_by: Option<String>,
    /// A fleet rollout: ms since the fleet service last answered (absent
    /// before its first answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_age_ms: Option<u64>,
    /// How the analysis judges the sequential evidence, `test` or
    /// `changepoint` (`analysis.method`), with an analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Baseline first.
    pub variants: Vec<VariantStatus>,
}

/// One variant's live state.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VariantStatus {
    /// The variant's name.
    pub name: String,
    /// Its effective weight, basis points.
    pub weight: u32,
    /// `baseline`, `ramping`, `holding`, `promoted` or `rolled_back`; `static`
    /// for a split without a rollout (nothing judges or moves it).
    pub state: String,
    /// Each sequential test's progress to its rollback threshold, per mille
    /// (1000: the verdict), with an analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// A shadow verdict was reached (judged, not acted on).
    #[serde(default)]
    pub shadow_verdict: bool,
    /// The verdict, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<VerdictStatus>,
}

/// What decided a verdict, and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerdictStatus {
    /// `errors`, `slow`, `success_rate`, `z_test` or `manual`.
    pub cause: String,
    /// The window that decided: seconds into the rollout.
    pub at_seconds: u64,
    /// A changepoint verdict: seconds into the rollout since which the
    /// evidence grew, an estimate of when the change began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_seconds: Option<u64>,
}

/// Evidence against a canary, per mille of the threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Evidence {
    /// Errors.
    pub errors: u32,
    /// Slow calls.
    pub slow: u32,
}

/// One breaker instance's live state.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BreakerStatus {
    /// The variant it is kept for (`all`: one per route).
    pub variant: String,
    /// `closed`, `half_open` or `open`.
    pub phase: String,
    /// While open: milliseconds until it lets probes through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_for_ms: Option<u64>,
    /// What its window holds now.
    pub window: WindowCounts,
}

/// A breaker window's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WindowCounts {
    /// Calls.
    pub calls: u32,
    /// Failed calls.
    pub failures: u32,
    /// Slow calls.
    pub slow: u32,
}

/// One rate-limit policy's live state.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The policy's name.
    pub name: String,
    /// Decided by the rate limit service.
    pub global: bool,
    /// Shadow mode (decides and counts, never rejects).
    pub shadow: bool,
    /// Its table of buckets (local policies, and a global one's fallback).
    pub table: TableStatus,
    /// This worker's counts since the config was applied.
    pub worker: WorkerCounts,
    /// A global policy: this worker is in back-off from the rate limit service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<bool>,
}

/// A rate-limit table's occupancy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TableStatus {
    /// Slots (`maxKeys`).
    pub max_keys: u32,
    /// Slots read for this document (all of them up to 1024, else the first 1024).
    pub sampled: u32,
    /// Of those, the slots that hold a key.
    pub used: u32,
    /// The shared overflow bucket (keys beyond capacity) holds spent tokens now.
    pub overflow_in_use: bool,
}

/// What one worker counted for a policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkerCounts {
    /// Charges that went to the overflow bucket.
    pub overflow: u64,
    /// Charges whose bucket could not be updated (a store error, or
    /// compare-and-swap retries exhausted).
    pub store_errors: u64,
    /// Calls to the rate limit service that failed (timeout, connection, server).
    pub rpc_errors: u64,
    /// Leases taken: blocks of tokens from the shared bucket (local policies), or
    /// quota leases from the rate limit service (global ones with `lease`).
    #[serde(default)]
    pub leases: u64,
}

// The documents are written by hand, not with serde's `Serialize`: the filter
// writes them, and serde's serialisers for these types cost about 7 KB of a
// module that must stay under 1 MiB (twiggy, Envoy 1.40 build). A round-trip test
// reads every field back through the `Deserialize` the CLI uses.

/// A JSON object being written.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }
    fn key(&mut self, k: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        let _ = write!(self.out, "\"{k}\":");
        self.out
    }
    fn str(&mut self, k: &str, v: &str) {
        quote(self.key(k), v);
    }
    fn opt_str(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(k, v);
        }
    }
    fn num(&mut self, k: &str, v: u64) {
        let _ = write!(self.key(k), "{v}");
    }
    fn bool(&mut self, k: &str, v: bool) {
        self.key(k).push_str(if v { "true" } else { "false" });
    }
    fn list<T>(&mut self, k: &str, items: &[T], each: impl Fn(&mut String, &T)) {
        let out = self.key(k);
        out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            each(out, item);
        }
        out.push(']');
    }
    fn end(self) {
        self.out.push('}');
    }
}

/// `v` as a JSON string.
fn quote(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Decision {
    /// The record as compact JSON.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(128);
        let mut o = Obj::new(&mut out);
        match &self.route {
            Some(r) => o.str("route", r),
            None => o.key("route").push_str("null"),
        }
        o.opt_str("variant", self.variant.as_deref());
        o.opt_str("reason", self.reason.as_deref());
        if !self.limits.is_empty() {
            o.list("limits", &self.limits, |out, l| {
                let mut o = Obj::new(out);
                o.str("policy", &l.policy);
                o.str("outcome", &l.outcome);
                if let Some(r) = l.remaining {
                    o.num("remaining", r);
                }
                o.end();
            });
        }
        o.opt_str("breaker", self.breaker.as_deref());
        o.opt_str("analysis", self.analysis.as_deref());
        o.opt_str("reply", self.reply.as_deref());
        o.end();
        out
    }
}

impl Status {
    /// The document as compact JSON, with a final newline.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(1024);
        let mut o = Obj::new(&mut out);
        o.str("schema", &self.schema);
        o.str("plugin", &self.plugin);
        o.str("revision", &self.revision);
        o.list("routes", &self.routes, |out, r| r.write(out));
        o.list("policies", &self.policies, |out, p| p.write(out));
        o.end();
        out.push('\n');
        out
    }
}

impl RouteStatus {
    fn write(&self, out: &mut String) {
        let mut o = Obj::new(out);
        o.str("name", &self.name);
        if let Some(c) = &self.canary {
            let out = o.key("canary");
            let mut c_o = Obj::new(out);
            c_o.bool("rollout", c.rollout);
            if let Some(s) = c.step {
                c_o.num("step", u64::from(s));
            }
            if let Some(j) = &c.judged_by {
                c_o.str("judgedBy", j);
            }
            if let Some(ms) = c.fleet_age_ms {
                c_o.num("fleetAgeMs", ms);
            }
            if let Some(m) = &c.method {
                c_o.str("method", m);
            }
            c_o.list("variants", &c.variants, |out, v| {
                let mut o = Obj::new(out);
                o.str("name", &v.name);
                o.num("weight", u64::from(v.weight));
                o.str("state", &v.state);
                if let Some(e) = v.evidence {
                    let mut e_o = Obj::new(o.key("evidence"));
                    e_o.num("errors", u64::from(e.errors));
                    e_o.num("slow", u64::from(e.slow));
                    e_o.end();
                }
                o.bool("shadowVerdict", v.shadow_verdict);
                if let Some(d) = &v.verdict {
                    let mut d_o = Obj::new(o.key("verdict"));
                    d_o.str("cause", &d.cause);
                    d_o.num("atSeconds", d.at_seconds);
                    if let Some(since) = d.since_seconds {
                        d_o.num("sinceSeconds", since);
                    }
                    d_o.end();
                }
                o.end();
            });
            c_o.end();
        }
        if !self.breakers.is_empty() {
            o.list("breakers", &self.breakers, |out, b| {
                let mut o = Obj::new(out);
                o.str("variant", &b.variant);
                o.str("phase", &b.phase);
                if let Some(ms) = b.open_for_ms {
                    o.num("openForMs", ms);
                }
                let mut w = Obj::new(o.key("window"));
                w.num("calls", u64::from(b.window.calls));
                w.num("failures", u64::from(b.window.failures));
                w.num("slow", u64::from(b.window.slow));
                w.end();
                o.end();
            });
        }
        if let Some(n) = self.in_flight {
            o.num("inFlight", n);
        }
        o.end();
    }
}

impl PolicyStatus {
    fn write(&self, out: &mut String) {
        let mut o = Obj::new(out);
        o.str("name", &self.name);
        o.bool("global", self.global);
        o.bool("shadow", self.shadow);
        let t = &self.table;
        let mut t_o = Obj::new(o.key("table"));
        t_o.num("maxKeys", u64::from(t.max_keys));
        t_o.num("sampled", u64::from(t.sampled));
        t_o.num("used", u64::from(t.used));
        t_o.bool("overflowInUse", t.overflow_in_use);
        t_o.end();
        let w = &self.worker;
        let mut w_o = Obj::new(o.key("worker"));
        w_o.num("overflow", w.overflow);
        w_o.num("storeErrors", w.store_errors);
        w_o.num("rpcErrors", w.rpc_errors);
        w_o.num("leases", w.leases);
        w_o.end();
        if let Some(b) = self.backoff {
            o.bool("backoff", b);
        }
        o.end();
    }
}

/// The JSON Schema of the decision record.
#[cfg(feature = "schema")]
pub fn decision_schema() -> schemars::Schema {
    schemars::schema_for!(Decision)
}

/// The JSON Schema of the status document.
#[cfg(feature = "schema")]
pub fn status_schema() -> schemars::Schema {
    schemars::schema_for!(Status)
}

/// The status document as an operator reads it in a terminal: one block per
/// route (canary variants, breakers), then one line per rate-limit policy.
#[cfg(feature = "cli")]
pub fn render_table(s: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "meshguard {}  revision {}", s.plugin, s.revision);
    for r in &s.routes {
        let _ = write!(out, "\nroute {}", r.name);
        if let Some(n) = r.in_flight {
            let _ = write!(out, "  (in flight {n})");
        }
        out.push('\n');
        if let Some(c) = &r.canary {
            let step = c
                .step
                .map(|s| format!("  ramp step {s}"))
                .unwrap_or_default();
            let kind = if c.rollout { "rollout" } else { "static split" };
            let judged = match (&c.judged_by, c.fleet_age_ms) {
                (Some(j), Some(ms)) => format!(", judged by: {j}, fleet state {ms} ms old"),
                (Some(j), None) => format!(", judged by: {j}, no fleet state yet"),
                _ => String::new(),
            };
            let method = c
                .method
                .as_ref()
                .map_or(String::new(), |m| format!(", method: {m}"));
            let _ = writeln!(out, "  canary ({kind}{method}{judged}){step}");
            let _ = writeln!(
                out,
                "    {:<16} {:>7}  {:<12} {:>9} {:>9}",
                "VARIANT", "WEIGHT", "STATE", "ERRORS‰", "SLOW‰"
            );
            for v in &c.variants {
                let (e, sl) = v.evidence.map_or(("-".into(), "-".into()), |e| {
                    (e.errors.to_string(), e.slow.to_string())
                });
                let shadow = if v.shadow_verdict {
                    "  shadow verdict"
                } else {
                    ""
                };
                let verdict = v.verdict.as_ref().map_or(String::new(), |d| {
                    let since = d
                        .since_seconds
                        .map_or(String::new(), |s| format!(", growing since {s} s"));
                    format!("  by {} at {} s{since}", d.cause, d.at_seconds)
                });
                let _ = writeln!(
                    out,
                    "    {:<16} {:>6.2}%  {:<12} {:>9} {:>9}{shadow}{verdict}",
                    v.name,
                    f64::from(v.weight) / 100.0,
                    v.state,
                    e,
                    sl
                );
            }
        }
        if !r.breakers.is_empty() {
            let _ = writeln!(
                out,
                "  breakers\n    {:<16} {:<10} {:>7} {:>9} {:>6}  OPEN FOR",
                "VARIANT", "PHASE", "CALLS", "FAILURES", "SLOW"
            );
            for b in &r.breakers {
                let open = b
                    .open_for_ms
                    .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "    {:<16} {:<10} {:>7} {:>9} {:>6}  {open}",
                    b.variant, b.phase, b.window.calls, b.window.failures, b.window.slow
                );
            }
        }
    }
    if !s.policies.is_empty() {
        let _ = writeln!(
            out,
            "\nrate limits (the last four columns: this worker's counts)\n  {:<20} {:<7} {:>16} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "POLICY", "KIND", "KEYS (SAMPLED)", "OVERFLOW", "OVERFLOWS", "STORE ERR", "RPC ERR", "LEASES"
        );
        for p in &s.policies {
            let kind = match (p.global, p.shadow) {
                (true, _) if p.backoff == Some(true) => "global*",
                (true, _) => "global",
                (false, true) => "shadow",
                (false, false) => "local",
            };
            let keys = format!(
                "{}/{} of {}",
                p.table.used, p.table.sampled, p.table.max_keys
            );
            let _ = writeln!(
                out,
                "  {:<20} {:<7} {:>16} {:>9} {:>9} {:>9} {:>9} {:>9}",
                p.name,
                kind,
                keys,
                if p.table.overflow_in_use {
                    "in use"
                } else {
                    "idle"
                },
                p.worker.overflow,
                p.worker.store_errors,
                p.worker.rpc_errors,
                p.worker.leases
            );
        }
        if s.policies.iter().any(|p| p.backoff == Some(true)) {
            out.push_str("  * in back-off from the rate limit service (local fallback applies)\n");
        }
    }
    out
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_how_a_fleet_rollout_is_judged_and_how_old_its_state_is() {
        let doc: Status = serde_json::from_str(
            r#"{"schema":"meshguard.status/v1","plugin":"mg1.demo","revision":"00000000000000ab",
                "routes":[{"name":"a","canary":{"rollout":true,"judgedBy":"fleet","fleetAgeMs":120,
                  "variants":[{"name":"stable","weight":9000,"state":"baseline"}]}},
                  {"name":"b","canary":{"rollout":true,"judgedBy":"local",
                  "variants":[{"name":"stable","weight":9000,"state":"baseline"}]}}],"policies":[]}"#,
        )
        .unwrap();
        let t = render_table(&doc);
        for want in [
            "canary (rollout, judged by: fleet, fleet state 120 ms old)",
            "canary (rollout, judged by: local, no fleet state yet)",
        ] {
            assert!(t.contains(want), "{want:?} not in\n{t}");
        }
        let judged: Status = serde_json::from_str(
            r#"{"schema":"meshguard.status/v1","plugin":"mg1.demo","revision":"00000000000000ab",
                "routes":[{"name":"a","canary":{"rollout":true,"method":"changepoint",
                  "variants":[{"name":"stable","weight":10000,"state":"baseline"},
                    {"name":"canary","weight":0,"state":"rolled_back","evidence":{"errors":1000,"slow":0},
                     "verdict":{"cause":"errors","atSeconds":1812,"sinceSeconds":1800}}]}}],"policies":[]}"#,
        )
        .unwrap();
        let t = render_table(&judged);
        for want in [
            "canary (rollout, method: changepoint)",
            "by errors at 1812 s, growing since 1800 s",
        ] {
            assert!(t.contains(want), "{want:?} not in\n{t}");
        }
    }

    #[test]
    fn the_table_shows_an_open_breaker_a_rolled_back_canary_and_the_policies() {
        let doc: Status = serde_json::from_str(
            r#"{"schema":"meshguard.status/v1","plugin":"mg1.demo","revision":"00000000000000ab",
                "routes":[{"name":"checkout","inFlight":3,
                  "canary":{"rollout":true,"step":1,"variants":[
                    {"name":"stable","weight":10000,"state":"baseline"},
                    {"name":"canary","weight":0,"state":"rolled_back","evidence":{"errors":1000,"slow":12}}]},
                  "breakers":[{"variant":"stable","phase":"closed","window":{"calls":40,"failures":1,"slow":0}},
                              {"variant":"canary","phase":"open","openForMs":2500,"window":{"calls":20,"failures":15,"slow":0}}]}],
                "policies":[{"name":"per-client","global":false,"shadow":false,
                  "table":{"maxKeys":10000,"sampled":1024,"used":7,"overflowInUse":false},
                  "worker":{"overflow":0,"storeErrors":0,"rpcErrors":0}},
                  {"name":"fleet","global":true,"shadow":false,"backoff":true,
                  "table":{"maxKeys":100,"sampled":100,"used":0,"overflowInUse":true},
                  "worker":{"overflow":4,"storeErrors":1,"rpcErrors":9}}]}"#,
        )
        .unwrap();
        let t = render_table(&doc);
        for want in [
            "meshguard mg1.demo  revision 00000000000000ab",
            "route checkout  (in flight 3)",
            "canary (rollout)  ramp step 1",
            "canary             0.00%  rolled_back       1000        12",
            "stable           100.00%  baseline",
            "canary           open            20        15      0  2.5 s",
            "per-client",
            "7/1024 of 10000",
            "fleet                global*",
            "in use",
            "* in back-off",
        ] {
            assert!(t.contains(want), "{want:?} not in\n{t}");
        }
    }
}

#[cfg(test)]
mod round_trip {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn every_field_written_reads_back() {
        let d = Decision {
            route: Some("api".into()),
            variant: Some("canary".into()),
            reason: Some("rule:0".into()),
            limits: vec![
                LimitDecision {
                    policy: "p".into(),
                    outcome: "allowed".into(),
                    remaining: Some(4),
                },
                LimitDecision {
                    policy: "q\"\\\n".into(),
                    outcome: "cached_limited".into(),
                    remaining: None,
                },
            ],
            breaker: Some("closed".into()),
            analysis: Some("holding".into()),
            reply: Some("rate_limited".into()),
        };
        assert_eq!(serde_json::from_str::<Decision>(&d.to_json()).unwrap(), d);
        // Only what JSON requires is escaped: quotes, backslashes, control characters.
        let odd = Decision {
            route: Some("a b\u{1}\"\\é".into()),
            ..Decision::default()
        };
        assert_eq!(odd.to_json(), r#"{"route":"a b\u0001\"\\é"}"#);
        let none = Decision::default();
        assert_eq!(none.to_json(), r#"{"route":null}"#);
        assert_eq!(
            serde_json::from_str::<Decision>(&none.to_json()).unwrap(),
            none
        );
        let s = Status {
            schema: STATUS_SCHEMA.into(),
            plugin: "mg1.x".into(),
            revision: "00000000000000ff".into(),
            routes: vec![
                RouteStatus {
                    name: "a".into(),
                    canary: Some(CanaryStatus {
                        rollout: true,
                        step: Some(2),
                        judged_by: Some("hold".into()),
                        fleet_age_ms: Some(1_500),
                        method: Some("changepoint".into()),
                        variants: vec![
                            VariantStatus {
                                name: "stable".into(),
                                weight: 9000,
                                state: "baseline".into(),
                                evidence: None,
                                shadow_verdict: false,
                                verdict: None,
                            },
                            VariantStatus {
                                name: "canary".into(),
                                weight: 1000,
                                state: "ramping".into(),
                                evidence: Some(Evidence { errors: 5, slow: 6 }),
                                shadow_verdict: true,
                                verdict: Some(VerdictStatus {
                                    cause: "errors".into(),
                                    at_seconds: 1812,
                                    since_seconds: Some(1800),
                                }),
                            },
                        ],
                    }),
                    breakers: vec![BreakerStatus {
                        variant: "all".into(),
                        phase: "open".into(),
                        open_for_ms: Some(7),
                        window: WindowCounts {
                            calls: 1,
                            failures: 2,
                            slow: 3,
                        },
                    }],
                    in_flight: Some(8),
                },
                RouteStatus {
                    name: "b".into(),
                    ..RouteStatus::default()
                },
            ],
            policies: vec![PolicyStatus {
                name: "p".into(),
                global: true,
                shadow: true,
                table: TableStatus {
                    max_keys: 9,
                    sampled: 9,
                    used: 1,
                    overflow_in_use: true,
                },
                worker: WorkerCounts {
                    overflow: 1,
                    store_errors: 2,
                    rpc_errors: 3,
                    leases: 4,
                },
                backoff: Some(false),
            }],
        };
        let text = s.to_json();
        assert!(text.ends_with("}\n"));
        assert_eq!(serde_json::from_str::<Status>(&text).unwrap(), s);
    }
}
