//! RED metrics as Prometheus sees them: a real Envoy scraped by a real Prometheus.

use std::collections::BTreeSet;

use meshguard_integration_tests::bootstrap::Bootstrap;
use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::load::{send_all, Req};
use meshguard_integration_tests::prometheus::Prometheus;
use meshguard_integration_tests::upstream::Upstream;

/// Route `check-out_v2` with variants `stable` and `can-ary_1` (dashes and
/// underscores must survive tag extraction), beta testers to the canary.
const CONFIG: &str = r#"{"schemaVersion":1,"routes":[
  {"name":"check-out_v2","match":{"pathPrefix":"/checkout"},"canary":{
    "variants":[{"name":"stable","weight":10000},{"name":"can-ary_1","cluster":"canary","weight":0}],
    "rules":[{"variant":"can-ary_1","header":{"name":"x-user-type","exact":"beta-tester"}}]}},
  {"name":"api","match":{"pathPrefix":"/api"}}]}"#;

fn rig() -> (Upstream, Upstream, Envoy) {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let b = Bootstrap::new(CONFIG)
        .cluster("stable", stable.addr)
        .cluster("canary", canary.addr)
        .canary_routes("x-meshguard-cluster", "stable");
    let envoy = Envoy::start(&b, 2);
    (stable, canary, envoy)
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_sees_exact_counts_per_label_set_and_the_latency_bucket() {
    let (_s, _c, envoy) = rig();
    let delay = |r: Req| r.header("x-test-delay-ms", "35");
    let mut reqs = Vec::new();
    reqs.extend((0..300).map(|_| delay(Req::get("/checkout"))));
    reqs.extend((0..30).map(|_| delay(Req::get("/checkout").header("x-test-status", "503"))));
    reqs.extend((0..50).map(|_| delay(Req::get("/checkout").header("x-user-type", "beta-tester"))));
    let answers = send_all(&envoy.url(""), reqs, 16).await;
    assert_eq!(answers.iter().filter(|r| r.status == 503).count(), 30);

    let prom = Prometheus::start(&envoy.admin.to_string());
    let q = |v: &str, c: &str| {
        format!(
            r#"meshguard_requests_total{{route="check-out_v2",variant="{v}",code_class="{c}"}}"#
        )
    };
    assert_eq!(prom.wait_for(&q("stable", "2xx"), 300.0).await, 300.0);
    assert_eq!(prom.wait_for(&q("stable", "5xx"), 30.0).await, 30.0);
    assert_eq!(prom.wait_for(&q("can-ary_1", "2xx"), 50.0).await, 50.0);
    assert_eq!(prom.wait_for(&q("can-ary_1", "5xx"), 0.0).await, 0.0);
    // Every request was counted once, and nothing is left in flight.
    assert_eq!(
        prom.wait_for(
            r#"sum(meshguard_requests_total{route="check-out_v2"})"#,
            380.0
        )
        .await,
        380.0
    );
    assert_eq!(
        prom.wait_for(r#"meshguard_requests_in_flight{route="check-out_v2"}"#, 0.0)
            .await,
        0.0
    );
    // Durations: every request took 35 ms upstream plus a little, so the median
    // lies in the (30, 40] bucket.
    let count = r#"sum(meshguard_request_duration_milliseconds_count{route="check-out_v2"})"#;
    assert_eq!(prom.wait_for(count, 380.0).await, 380.0);
    let median = prom
        .query(r#"histogram_quantile(0.5, sum by (le) (meshguard_request_duration_milliseconds_bucket{route="check-out_v2"}))"#)
        .await;
    let m = median.first().map(|(_, v)| *v).unwrap_or(f64::NAN);
    assert!(m > 30.0 && m <= 40.0, "median {m} ms not in (30, 40]");
    // The configured buckets are the ones Prometheus sees.
    let les: BTreeSet<String> = prom
        .query(r#"meshguard_request_duration_milliseconds_bucket{route="check-out_v2",variant="stable"}"#)
        .await
        .iter()
        .filter_map(|(m, _)| m["le"].as_str().map(str::to_string))
        .collect();
    for le in [
        "5", "10", "20", "30", "40", "50", "75", "100", "250", "500", "1000", "2500", "5000",
        "10000", "+Inf",
    ] {
        assert!(les.contains(le), "bucket le={le} missing: {les:?}");
    }
}

fn meshguard_series(envoy: &Envoy) -> BTreeSet<String> {
    let body = envoy.scrape();
    body.lines()
        .filter(|l| l.starts_with("meshguard_"))
        // The native build's histogram series appear with their first value
        // (Envoy offers no way to create one empty); the rest exist from the start.
        .filter(|l| {
            !(meshguard_integration_tests::native() && l.starts_with("meshguard_request_duration_"))
        })
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn random_paths_and_hosts_do_not_add_series() {
    let (_s, _c, envoy) = rig();
    let before = meshguard_series(&envoy);
    assert!(
        before.iter().any(|s| s.contains(r#"route="other""#)),
        "unmatched requests have their series"
    );
    let reqs: Vec<Req> = (0..10_000u32)
        .map(|i| {
            let path = match i % 3 {
                0 => format!("/checkout/{i:x}?q={i}"),
                1 => format!("/api/{i}/{}", i * 7),
                _ => format!("/random-{i}/x"),
            };
            Req::get(&path).header("host", format!("h{i}.example.{}", i % 97))
        })
        .collect();
    let answers = send_all(&envoy.url(""), reqs, 16).await;
    assert_eq!(answers.len(), 10_000);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // a stats flush
    let after = meshguard_series(&envoy);
    assert_eq!(before, after, "the set of meshguard series changed");
    // 3 routes (2 + other): requests_total = (3 variant labels + 1 + 1) x 6 classes.
    let totals = after
        .iter()
        .filter(|s| s.starts_with("meshguard_requests_total{"))
        .count();
    assert_eq!(totals, (3 + 1 + 1) * 6);
}
