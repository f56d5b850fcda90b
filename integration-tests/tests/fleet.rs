//! The fleet judges as one, with real processes on 127.0.0.1: one Redis, two
//! replicas of `meshguard-rls` serving the fleet API, three Envoys at
//! `--concurrency 2` with the load spread over them. A failing canary is
//! stopped by every Envoy once the fleet's verdict is in; a healthy one ramps
//! to promoted with every Envoy at the same step; and the faults (a replica
//! killed, Redis killed and restarted, a service slower than the timeout, an
//! Envoy started mid-rollout) each end with every count folded exactly once.

use std::time::{Duration, Instant};

use meshguard_engine::Record;
use meshguard_integration_tests::bootstrap::Bootstrap;
use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::load::{send_all, Req};
use meshguard_integration_tests::rls::{Redis, RlsServer};
use meshguard_integration_tests::upstream::Upstream;

const FIVE_PERCENT: &str = r#"[{"name":"stable","weight":9500},{"name":"canary","weight":500}]"#;
const HALF: &str = r#"[{"name":"stable","weight":5000},{"name":"canary","weight":5000}]"#;
/// The sync interval the tests configure, ms.
const SYNC_MS: u64 = 250;

/// Route `web` with a canary policy (`variants`, then `rollout` fields), the
/// fleet service `fleet` fields after its cluster.
fn config(variants: &str, rollout: &str, service: &str) -> String {
    format!(
        r#"{{"schemaVersion":1,
            "fleetService":{{"cluster":"fleet","syncMs":{SYNC_MS},"timeoutMs":200{service}}},
            "routes":[{{"name":"web","match":{{"pathPrefix":"/"}},"canary":{{
                "variants":{variants},"respondWithVariant":true,"revision":"r1",{rollout}}}}}]}}"#
    )
}

/// The same rollout judged by each Envoy alone.
fn alone(variants: &str, rollout: &str) -> String {
    format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web","match":{{"pathPrefix":"/"}},"canary":{{
            "variants":{variants},"respondWithVariant":true,"revision":"r1",{rollout}}}}}]}}"#
    )
}

struct Rig {
    redis: Redis,
    replicas: Vec<RlsServer>,
    stable: Upstream,
    canary: Upstream,
    envoys: Vec<Envoy>,
    plugin: String,
}

impl Rig {
    /// Redis, two replicas, the upstreams (the canary failing every
    /// `fail_every`-th request, 0: never) and `n` Envoys with `plugin`.
    fn start(plugin: &str, fail_every: u64, n: usize, persistent: bool) -> Rig {
        let redis = if persistent {
            Redis::start_persistent()
        } else {
            Redis::start()
        };
        let replicas: Vec<RlsServer> = (0..2)
            .map(|_| RlsServer::start("domain: none\nlimits: []\n", Some(&redis.url()), 0))
            .collect();
        let stable = Upstream::start("stable");
        let canary = if fail_every == 0 {
            Upstream::start("canary")
        } else {
            Upstream::start_failing("canary", fail_every)
        };
        let mut rig = Rig {
            redis,
            replicas,
            stable,
            canary,
            envoys: Vec::new(),
            plugin: plugin.to_string(),
        };
        for i in 0..n {
            let e = rig.envoy(i);
            rig.envoys.push(e);
        }
        rig
    }

    fn envoy(&self, i: usize) -> Envoy {
        let addrs: Vec<_> = self.replicas.iter().map(|r| r.addr).collect();
        Envoy::start(
            &Bootstrap::new(&self.plugin)
                .cluster("stable", self.stable.addr)
                .cluster("canary", self.canary.addr)
                .canary_routes("x-meshguard-cluster", "stable")
                .grpc_cluster_of("fleet", &addrs)
                .node(&format!("envoy-{i}"))
                .balanced(),
            2,
        )
    }

