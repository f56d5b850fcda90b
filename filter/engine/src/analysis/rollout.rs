//! One rollout's shared state and how a batch of counts moves it: the sequential
//! tests, the gates, the ramp, the verdicts. Pure: time and counts are arguments.
//!
//! Every worker counts its own requests and folds them in on its tick with one
//! compare-and-swap ([`fold`] is the function applied inside it), so each count
//! enters exactly one batch, and a verdict or step made by one worker is what
//! every other worker reads on its next tick.

use meshguard_config::canary::CompiledCanary;
use meshguard_config::rollout::{CompiledAnalysis, CompiledRollout, Method};

use super::detector::{log_threshold, Detector, WINDOW_NS};
use super::gates::{below_floor, z_statistic};
use super::mixture::Mixture;
use crate::le::Reader;
use crate::metrics::{CanaryState, Signal};

/// The record's layout: 2 added the change detectors (a version-1 record is
/// read with fresh detectors).
const VERSION: u8 = 2;

/// Requests, errors and slow calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests.
    pub n: u64,
    /// Errors among them.
    pub errors: u64,
    /// Slow calls among them.
    pub slow: u64,
}

impl Counts {
    /// Adds `other`.
    pub fn add(&mut self, other: &Counts) {
        self.n = self.n.saturating_add(other.n);
        self.errors = self.errors.saturating_add(other.errors);
        self.slow = self.slow.saturating_add(other.slow);
    }

    /// The count of `signal`.
    pub fn of(&self, signal: Signal) -> u64 {
        match signal {
            Signal::Errors => self.errors,
            Signal::Slow => self.slow,
        }
    }
}

/// What decided a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The sequential test on errors.
    Errors,
    /// The sequential test on slow calls.
    Slow,
    /// The success-rate gate.
    SuccessRate,
    /// The z-test gate.
    ZTest,
    /// `rollback: true` in the config.
    Manual,
}

impl Cause {
    /// Its code in stored records.
    pub fn code(self) -> u8 {
        match self {
            Cause::Errors => 1,
            Cause::Slow => 2,
            Cause::SuccessRate => 3,
            Cause::ZTest => 4,
            Cause::Manual => 5,
        }
    }

    /// The cause of a stored code.
    pub fn from_code(c: u8) -> Option<Cause> {
        Some(match c {
            1 => Cause::Errors,
            2 => Cause::Slow,
            3 => Cause::SuccessRate,
            4 => Cause::ZTest,
            5 => Cause::Manual,
            _ => return None,
        })
    }

    /// Its key in the status document.
    pub fn key(self) -> &'static str {
        match self {
            Cause::Errors => "errors",
            Cause::Slow => "slow",
            Cause::SuccessRate => "success_rate",
            Cause::ZTest => "z_test",
            Cause::Manual => "manual",
        }
    }

    /// Its name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Errors => "errors",
            Cause::Slow => "slow calls",
            Cause::SuccessRate => "success-rate gate",
            Cause::ZTest => "z-test gate",
            Cause::Manual => "manual rollback",
        }
    }
}

/// A verdict on a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Why.
    pub cause: Cause,
    /// When, ns.
    pub at: u64,
    /// Only reported (shadow mode): the variant keeps its weight.
    pub shadow: bool,
    /// A changepoint verdict: the last time before it that the detector's
    /// evidence was below 1, ns (an estimate of when the change began); 0 for
    /// other causes.
    pub since: u64,
}

/// One non-baseline variant's judgement.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Judged {
    /// The verdict, once there is one.
    pub verdict: Option<Verdict>,
    /// The sequential test on errors.
    pub errors: Mixture,
    /// The sequential test on slow calls.
    pub slow: Mixture,
    /// The change detector on errors.
    pub errors_cp: Detector,
    /// The change detector on slow calls.
    pub slow_cp: Detector,
    /// Everything it served since the rollout started.
    pub total: Counts,
    /// What it served in the success-rate gate's current interval.
    pub interval: Counts,
    /// Consecutive intervals below the success-rate floor.
    pub bad_intervals: u16,
}

