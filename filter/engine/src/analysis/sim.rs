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
    /// The canary's share at second `t`.
    share: &'a dyn Fn(u64) -> f64,
    baseline_errors: f64,
    canary_errors: f64,
}

/// When and after how many canary requests a verdict came (and what caused it).
#[derive(Debug, Clone, Copy)]
struct Outcome {
    seconds: f64,
    canary_requests: u64,
    cause: Cause,
}

impl Scenario<'_> {
    fn run(&self, seed: u64) -> Option<Outcome> {
        let rng = Rng::new(seed);
        let mut rec = Record::new(2);
        let per_batch = self.rps * self.batch_ms / 1_000;
        let batches = self.seconds * 1_000 / self.batch_ms;
        let t0 = 1_700_000_000_000_000_000u64;
        for i in 1..=batches {
            let now = t0 + i * self.batch_ms * 1_000_000;
            let w = (self.share)(i * self.batch_ms / 1_000);
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
                    errors: binomial(&rng, n_c, self.canary_errors),
                    slow: 0,
                },
            ];
            fold(&mut rec, self.rollout, &batch, now);
            if let Some(v) = rec.variants.first().and_then(|j| j.verdict) {
                return Some(Outcome {
                    seconds: (i * self.batch_ms) as f64 / 1_000.0,
                    canary_requests: rec.variants.first().map_or(0, |j| j.total.n),
                    cause: v.cause,
                });
            }
        }
        None
    }

    /// Verdicts over `runs` seeded runs.
    fn verdicts(&self, runs: u64, seed: u64) -> Vec<Outcome> {
        (0..runs)
            .filter_map(|r| self.run(seed ^ (r << 20)))
            .collect()
    }
}

pub(super) fn rollout(analysis: &str) -> CompiledRollout {
    let json = format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web","canary":{{
            "variants":[{{"name":"stable","weight":9500}},{{"name":"canary","weight":500}}],
            "revision":"sim","analysis":{analysis}}}}}]}}"#
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

fn five_percent(_: u64) -> f64 {
    0.05
}

pub(super) fn quantile(mut xs: Vec<f64>, q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let i = ((xs.len() as f64 - 1.0) * q).round() as usize;
    xs.get(i).copied().unwrap_or(f64::NAN)
}

const SEQUENTIAL: &str = r#"{"alpha":0.01}"#;
/// The classical practice at the same nominal level: one-sided z at α = 0.01
/// (2.326), re-run every 10 s on the counts so far, no sequential test.
const Z_EVERY_10S: &str =
    r#"{"alpha":0.01,"sequential":false,"zTest":{"z":2.326,"intervalSeconds":10}}"#;

fn healthy<'a>(r: &'a CompiledRollout, p: f64, share: &'a dyn Fn(u64) -> f64) -> Scenario<'a> {
    Scenario {
        rollout: r,
        rps: 1_000,
        batch_ms: 1_000,
        seconds: 3_600,
        share,
        baseline_errors: p,
        canary_errors: p,
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
    let ramp = |t: u64| match t {
        0..1_200 => 0.05,
        1_200..2_400 => 0.25,
        _ => 0.5,
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
    let ramp = |t: u64| match t {
        0..1_200 => 0.05,
        1_200..2_400 => 0.25,
        _ => 0.5,
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
}
