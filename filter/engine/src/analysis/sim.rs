//! Seeded simulations of the analysis, run through the same [`fold`] the workers
//! run: false rollbacks of healthy canaries (the sequential test against the
//! z-test re-run every interval, and the success-rate floor), how fast a failing
//! canary is caught, and a ramp that changes the share mid-run.
//!
//! Traffic: `rps` requests per second, each to the canary with probability `w`
//! (so a batch's share varies as real traffic does), each failing with the
//! variant's error rate. Batches are one tick of one worker (`batch_ms`); the
//! long false-rollback runs use 1 s batches to stay fast (the sequential test's
//! bound holds for any batching; checking more often can only use more of it).
//!
//! `make sim` prints the book's table (docs/src/canary-analysis.md) with more runs and tick-sized batches:
//! `cargo test -p meshguard-engine --release -- --ignored --nocapture simulation_report`.

#![cfg(not(target_arch = "wasm32"))]

use meshguard_config::load_json;
use meshguard_config::rollout::CompiledRollout;

use super::rollout::{fold, Cause, Counts, Record};
use crate::rng::Rng;

/// A uniform number in [0, 1).
pub(super) fn uniform(rng: &Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A Binomial(n, p) draw by inversion (exact; fast while n·min(p, 1−p) is small).
pub(super) fn binomial(rng: &Rng, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    if p > 0.5 {
        return n - binomial(rng, n, 1.0 - p);
    }
    let q = 1.0 - p;
    let s = p / q;
    let a = (n + 1) as f64 * s;
    let mut r = q.powf(n as f64);
    let mut u = uniform(rng);
    let mut x = 0u64;
    while u > r && x < n {
        u -= r;
        x += 1;
        r *= a / x as f64 - s;
    }
    x
}

/// One simulated rollout.
struct Scenario<'a> {
    rollout: &'a CompiledRollout,
    rps: u64,
    batch_ms: u64,
    seconds: u64,
    /// The canary's share at second `t` (`None`: the record's weight, as a
    /// ramp moves it).
    share: &'a dyn Fn(u64) -> Option<f64>,
    baseline_errors: f64,
    canary_errors: f64,
    /// Seconds into the run when the canary starts failing `canary_errors`
    /// (before, it fails as the baseline does); 0: from the start.
    turns_at: u64,
}

/// When and after how many canary requests a verdict came (and what caused it).
#[derive(Debug, Clone, Copy)]
struct Outcome {
    seconds: f64,
    canary_requests: u64,
    /// Canary requests judged before the canary turned bad.
    before_turn: u64,
    cause: Cause,
}

impl Scenario<'_> {
    fn run(&self, seed: u64) -> Option<Outcome> {
        let rng = Rng::new(seed);
        let mut rec = Record::new(2);
        let per_batch = self.rps * self.batch_ms / 1_000;
        let batches = self.seconds * 1_000 / self.batch_ms;
        let t0 = 1_700_000_000_000_000_000u64;
        let mut before_turn = 0;
        for i in 1..=batches {
            let now = t0 + i * self.batch_ms * 1_000_000;
            let second = i * self.batch_ms / 1_000;
            let w = (self.share)(second).unwrap_or_else(|| {
                let weights = rec.weights(self.policy(), self.rollout);
                f64::from(weights.get(1).copied().unwrap_or(0)) / 10_000.0
            });
            // The batch covers the second from `(i - 1) · batch` on: it is bad
            // once it starts at or after the turn.
            let canary_errors = if (i - 1) * self.batch_ms / 1_000 >= self.turns_at {
                self.canary_errors
            } else {
                before_turn = rec.variants.first().map_or(0, |j| j.total.n);
                self.baseline_errors
            };
            let n_c = binomial(&rng, per_batch, w);
            let n_b = per_batch - n_c;
            let batch = [
                Counts {
                    n: n_b,
                    errors: binomial(&rng, n_b, self.baseline_errors),
                    slow: 0,
                },
                Counts {
                    n: n_c,
                    errors: binomial(&rng, n_c, canary_errors),
                    slow: 0,
                },
            ];
            fold(&mut rec, self.rollout, &batch, now);
            if let Some(v) = rec.variants.first().and_then(|j| j.verdict) {
                return Some(Outcome {
                    seconds: (i * self.batch_ms) as f64 / 1_000.0,
                    canary_requests: rec.variants.first().map_or(0, |j| j.total.n),
                    before_turn,
                    cause: v.cause,
                });
            }
        }
        None
    }

    /// The sims' canary policy: its ramp's weights, when the share follows it.
    fn policy(&self) -> &'static meshguard_config::canary::CompiledCanary {
        static POLICY: std::sync::OnceLock<meshguard_config::canary::CompiledCanary> =
            std::sync::OnceLock::new();
        POLICY.get_or_init(|| {
            let json = r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
                "variants":[{"name":"stable"},{"name":"canary"}],"revision":"sim",
                "ramp":{"steps":[500,10000]}}}]}"#;
            load_json(json.as_bytes()).unwrap().routes[0]
                .canary
                .clone()
                .unwrap()
        })
    }

    /// Verdicts over `runs` seeded runs.
    fn verdicts(&self, runs: u64, seed: u64) -> Vec<Outcome> {
        (0..runs)
            .filter_map(|r| self.run(seed ^ (r << 20)))
            .collect()
    }
}