impl Judged {
    /// The sequential test of `signal`.
    fn test(&self, signal: Signal) -> &Mixture {
        match signal {
            Signal::Errors => &self.errors,
            Signal::Slow => &self.slow,
        }
    }

    /// The change detector of `signal`.
    fn detector(&self, signal: Signal) -> &Detector {
        match signal {
            Signal::Errors => &self.errors_cp,
            Signal::Slow => &self.slow_cp,
        }
    }

    /// The natural log of the evidence on `signal` as `method` judges it: the
    /// sequential test's e-value, or the change detector's.
    pub fn log_evidence(&self, signal: Signal, method: Method) -> f64 {
        match method {
            Method::Test => self.test(signal).log_e(),
            Method::Changepoint => self.detector(signal).log_m(),
        }
    }

    /// Progress of the evidence on `signal` towards its threshold, per mille.
    pub fn permille(&self, signal: Signal, a: &CompiledAnalysis, alpha: f64) -> u32 {
        match a.method {
            Method::Test => self.test(signal).permille(alpha),
            Method::Changepoint => self
                .detector(signal)
                .permille(log_threshold(a.horizon_ns, alpha)),
        }
    }
}

/// A rollout's shared state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// When the first batch arrived, ns.
    pub started: u64,
    /// Ramp step (index into the steps).
    pub step: u16,
    /// When the step began, ns.
    pub step_since: u64,
    /// Canary requests in this step.
    pub step_requests: u64,
    /// Everything the baseline served since the rollout started.
    pub baseline: Counts,
    /// The success-rate gate's current interval (since `started`).
    pub gate_interval: u64,
    /// The z-test gate's last interval judged.
    pub z_interval: u64,
    /// Per non-baseline variant (variant `i + 1`).
    pub variants: Vec<Judged>,
}

/// Something that changed in a fold, for the log and the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Variant `variant` moved from one state to another.
    State {
        /// Variant index.
        variant: usize,
        /// Before.
        from: CanaryState,
        /// After.
        to: CanaryState,
        /// What decided it, with the statistic and the counts.
        reason: String,
    },
    /// A shadow verdict: the variant would have been rolled back.
    Shadow {
        /// Variant index.
        variant: usize,
        /// What decided it, with the statistic and the counts.
        reason: String,
    },
    /// The ramp moved to another step.
    Step {
        /// The new step (index).
        step: usize,
        /// The canary's weight there, basis points.
        weight: u32,
        /// How the step before was passed.
        reason: String,
    },
}

/// The sequential tests' share of `alpha`: the bound holds for the whole rollout,
/// split evenly over the variants judged and the signals each is judged on.
pub fn alpha_per_test(a: &CompiledAnalysis, variants: usize) -> f64 {
    let signals = if a.slow_ns.is_some() { 2.0 } else { 1.0 };
    a.alpha / (signals * variants.max(1) as f64)
}

impl Record {
    /// A fresh record for a policy with `variants` variants (baseline included).
    pub fn new(variants: usize) -> Record {
        Record {
            variants: vec![Judged::default(); variants.saturating_sub(1)],
            ..Record::default()
        }
    }

    /// The state of variant `v` (1-based: 0 is the baseline, which has none).
    pub fn state(&self, rollout: &CompiledRollout, v: usize) -> CanaryState {
        let judged = v.checked_sub(1).and_then(|i| self.variants.get(i));
        if judged.and_then(|j| j.verdict).is_some_and(|d| !d.shadow) {
            return CanaryState::RolledBack;
        }
        match &rollout.ramp {
            Some(r) if usize::from(self.step) + 1 >= r.steps.len() => CanaryState::Promoted,
            Some(_) if !rollout.pause => CanaryState::Ramping,
            _ => CanaryState::Holding,
        }
    }

