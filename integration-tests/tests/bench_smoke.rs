//! `make bench` cannot rot: its harness runs in smoke mode (a few hundred requests
//! per scenario) and every scenario must produce numbers. No speed is asserted
//! here; speed goals live in `make bench`.

use std::process::Command;

use meshguard_integration_tests::repo_root;

/// Runs `bench/bench.py --smoke ARGS`: its results document and its output.
fn bench(args: &[&str]) -> (serde_json::Value, String) {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("python3")
        .args(["bench/bench.py", "--smoke"])
        .args(args)
        .arg("--out")
        .arg(out.path())
        .current_dir(repo_root())
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "bench failed:\n{text}");
    let json = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a results JSON file");
    let doc = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (doc, text)
}

/// The result row of scenario `s` (`text`, the run's output, if it is missing).
fn row<'a>(results: &'a [serde_json::Value], s: &str, text: &str) -> &'a serde_json::Value {
    results
        .iter()
        .find(|r| r["scenario"] == s)
        .unwrap_or_else(|| panic!("{s} missing:\n{text}"))
}

#[test]
fn the_bench_harness_runs_every_scenario_and_produces_numbers() {
    let (doc, text) = bench(&[]);
    let results = doc["results"].as_array().unwrap();
    let scenarios = [
        "router",
        "passthrough",
        "metrics",
        "canary",
        "analysis",
        "ratelimit",
        "breaker",
        "global",
        "global-lease",
        "all",
        "native",
        "router-h2",
        "all-h2",
        "all-explain",
        "all-ask",
        "passthrough-native",
        "metrics-native",
        "canary-native",
        "analysis-native",
        "ratelimit-native",
        "breaker-native",
        "global-native",
        "global-lease-native",
        "all-native",
    ];
    assert_eq!(results.len(), scenarios.len() * 2, "{text}");
    for conc in [1, 2] {
        for s in scenarios {
            let r = results
                .iter()
                .find(|r| r["scenario"] == s && r["concurrency"] == conc)
                .unwrap_or_else(|| panic!("{s} at concurrency {conc} missing"));
            for k in [
                "requests", "rps", "cpu_us", "p50_ms", "p99_ms", "p999_ms", "rss_mb", "ready_ms",
            ] {
                let v = r[k].as_f64().unwrap_or(f64::NAN);
                assert!(v.is_finite() && v > 0.0, "{s}/{conc}: {k} = {v}");
            }
        }
    }
    // Both builds really call the rate limit service, about once per request
    // without leases (loose: a smoke run is a few hundred requests, and calls of
    // requests still in flight when the load stops count too).
    for s in ["global", "global-native"] {
        for r in results.iter().filter(|r| r["scenario"] == s) {
            let calls = r["rls_calls_per_req"].as_f64().unwrap_or(0.0);
            assert!(
                (0.5..1.5).contains(&calls),
                "{s}: {calls} calls per request"
            );
        }
    }
    assert!(doc["meta"]["wasm_bytes"].as_u64().unwrap() > 0);
    assert!(
        text.contains("| scenario | conc | CPU µs/req"),
        "the table is printed"
    );
}

/// `--interleave` (the paired design for noisy machines) gives every scenario a
/// paired cost against its own baseline: the baseline's is zero by definition, the
/// scenario's is a finite number inside its own interval. No speed is asserted.
#[test]
fn the_interleaved_bench_pairs_each_scenario_with_its_baseline() {
    let (doc, text) = bench(&[
        "--interleave",
        "--only",
        "router,native",
        "--conc",
        "1",
        "--repeat",
        "3",
    ]);
    assert_eq!(doc["meta"]["interleave"], true, "{text}");
    let results = doc["results"].as_array().unwrap();
    let row = |s: &str| row(results, s, &text);
    let router = row("router");
    assert_eq!(router["paired_us"].as_f64(), Some(0.0));
    // Three rounds, each native phase bracketed by two router phases (one shared
    // between neighbours at most): at least four router samples, three native ones.
    assert!(router["samples"].as_array().unwrap().len() >= 4, "{text}");
    let native = row("native");
    assert_eq!(native["samples"].as_array().unwrap().len(), 3, "{text}");
    let cost = native["paired_us"].as_f64().unwrap_or(f64::NAN);
    let ci = native["paired_us_ci95"].as_array().unwrap();
    let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
    assert!(
        cost.is_finite() && lo <= cost && cost <= hi,
        "{cost} in [{lo}, {hi}]"
    );
    let ratio = native["paired_rps_ratio"].as_f64().unwrap_or(f64::NAN);
    assert!(ratio.is_finite() && ratio > 0.0, "{ratio}");
    assert!(
        text.contains("95% interval"),
        "the table shows the interval:\n{text}"
    );
}