pub(super) fn rollout(analysis: &str) -> CompiledRollout {
    rollout_with(analysis, "")
}

/// A 5% canary's rollout with `analysis` and `more` (`,"ramp":{…}`, say).
/// With a ramp, the variants carry no weight (the ramp sets it).
fn rollout_with(analysis: &str, more: &str) -> CompiledRollout {
    let variants = if more.contains(r#""ramp""#) {
        r#"{"name":"stable"},{"name":"canary"}"#
    } else {
        r#"{"name":"stable","weight":9500},{"name":"canary","weight":500}"#
    };
    let json = format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web","canary":{{
            "variants":[{variants}],
            "revision":"sim","analysis":{analysis}{more}}}}}]}}"#
    );
    load_json(json.as_bytes()).unwrap().routes[0]
        .canary
        .clone()
        .unwrap()
        .rollout
        .unwrap()
}

/// The most false rollbacks `runs` runs may show when each has probability at most
/// `alpha`: the expectation plus three standard deviations.
pub(super) fn tolerance(alpha: f64, runs: u64) -> u64 {
    let r = runs as f64;
    (alpha * r + 3.0 * (alpha * (1.0 - alpha) * r).sqrt()).floor() as u64
}

fn five_percent(_: u64) -> Option<f64> {
    Some(0.05)
}

pub(super) fn quantile(mut xs: Vec<f64>, q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let i = ((xs.len() as f64 - 1.0) * q).round() as usize;
    xs.get(i).copied().unwrap_or(f64::NAN)
}

const SEQUENTIAL: &str = r#"{"alpha":0.01}"#;
/// The change detector at the same alpha, over its default horizon (1 h).
const CHANGEPOINT: &str = r#"{"alpha":0.01,"method":"changepoint"}"#;
/// The classical practice at the same nominal level: one-sided z at α = 0.01
/// (2.326), re-run every 10 s on the counts so far, no sequential test.
const Z_EVERY_10S: &str =
    r#"{"alpha":0.01,"sequential":false,"zTest":{"z":2.326,"intervalSeconds":10}}"#;

fn healthy<'a>(
    r: &'a CompiledRollout,
    p: f64,
    share: &'a dyn Fn(u64) -> Option<f64>,
) -> Scenario<'a> {
    Scenario {
        rollout: r,
        rps: 1_000,
        batch_ms: 1_000,
        seconds: 3_600,
        share,
        baseline_errors: p,
        canary_errors: p,
        turns_at: 0,
    }
}

#[test]
fn sequential_false_rollbacks_of_healthy_canaries_stay_within_alpha() {
    let r = rollout(SEQUENTIAL);
    let runs = 1_000;
    for (p, seed) in [(0.001, 11), (0.01, 12)] {
        let got = healthy(&r, p, &five_percent).verdicts(runs, seed).len() as u64;
        assert!(
            got <= tolerance(0.01, runs),
            "error rate {p}: {got} of {runs} healthy canaries rolled back"
        );
    }
}