    /// Every variant's effective weight, basis points: the configured weights (or
    /// the ramp's step), with rolled-back variants' weight given to the baseline.
    pub fn weights(&self, policy: &CompiledCanary, rollout: &CompiledRollout) -> Vec<u32> {
        let mut w = policy.weights.clone();
        if let (Some(ramp), Some(canary)) = (&rollout.ramp, w.get(1).copied()) {
            let step = ramp
                .steps
                .get(usize::from(self.step))
                .copied()
                .unwrap_or(canary);
            w = vec![10_000u32.saturating_sub(step), step];
        }
        for v in 1..w.len() {
            if self.state(rollout, v) == CanaryState::RolledBack {
                let moved = w.get(v).copied().unwrap_or(0);
                if let Some(x) = w.get_mut(v) {
                    *x = 0;
                }
                if let Some(base) = w.first_mut() {
                    *base = base.saturating_add(moved);
                }
            }
        }
        w
    }

    /// Whether nothing can change any more: every variant rolled back or promoted.
    pub fn settled(&self, rollout: &CompiledRollout) -> bool {
        (1..=self.variants.len()).all(|v| {
            matches!(
                self.state(rollout, v),
                CanaryState::RolledBack | CanaryState::Promoted
            )
        })
    }

    /// Bytes for shared data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.variants.len() * 500);
        out.push(VERSION);
        out.extend_from_slice(&(self.variants.len() as u16).to_le_bytes());
        for n in [self.started, self.step_since, self.step_requests] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.step.to_le_bytes());
        put_counts(&mut out, &self.baseline);
        out.extend_from_slice(&self.gate_interval.to_le_bytes());
        out.extend_from_slice(&self.z_interval.to_le_bytes());
        for j in &self.variants {
            match j.verdict {
                None => out.extend_from_slice(&[0; 10]),
                Some(d) => {
                    out.push(d.cause.code());
                    out.push(u8::from(d.shadow));
                    out.extend_from_slice(&d.at.to_le_bytes());
                }
            }
            for m in [&j.errors, &j.slow] {
                for l in m.llr {
                    out.extend_from_slice(&l.to_bits().to_le_bytes());
                }
            }
            put_counts(&mut out, &j.total);
            put_counts(&mut out, &j.interval);
            out.extend_from_slice(&j.bad_intervals.to_le_bytes());
            out.extend_from_slice(&j.verdict.map_or(0, |v| v.since).to_le_bytes());
            for d in [&j.errors_cp, &j.slow_cp] {
                for l in d.log_r {
                    out.extend_from_slice(&l.to_bits().to_le_bytes());
                }
                out.extend_from_slice(&d.window.to_le_bytes());
                out.extend_from_slice(&d.cusum.to_bits().to_le_bytes());
                out.extend_from_slice(&d.calm.to_le_bytes());
            }
        }
        out
    }

    /// Decodes stored bytes written for a policy with `variants` variants; `None`
    /// when they are not a valid record of that shape (corrupt, or another
    /// version's): the caller starts afresh and says so.
    pub fn decode(bytes: &[u8], variants: usize) -> Option<Record> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if !(1..=VERSION).contains(&version) || usize::from(r.u16()?) + 1 != variants {
            return None;
        }
        let mut rec = Record {
            started: r.u64()?,
            step_since: r.u64()?,
            step_requests: r.u64()?,
            step: r.u16()?,
            baseline: read_counts(&mut r)?,
            gate_interval: r.u64()?,
            z_interval: r.u64()?,
            variants: Vec::new(),
        };
        for _ in 1..variants {
            let cause = r.u8()?;
            let shadow = r.u8()?;
            let at = r.u64()?;
            let mut verdict = match cause {
                0 => None,
                c => Some(Verdict {
                    cause: Cause::from_code(c)?,
                    at,
                    shadow: shadow != 0,
                    since: 0,
                }),
            };
            let mut errors = Mixture::default();
            let mut slow = Mixture::default();
            for m in [&mut errors, &mut slow] {
                for l in m.llr.iter_mut() {
                    *l = f64::from_bits(r.u64()?);
                    if l.is_nan() {
                        return None;
                    }
                }
            }
            let total = read_counts(&mut r)?;
            let interval = read_counts(&mut r)?;
            let bad_intervals = r.u16()?;
            let mut detectors = [Detector::default(); 2];
            if version >= 2 {
                let since = r.u64()?;
                if let Some(v) = verdict.as_mut() {
                    v.since = since;
                }
                for d in &mut detectors {
                    for l in d.log_r.iter_mut() {
                        *l = f64::from_bits(r.u64()?);
                    }
                    d.window = r.u64()?;
                    d.cusum = f64::from_bits(r.u64()?);
                    d.calm = r.u64()?;
                    if !d.valid() {
                        return None;
                    }
                }
            }
            let [errors_cp, slow_cp] = detectors;
            rec.variants.push(Judged {
                verdict,
                errors,
                slow,
                errors_cp,
                slow_cp,
                total,
                interval,
                bad_intervals,
            });
        }
        r.done().then_some(rec)
    }
}