/// `--repeat N` in the plain mode pairs each round's scenario with the same
/// round's baseline: the cost is the median of those differences, read back here
/// from the samples the results keep. No speed is asserted.
#[test]
fn repeated_rounds_pair_each_scenario_with_the_same_rounds_baseline() {
    let (doc, text) = bench(&[
        "--only",
        "router,passthrough-native",
        "--conc",
        "1",
        "--repeat",
        "3",
    ]);
    let results = doc["results"].as_array().unwrap();
    let row = |s: &str| row(results, s, &text);
    let cpu = |r: &serde_json::Value| -> Vec<f64> {
        r["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["cpu_us"].as_f64().unwrap())
            .collect()
    };
    let router = row("router");
    assert_eq!(router["paired_us"].as_f64(), Some(0.0), "{text}");
    let floor = row("passthrough-native");
    let (mine, theirs) = (cpu(floor), cpu(router));
    assert_eq!((mine.len(), theirs.len()), (3, 3), "{text}");
    let mut diffs: Vec<f64> = mine.iter().zip(&theirs).map(|(m, t)| m - t).collect();
    diffs.sort_by(f64::total_cmp);
    let cost = floor["paired_us"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (cost - diffs[1]).abs() < 1e-9,
        "{cost} is not the median of {diffs:?}"
    );
    let ci = floor["paired_us_ci95"].as_array().unwrap();
    let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
    assert!(lo <= cost && cost <= hi, "{cost} in [{lo}, {hi}]");
    assert!(
        text.contains("95% interval"),
        "the table shows the interval:\n{text}"
    );
}

/// `--instructions` counts what Envoy executes per request under callgrind: two
/// runs of one scenario agree closely (the mode exists because CPU time on a
/// shared machine does not), and meshguard's work shows over the no-op module.
#[test]
fn instruction_counts_repeat_and_show_meshguards_work() {
    let (doc, text) = bench(&[
        "--instructions",
        "--only",
        "passthrough-native,passthrough-native,metrics-native",
    ]);
    let results = doc["results"].as_array().unwrap();
    let count = |r: &serde_json::Value| r["instructions_per_req"].as_f64().unwrap_or(f64::NAN);
    let floors: Vec<f64> = results
        .iter()
        .filter(|r| r["scenario"] == "passthrough-native")
        .map(count)
        .collect();
    assert_eq!(floors.len(), 2, "{text}");
    let (a, b) = (floors[0], floors[1]);
    assert!(
        a > 10_000.0,
        "Envoy executes more than that per request:\n{text}"
    );
    assert!(
        (a - b).abs() / a < 0.02,
        "two runs differ by more than 2%: {a} vs {b}\n{text}"
    );
    let metrics = count(row(results, "metrics-native", &text));
    assert!(
        metrics > a.max(b) * 1.03,
        "metrics {metrics} vs floor {a}, {b}\n{text}"
    );
    assert!(
        text.contains("| instructions/request |"),
        "the table:\n{text}"
    );
}

#[test]
fn the_fleet_bench_folds_every_simulated_envoys_batch_and_reports_the_cost() {
    let (doc, text) = bench(&["--fleet", "20,60", "--fleet-replicas", "1"]);
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{text}");
    for r in results {
        let calls = r["calls"].as_u64().unwrap();
        // 2 s of syncs every 250 ms per Envoy (the last interval may be cut).
        let envoys = r["envoys"].as_u64().unwrap();
        assert!(calls >= envoys * 6, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(
            r["folded"].as_u64(),
            Some(calls),
            "every batch folded once: {r}"
        );
        assert!(r["p99_ms"].as_f64().unwrap() > 0.0);
        assert!(r["redis_cpu_pct"].as_f64().is_some());
    }
    assert!(text.contains("| simulated Envoys"), "{text}");
}