#[test]
fn a_z_test_re_run_every_interval_rolls_back_far_more_healthy_canaries_than_its_level() {
    let r = rollout(Z_EVERY_10S);
    let runs = 1_000;
    let got = healthy(&r, 0.01, &five_percent).verdicts(runs, 13).len() as u64;
    // Its nominal level is 1%: the inflation must be well outside that binomial.
    assert!(
        got > 3 * tolerance(0.01, runs),
        "z-test every 10 s: {got} of {runs} healthy canaries rolled back"
    );
}

#[test]
fn a_ramp_that_changes_the_share_keeps_the_bound() {
    let r = rollout(SEQUENTIAL);
    let runs = 1_000;
    let ramp = |t: u64| {
        Some(match t {
            0..1_200 => 0.05,
            1_200..2_400 => 0.25,
            _ => 0.5,
        })
    };
    let got = healthy(&r, 0.01, &ramp).verdicts(runs, 14).len() as u64;
    assert!(got <= tolerance(0.01, runs), "{got} of {runs}");
}

fn failing<'a>(r: &'a CompiledRollout, canary: f64) -> Scenario<'a> {
    Scenario {
        rollout: r,
        rps: 1_000,
        batch_ms: 25, // a 50 ms tick of each of two workers
        seconds: 600,
        share: &five_percent,
        baseline_errors: 0.001,
        canary_errors: canary,
        turns_at: 0,
    }
}

#[test]
fn a_canary_failing_half_its_requests_is_caught_within_a_few_dozen_requests() {
    let r = rollout(SEQUENTIAL);
    let out = failing(&r, 0.5).verdicts(300, 21);
    assert_eq!(out.len(), 300);
    assert!(out.iter().all(|o| o.cause == Cause::Errors));
    let requests: Vec<f64> = out.iter().map(|o| o.canary_requests as f64).collect();
    let (median, p95) = (quantile(requests.clone(), 0.5), quantile(requests, 0.95));
    // minRequests (20) is the floor; the evidence is there by then or soon after.
    assert!(median <= 30.0 && p95 <= 45.0, "median {median}, p95 {p95}");
}

#[test]
fn a_canary_failing_one_percent_against_a_tenth_is_caught_in_seconds() {
    let r = rollout(SEQUENTIAL);
    let out = failing(&r, 0.01).verdicts(200, 22);
    assert_eq!(out.len(), 200, "every run within 10 minutes");
    let seconds = quantile(out.iter().map(|o| o.seconds).collect(), 0.5);
    assert!(seconds <= 60.0, "median {seconds} s");
}

#[test]
fn changepoint_false_rollbacks_of_healthy_canaries_stay_within_alpha_over_the_horizon() {
    // The bound is for the horizon (1 h, the runs' length): at most alpha.
    let r = rollout(CHANGEPOINT);
    let runs = 1_000;
    for (p, seed) in [(0.001, 41), (0.01, 42)] {
        let got = healthy(&r, p, &five_percent).verdicts(runs, seed).len() as u64;
        assert!(
            got <= tolerance(0.01, runs),
            "error rate {p}: {got} of {runs} healthy canaries rolled back"
        );
    }
}

/// A 5% canary at 1k rps in 1 s batches, healthy (0.1% errors, as the
/// baseline) for `healthy_s` seconds, then failing `rate`, watched for 30 min
/// more.
fn turning(r: &CompiledRollout, healthy_s: u64, rate: f64) -> Scenario<'_> {
    Scenario {
        rollout: r,
        rps: 1_000,
        batch_ms: 1_000,
        seconds: healthy_s + 1_800,
        share: &five_percent,
        baseline_errors: 0.001,
        canary_errors: rate,
        turns_at: healthy_s,
    }
}

/// Seconds from the turn to each verdict reached after it, and how many runs
/// were rolled back before it (false rollbacks).
fn delays(s: &Scenario<'_>, runs: u64, seed: u64) -> (Vec<f64>, usize) {
    let out = s.verdicts(runs, seed);
    let turn = s.turns_at as f64;
    let early = out.iter().filter(|o| o.seconds <= turn).count();
    let after = out
        .iter()
        .filter(|o| o.seconds > turn)
        .map(|o| o.seconds - turn)
        .collect();
    (after, early)
}