/// Writes `c` as three little-endian `u64`s.
pub fn put_counts(out: &mut Vec<u8>, c: &Counts) {
    for n in [c.n, c.errors, c.slow] {
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// Reads what [`put_counts`] wrote.
pub fn read_counts(r: &mut Reader<'_>) -> Option<Counts> {
    Some(Counts {
        n: r.u64()?,
        errors: r.u64()?,
        slow: r.u64()?,
    })
}

/// `e^x` for a log, as text: `1.2e3`.
fn e_value(log: f64) -> String {
    format!("{:.3e}", log.exp())
}

/// Folds one worker's batch (`batch[v]`: what variant `v` served, 0 the baseline)
/// into `rec` at `now`, and says what changed.
pub fn fold(
    rec: &mut Record,
    rollout: &CompiledRollout,
    batch: &[Counts],
    now: u64,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let before: Vec<CanaryState> = (1..=rec.variants.len())
        .map(|v| rec.state(rollout, v))
        .collect();
    let mut reasons: Vec<Option<String>> = vec![None; rec.variants.len()];
    if rec.started == 0 {
        rec.started = now;
        rec.step_since = now;
    }
    let base = batch.first().copied().unwrap_or_default();
    rec.baseline.add(&base);
    if rollout.rollback {
        for (j, r) in rec.variants.iter_mut().zip(reasons.iter_mut()) {
            if j.verdict.is_none_or(|d| d.shadow) {
                j.verdict = Some(Verdict {
                    cause: Cause::Manual,
                    at: now,
                    shadow: false,
                    since: 0,
                });
                *r = Some("rollback: true in the config".into());
            }
        }
    }
    if let Some(a) = &rollout.analysis {
        let since = now.saturating_sub(rec.started);
        let gate_interval = a.success_rate.map(|g| since / g.interval_ns.max(1));
        let z_interval = a.z_test.map(|g| since / g.interval_ns.max(1));
        let alpha = alpha_per_test(a, rec.variants.len());
        let ctx = Ctx {
            a,
            alpha,
            log_a: log_threshold(a.horizon_ns, alpha),
            now,
            started: rec.started,
            base,
            baseline: rec.baseline,
            gate_rolled: gate_interval.is_some_and(|k| k != rec.gate_interval),
            z_due: z_interval.is_some_and(|k| k != rec.z_interval && k > 0),
        };
        for (i, j) in rec.variants.iter_mut().enumerate() {
            let settled = before
                .get(i)
                .is_none_or(|s| matches!(s, CanaryState::RolledBack | CanaryState::Promoted));
            if settled {
                continue;
            }
            let b = batch.get(i + 1).copied().unwrap_or_default();
            let Some((cause, reason, since)) = j.judge(&ctx, &b) else {
                continue;
            };
            if j.verdict.is_some() {
                continue; // a shadow verdict is reported once
            }
            j.verdict = Some(Verdict {
                cause,
                at: now,
                shadow: a.shadow,
                since,
            });
            if a.shadow {
                changes.push(Change::Shadow {
                    variant: i + 1,
                    reason,
                });
            } else if let Some(r) = reasons.get_mut(i) {
                *r = Some(reason);
            }
        }
        rec.gate_interval = gate_interval.unwrap_or(rec.gate_interval);
        rec.z_interval = z_interval.unwrap_or(rec.z_interval);
    }
    for (j, b) in rec.variants.iter_mut().zip(batch.iter().skip(1)) {
        j.total.add(b);
    }
    if let Some(canary) = batch.get(1) {
        rec.step_requests = rec.step_requests.saturating_add(canary.n);
    }
    if let Some(step) = advance(rec, rollout, now) {
        changes.push(step);
    }
    for (i, (from, reason)) in before.iter().zip(reasons).enumerate() {
        let to = rec.state(rollout, i + 1);
        if to != *from {
            let reason = reason.unwrap_or_else(|| {
                format!(
                    "ramp reached its last step ({} of {})",
                    usize::from(rec.step) + 1,
                    rollout.ramp.as_ref().map_or(0, |r| r.steps.len())
                )
            });
            changes.push(Change::State {
                variant: i + 1,
                from: *from,
                to,
                reason,
            });
        }
    }
    changes
}

/// What judging one batch needs besides the variant's own state.
struct Ctx<'a> {
    a: &'a CompiledAnalysis,
    /// Each sequential test's share of alpha.
    alpha: f64,
    /// `ln A`, the change detectors' threshold for that share.
    log_a: f64,
    /// When the batch is folded, ns.
    now: u64,
    /// When the rollout started, ns.
    started: u64,
    /// The baseline's part of this batch.
    base: Counts,
    /// Everything the baseline served, this batch included.
    baseline: Counts,
    /// The success-rate gate's interval just ended: judge it.
    gate_rolled: bool,
    /// The z-test gate is due.
    z_due: bool,
}

impl Judged {
    /// Adds batch `b` to the sequential tests and the gates; the cause of a verdict
    /// and its reason (the statistic and the counts), if one is reached.
    fn judge(&mut self, ctx: &Ctx<'_>, b: &Counts) -> Option<(Cause, String, u64)> {
        let (a, base, baseline) = (ctx.a, &ctx.base, &ctx.baseline);
        self.errors.update(b.n, b.errors, base.n, base.errors);
        self.slow.update(b.n, b.slow, base.n, base.slow);
        self.errors_cp
            .update(ctx.now, b.n, b.errors, base.n, base.errors);
        self.slow_cp.update(ctx.now, b.n, b.slow, base.n, base.slow);
        let mut total = self.total;
        total.add(b);
        let ready = total.n >= a.min_requests;
        let mut found: Option<(Cause, String, u64)> = None;
        if a.sequential && ready {
            let signals = std::iter::once(Signal::Errors).chain(a.slow_ns.map(|_| Signal::Slow));
            found = signals
                .filter_map(|signal| self.sequential(ctx, signal, &total))
                .next();
        }
        if let Some(g) = a.success_rate {
            if ctx.gate_rolled {
                if ready {
                    match below_floor(self.interval.n, self.interval.errors, g.min) {
                        Some(true) => self.bad_intervals = self.bad_intervals.saturating_add(1),
                        Some(false) => self.bad_intervals = 0,
                        None => {}
                    }
                }
                if found.is_none() && u32::from(self.bad_intervals) >= g.intervals {
                    found = Some((
                        Cause::SuccessRate,
                        format!(
                            "success-rate gate: {} consecutive intervals below {}% (the last: {} of {} failed)",
                            self.bad_intervals,
                            g.min * 100.0,
                            self.interval.errors,
                            self.interval.n
                        ),
                        0,
                    ));
                }
                self.interval = Counts::default();
            }
            self.interval.add(b);
        }
        if let Some(g) = a.z_test {
            let z = z_statistic(total.n, total.errors, baseline.n, baseline.errors);
            if found.is_none() && ctx.z_due && ready && z > g.z {
                found = Some((
                    Cause::ZTest,
                    format!(
                        "z-test gate: z = {z:.2} > {} ({} of {} failed, baseline {} of {})",
                        g.z, total.errors, total.n, baseline.errors, baseline.n
                    ),
                    0,
                ));
            }
        }
        found
    }
}

impl Judged {
    /// The sequential evidence on `signal` as the analysis' method judges it:
    /// the verdict's cause, its reason (the statistic, the method, the window
    /// that decided, the counts) and, for a change detector, when the
    /// evidence began growing (ns), once it reached its threshold.
    fn sequential(
        &self,
        ctx: &Ctx<'_>,
        signal: Signal,
        total: &Counts,
    ) -> Option<(Cause, String, u64)> {
        let cause = match signal {
            Signal::Errors => Cause::Errors,
            Signal::Slow => Cause::Slow,
        };
        let secs = |ns: u64| ns.saturating_sub(ctx.started) / 1_000_000_000;
        let (statistic, since) = match ctx.a.method {
            Method::Test => {
                let m = self.test(signal);
                if !m.rejects(ctx.alpha) {
                    return None;
                }
                let s = format!(
                    "e-value {} reached 1/alpha = {:.0}",
                    e_value(m.log_e()),
                    1.0 / ctx.alpha
                );
                (s, 0)
            }
            Method::Changepoint => {
                let d = self.detector(signal);
                if !d.alarms(ctx.log_a) {
                    return None;
                }
                let s = format!(
                    "e-detector {} reached horizon/alpha = {}",
                    e_value(d.log_m()),
                    e_value(ctx.log_a)
                );
                // The change began after the CUSUM's last calm window.
                let since = match d.calm {
                    0 => 0,
                    w => w.saturating_add(1).saturating_mul(WINDOW_NS),
                };
                (s, since)
            }
        };
        let growing = if since > 0 {
            format!(", evidence growing since {} s", secs(since))
        } else {
            String::new()
        };
        let reason = format!(
            "{}: {statistic} after {} requests with {} {} (baseline {} with {}); method {}, window {} s into the rollout{growing}",
            cause.name(),
            total.n,
            total.of(signal),
            signal_noun(signal),
            ctx.baseline.n,
            ctx.baseline.of(signal),
            ctx.a.method.name(),
            secs(ctx.now),
        );
        Some((cause, reason, since))
    }
}

fn signal_noun(s: Signal) -> &'static str {
    match s {
        Signal::Errors => "errors",
        Signal::Slow => "slow calls",
    }
}

/// Moves the ramp on when the step has been held long enough with enough
/// requests and no success-rate interval is failing.
fn advance(rec: &mut Record, rollout: &CompiledRollout, now: u64) -> Option<Change> {
    let ramp = rollout.ramp.as_ref()?;
    if rollout.pause || rec.state(rollout, 1) != CanaryState::Ramping {
        return None;
    }
    let held = now.saturating_sub(rec.step_since);
    let failing = rec.variants.first().is_some_and(|j| j.bad_intervals > 0);
    if held < ramp.hold_ns || rec.step_requests < ramp.min_requests || failing {
        return None;
    }
    let reason = format!(
        "step {} held {} s with {} canary requests",
        usize::from(rec.step) + 1,
        held / 1_000_000_000,
        rec.step_requests
    );
    rec.step = rec.step.saturating_add(1);
    rec.step_since = now;
    rec.step_requests = 0;
    let step = usize::from(rec.step);
    Some(Change::Step {
        step,
        weight: ramp.steps.get(step).copied().unwrap_or(10_000),
        reason,
    })
}

#[cfg(test)]
mod tests;