    /// The fleet's record of the rollout, as the service keeps it in Redis.
    fn record(&self) -> Record {
        let client = redis::Client::open(self.redis.url()).expect("redis url");
        let mut conn = client.get_connection().expect("redis connection");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("mgf:web/r1/*")
            .query(&mut conn)
            .expect("KEYS");
        assert_eq!(keys.len(), 1, "{keys:?}");
        let bytes: Vec<u8> = redis::cmd("HGET")
            .arg(&keys[0])
            .arg("rec")
            .query(&mut conn)
            .expect("HGET rec");
        Record::decode(&bytes, 2).expect("a record of two variants")
    }

    fn upstream_requests(&self) -> u64 {
        self.stable.requests() + self.canary.requests()
    }

    fn replicas_log(&self) -> String {
        self.replicas.iter().map(RlsServer::log).collect()
    }
}

/// `n` requests to each Envoy at once (4 connections each), then a pause.
async fn round(envoys: &[Envoy], n: usize) {
    let mut tasks = Vec::new();
    for e in envoys {
        let base = e.url("");
        tasks.push(tokio::spawn(async move {
            send_all(&base, vec![Req::get("/"); n], 4).await
        }));
    }
    for t in tasks {
        for r in t.await.expect("load task") {
            assert!(r.status == 200 || r.status == 503, "{r:?}");
        }
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
}

fn gauge(e: &Envoy, name: &str) -> u64 {
    e.stat_now(&format!("wasmcustom.meshguard.{name}"))
        .unwrap_or(0)
}

fn rolled_back(e: &Envoy) -> bool {
    gauge(e, "canary_state.route.web.variant.canary.state.rolled_back") == 1
}

fn fleet_mode(e: &Envoy, mode: &str) -> bool {
    gauge(e, &format!("fleet_state.route.web.state.{mode}")) == 1
}

/// Rounds until `done` holds for some Envoy (at most `limit`); how many.
async fn until_any(
    envoys: &[Envoy],
    n: usize,
    limit: usize,
    done: impl Fn(&Envoy) -> bool,
) -> usize {
    for i in 0..limit {
        if envoys.iter().any(&done) {
            return i;
        }
        round(envoys, n).await;
    }
    limit
}

/// One sync interval, a tick and some slack for a loaded machine: every Envoy
/// has synced and every worker has read what its sync brought.
async fn one_sync() {
    tokio::time::sleep(Duration::from_millis(SYNC_MS + 50 + 250)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fleet_stops_a_failing_canary_everywhere_after_fewer_canary_requests_than_envoys_alone()
{
    let rollout = r#""analysis":{},"fleet":{}"#;
    let rig = Rig::start(&config(FIVE_PERCENT, rollout, ""), 2, 3, false);
    let rounds = until_any(&rig.envoys, 10, 400, rolled_back).await;
    assert!(rounds < 400, "no verdict:\n{}", rig.replicas_log());
    // No more load: within a sync interval and a tick every Envoy routes by
    // the verdict, so a burst afterwards reaches the canary not once.
    one_sync().await;
    let at_verdict = rig.canary.requests();
    round(&rig.envoys, 100).await;
    assert_eq!(
        rig.canary.requests(),
        at_verdict,
        "no Envoy sends to the canary any more"
    );
    for e in &rig.envoys {
        assert!(rolled_back(e), "{}", e.log());
        assert_eq!(gauge(e, "canary_weight.route.web.variant.canary"), 0);
        assert!(fleet_mode(e, "fleet"));
        assert!(gauge(e, "fleet_syncs_total.outcome.ok") > 0);
    }
    let log = rig.replicas_log();
    let line = log
        .lines()
        .find(|l| l.contains("-> rolled_back"))
        .unwrap_or_else(|| panic!("no transition logged:\n{log}"));
    // The Wasm build names an Envoy by its node id; the native build, whose ABI
    // gives no node id, by its host name and process id.
    let named = if meshguard_integration_tests::native() {
        "'s counts"
    } else {
        "decided by envoy-"
    };
    assert!(line.contains(named) && !line.contains("unnamed"), "{line}");

    // An Envoy started now reads the fleet's state before its first request.
    let late = rig.envoy(9);
    let canary_before = rig.canary.requests();
    let statuses = send_all(&late.url(""), vec![Req::get("/"); 40], 1).await;
    assert!(statuses.iter().all(|r| r.status == 200));
    assert_eq!(
        rig.canary.requests(),
        canary_before,
        "the late Envoy never sent to the canary"
    );

    // The same traffic, each Envoy judging alone: the later Envoys keep
    // sending to the canary until each has its own `minRequests` (20).
    let fleet_canary = at_verdict;
    let solo = Rig::start(&alone(FIVE_PERCENT, r#""analysis":{}"#), 2, 3, false);
    let rounds = {
        let mut i = 0;
        while i < 1200 && !solo.envoys.iter().all(rolled_back) {
            round(&solo.envoys, 10).await;
            i += 1;
        }
        i
    };
    assert!(rounds < 1200, "not every Envoy reached its verdict alone");
    let solo_canary = solo.canary.requests();
    eprintln!("canary requests: fleet {fleet_canary}, each Envoy alone {solo_canary}");
    assert!(
        solo_canary >= 60 && fleet_canary < solo_canary,
        "fleet {fleet_canary} vs alone {solo_canary}"
    );
}

/// The time of an Envoy log line, ms of the day.
fn log_ms(line: &str) -> Option<u64> {
    // "[2026-12-07 19:11:41.123][...]"
    let t = line.get(12..24)?;
    let (hms, ms) = t.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(((h * 60 + m) * 60 + s) * 1000 + ms.parse::<u64>().ok()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_canary_ramps_to_promoted_with_every_envoy_at_the_same_step() {
    let rollout = r#""analysis":{},"ramp":{"steps":[1000,5000,10000],"holdSeconds":2,"minRequests":5},"fleet":{}"#;
    let mut rig = Rig::start(
        &config(r#"[{"name":"stable"},{"name":"canary"}]"#, rollout, ""),
        0,
        3,
        false,
    );
    let promoted =
        |e: &Envoy| gauge(e, "canary_state.route.web.variant.canary.state.promoted") == 1;
    let start = Instant::now();
    let mut killed = false;
    while start.elapsed() < Duration::from_secs(40) && !rig.envoys.iter().all(promoted) {
        round(&rig.envoys, 5).await;
        // One replica dies at the second step: the other serves every sync.
        if !killed
            && rig
                .envoys
                .iter()
                .any(|e| gauge(e, "canary_weight.route.web.variant.canary") == 5000)
        {
            rig.replicas[0].kill();
            killed = true;
        }
    }
    assert!(killed, "the ramp never reached its second step");
    for e in &rig.envoys {
        assert!(promoted(e), "not promoted:\n{}", e.log());
    }
    // Each Envoy took each step once, from the fleet's clock: the spread of
    // the moments the three Envoys took a step is within a sync interval
    // (and a tick and scheduling slack on a loaded machine).
    let mut spreads = Vec::new();
    for (step, marker) in [
        (2, "ramp to step 2 at 5000 bp"),
        (3, "ramp to step 3 at 10000 bp"),
    ] {
        let times: Vec<u64> = rig
            .envoys
            .iter()
            .map(|e| {
                let log = e.log();
                let lines: Vec<&str> = log.lines().filter(|l| l.contains(marker)).collect();
                assert_eq!(lines.len(), 1, "step {step} logged once:\n{log}");
                log_ms(lines[0]).expect("a timestamp")
            })
            .collect();
        let spread = times.iter().max().unwrap_or(&0) - times.iter().min().unwrap_or(&0);
        spreads.push(spread);
    }
    eprintln!("spread of the step changes across Envoys (ms): {spreads:?}");
    for s in &spreads {
        assert!(*s <= 2 * SYNC_MS + 100, "{spreads:?}");
    }
    for e in &rig.envoys {
        assert!(fleet_mode(e, "fleet"), "the replica's death went unnoticed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_holds_then_resumes_with_every_count_folded_once() {
    let rollout = r#""analysis":{"minRequests":1000000},"fleet":{}"#;
    let mut rig = Rig::start(
        &config(HALF, rollout, r#","unreachableAfterMs":1000"#),
        0,
        3,
        true,
    );
    for _ in 0..10 {
        round(&rig.envoys, 10).await;
    }
    rig.redis.kill();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        round(&rig.envoys, 10).await;
    }
    for e in &rig.envoys {
        let (_, stats) = e.admin_get("/stats?filter=fleet").unwrap();
        assert!(
            fleet_mode(e, "hold"),
            "routing by the last fleet state: {stats}\n{}",
            rig.replicas_log()
        );
        assert!(gauge(e, "fleet_syncs_total.outcome.error") > 0);
    }
    rig.redis.restart();
    for _ in 0..10 {
        round(&rig.envoys, 10).await;
    }
    one_sync().await;
    one_sync().await;
    for e in &rig.envoys {
        let (_, stats) = e.admin_get("/stats?filter=fleet").unwrap();
        assert!(
            fleet_mode(e, "fleet"),
            "back to the fleet: {stats}\n{}",
            rig.replicas_log()
        );
    }
    let rec = rig.record();
    assert_eq!(
        rec.baseline.n + rec.variants[0].total.n,
        rig.upstream_requests(),
        "every request of the outage folded once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_slower_than_the_timeout_has_its_syncs_retried_and_nothing_counted_twice() {
    let rollout = r#""analysis":{"minRequests":1000000},"fleet":{}"#;
    let mut rig = Rig::start(&config(HALF, rollout, ""), 0, 3, false);
    for _ in 0..5 {
        round(&rig.envoys, 10).await;
    }
    // Every answer now comes 600 ms after the service folded its batches, past
    // the Envoys' 200 ms timeout: each batch is sent again until acknowledged.
    for r in rig.replicas.iter_mut() {
        r.restart_with_delay(600);
    }
    for _ in 0..20 {
        round(&rig.envoys, 10).await;
    }
    for r in rig.replicas.iter_mut() {
        r.restart_with_delay(0);
    }
    for _ in 0..5 {
        round(&rig.envoys, 10).await;
    }
    one_sync().await;
    one_sync().await;
    let errors: u64 = rig
        .envoys
        .iter()
        .map(|e| gauge(e, "fleet_syncs_total.outcome.error"))
        .sum();
    assert!(errors > 0, "the slow service timed out some syncs");
    let rec = rig.record();
    assert_eq!(
        rec.baseline.n + rec.variants[0].total.n,
        rig.upstream_requests(),
        "retried batches folded once"
    );
}

#[test]
fn envoy_refuses_bad_fleet_configs_with_their_paths() {
    let bad = format!(
        r#"{{"schemaVersion":1,"fleetService":{{"cluster":"fleet","syncMs":5}},
            "routes":[{{"name":"web","canary":{{"variants":{FIVE_PERCENT},"revision":"r1",
                "analysis":{{}},"fleet":{{"whileUnreachable":"panic"}}}}}},
              {{"name":"api","canary":{{"variants":{FIVE_PERCENT},"fleet":{{}}}}}}]}}"#
    );
    let b = Bootstrap::new(&bad).cluster("stable", "127.0.0.1:9".parse().unwrap());
    let (status, log) = Envoy::run_expecting_exit(&b, Duration::from_secs(60));
    assert!(!status.success());
    for line in [
        "fleetService.syncMs: must be 50 to 10000, got 5",
        "routes[0].canary.fleet.whileUnreachable: must be hold or local, got \"panic\"",
        "routes[1].canary.fleet: needs a rollout to judge: add analysis or ramp",
    ] {
        assert!(
            log.contains(&format!("meshguard: invalid configuration: {line}")),
            "missing {line:?}:\n{log}"
        );
    }
    let missing = format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web","canary":{{"variants":{FIVE_PERCENT},
            "revision":"r1","analysis":{{}},"fleet":{{}}}}}}]}}"#
    );
    let b = Bootstrap::new(&missing).cluster("stable", "127.0.0.1:9".parse().unwrap());
    let (status, log) = Envoy::run_expecting_exit(&b, Duration::from_secs(60));
    assert!(!status.success());
    assert!(
        log.contains("routes[0].canary.fleet: needs fleetService"),
        "{log}"
    );
}