#[test]
fn a_canary_that_turns_bad_after_half_an_hour_is_caught_by_the_change_detector_as_fast_as_a_fresh_one(
) {
    let cp = rollout(CHANGEPOINT);
    let test = rollout(SEQUENTIAL);
    let runs = 200;
    let median = |r: &CompiledRollout, healthy_s: u64, seed: u64| {
        let (d, _) = delays(&turning(r, healthy_s, 0.01), runs, seed);
        assert!(
            d.len() as u64 >= runs * 9 / 10,
            "{} of {runs} caught",
            d.len()
        );
        quantile(d, 0.5)
    };
    let (cp_fresh, cp_late) = (median(&cp, 0, 51), median(&cp, 1_800, 52));
    let (test_fresh, test_late) = (median(&test, 0, 53), median(&test, 1_800, 54));
    // The detector's delay does not grow with the healthy time; the test's does.
    assert!(
        cp_late <= cp_fresh * 1.3 + 2.0,
        "changepoint: fresh {cp_fresh} s, after 30 min {cp_late} s"
    );
    assert!(
        test_late >= 2.0 * test_fresh,
        "test: fresh {test_fresh} s, after 30 min {test_late} s"
    );
    assert!(
        cp_late < test_late,
        "changepoint {cp_late} s, test {test_late} s"
    );
}

/// Canary requests from the turn to the verdict in the real-Envoy test of a
/// late change (`integration-tests/tests/analysis.rs`), at its p95: a ramp at
/// about 400 req/s over two workers (25 ms batches), 10% canary for 3 s, then
/// 50% with the canary failing every fourth request (25%) against a healthy
/// baseline, `method: changepoint` with a 600 s horizon. Measured 104 (median
/// 71; 1,000 seeded runs): at a 50% share each canary error can weigh at most
/// `ln 2`, and the threshold is `ln(600 / 0.01)`.
pub const LATE_CHANGE_P95_REQUESTS: u64 = 110;

#[test]
fn the_real_envoy_late_change_scenario_is_caught_within_its_stated_p95() {
    let r = rollout(r#"{"alpha":0.01,"method":"changepoint","horizonSeconds":600}"#);
    let share = |t: u64| Some(if t < 3 { 0.1 } else { 0.5 });
    let s = Scenario {
        rollout: &r,
        rps: 400,
        batch_ms: 25,
        seconds: 60,
        share: &share,
        baseline_errors: 0.0,
        canary_errors: 0.25,
        turns_at: 3,
    };
    let runs = 1_000;
    let out = s.verdicts(runs, 61);
    let after: Vec<f64> = out
        .iter()
        .filter(|o| o.seconds > 3.0)
        .map(|o| (o.canary_requests - o.before_turn) as f64)
        .collect();
    assert!(
        after.len() as u64 >= runs - tolerance(0.01, runs),
        "{} caught after the turn",
        after.len()
    );
    let p95 = quantile(after.clone(), 0.95);
    eprintln!(
        "late change: median {} / p95 {p95} canary requests",
        quantile(after, 0.5)
    );
    assert!(p95 <= LATE_CHANGE_P95_REQUESTS as f64, "p95 {p95}");
}

/// The book's table (more runs, tick-sized batches): run with `make sim`.
#[test]
#[ignore = "minutes of CPU; make sim runs it in release"]
fn simulation_report() {
    let runs = 1_000;
    let seq = rollout(SEQUENTIAL);
    let z = rollout(Z_EVERY_10S);
    let floor = rollout(
        r#"{"alpha":0.01,"sequential":false,"successRate":{"min":99.5,"intervalSeconds":30,"intervals":3}}"#,
    );
    println!(
        "| experiment (5% canary, 1k rps, 1 h, {runs} runs, 25 ms batches) | false rollbacks |"
    );
    println!("|---|---|");
    for (name, r) in [
        ("sequential test, alpha 0.01", &seq),
        ("z-test every 10 s (z 2.326)", &z),
        ("success rate >= 99.5% x 3 x 30 s", &floor),
    ] {
        for p in [0.001, 0.01] {
            let s = Scenario {
                batch_ms: 25,
                ..healthy(r, p, &five_percent)
            };
            let got = s.verdicts(runs, 31).len();
            println!(
                "| {name}, both failing {}% | {got} ({:.1}%) |",
                p * 100.0,
                got as f64 / runs as f64 * 100.0
            );
        }
    }
    let ramp = |t: u64| {
        Some(match t {
            0..1_200 => 0.05,
            1_200..2_400 => 0.25,
            _ => 0.5,
        })
    };
    let s = Scenario {
        batch_ms: 25,
        ..healthy(&seq, 0.01, &ramp)
    };
    let got = s.verdicts(runs, 32).len();
    println!(
        "| sequential, 1% both, share 5% -> 25% -> 50% every 20 min | {got} ({:.1}%) |",
        got as f64 / runs as f64 * 100.0
    );
    println!();
    println!("| failing canary (baseline 0.1%) | runs | canary requests to verdict: median / p95 | seconds: median / p95 |");
    println!("|---|---|---|---|");
    for p in [0.5, 0.05, 0.01] {
        let out = failing(&seq, p).verdicts(runs, 33);
        let req: Vec<f64> = out.iter().map(|o| o.canary_requests as f64).collect();
        let sec: Vec<f64> = out.iter().map(|o| o.seconds).collect();
        println!(
            "| {}% | {} caught of {runs} | {:.0} / {:.0} | {:.2} / {:.2} |",
            p * 100.0,
            out.len(),
            quantile(req.clone(), 0.5),
            quantile(req, 0.95),
            quantile(sec.clone(), 0.5),
            quantile(sec, 0.95)
        );
    }
    println!();
    println!("| canary turns bad after (5% canary, 1k rps, 1 s batches, baseline 0.1%) | failing | test: seconds to verdict after the turn, median / p95 | changepoint (horizon 1 h): median / p95 |");
    println!("|---|---|---|---|");
    let cp = rollout(CHANGEPOINT);
    for healthy_min in [0u64, 10, 30, 60] {
        for p in [0.5, 0.05, 0.01] {
            let cell = |r: &CompiledRollout, seed: u64| {
                let (d, early) = delays(&turning(r, healthy_min * 60, p), runs / 5, seed);
                format!(
                    "{:.0} / {:.0}{}",
                    quantile(d.clone(), 0.5),
                    quantile(d, 0.95),
                    if early > 0 {
                        format!(" ({early} rolled back before the turn)")
                    } else {
                        String::new()
                    }
                )
            };
            println!(
                "| {healthy_min} min | {}% | {} | {} |",
                p * 100.0,
                cell(&seq, 60 + healthy_min),
                cell(&cp, 70 + healthy_min)
            );
        }
    }
    println!();
    println!("| healthy canary, both failing (5% canary, 1k rps, 1 h, {runs} runs, 1 s batches) | changepoint false rollbacks (bound: alpha = 1% over the 1 h horizon) |");
    println!("|---|---|");
    for p in [0.001, 0.01] {
        let got = healthy(&cp, p, &five_percent).verdicts(runs, 81).len();
        println!(
            "| {}% | {got} ({:.1}%) |",
            p * 100.0,
            got as f64 / runs as f64 * 100.0
        );
    }
    println!();
    println!("| ramp 5% -> 25% -> 50% -> 100%, 5 min per step; the canary fails 1% from step 3 (baseline 0.1%) | runs | verdict at step 3: seconds after it began, median / p95 | rolled back before step 3 |");
    println!("|---|---|---|---|");
    for (name, analysis) in [("test", SEQUENTIAL), ("changepoint", CHANGEPOINT)] {
        let r = rollout_with(
            analysis,
            r#","ramp":{"steps":[500,2500,5000,10000],"holdSeconds":300,"minRequests":100}"#,
        );
        let s = Scenario {
            rollout: &r,
            rps: 1_000,
            batch_ms: 1_000,
            seconds: 1_800,
            share: &|_| None,
            baseline_errors: 0.001,
            canary_errors: 0.01,
            turns_at: 600,
        };
        let (d, early) = delays(&s, runs / 5, 91);
        println!(
            "| {name} | {} | {:.0} / {:.0} | {early} |",
            runs / 5,
            quantile(d.clone(), 0.5),
            quantile(d, 0.95)
        );
    }
}
