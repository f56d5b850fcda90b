//! What Envoy 1.40 does when the meshguard VM traps, under each `failure_policy`:
//! the evidence behind FAIL_RELOAD in the shipped configs. Uses the TEST-ONLY
//! build that traps on `x-meshguard-trap: 1` (`make build-trap`).

use std::time::{Duration, Instant};

use meshguard_integration_tests::bootstrap::Bootstrap;
use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::load::{client, send, Req, Resp};
use meshguard_integration_tests::trap_wasm_path;
use meshguard_integration_tests::upstream::{echoed_header, Upstream};

/// Route `web` tags the upstream request, and one bucket of 4 per hour.
const CONFIG: &str = r#"{"schemaVersion":1,"routeHeader":"x-meshguard-route","routes":[{"name":"web"}],
    "rateLimits":[{"name":"all","limit":{"burst":4,"rate":1,"per":"hour"}}]}"#;

struct Drill {
    _up: Upstream,
    envoy: Envoy,
    client: reqwest::Client,
}

impl Drill {
    fn start(policy: &str) -> Drill {
        Drill::start_with(policy, CONFIG)
    }

    fn start_with(policy: &str, config: &str) -> Drill {
        let up = Upstream::start("stable");
        let mut b = Bootstrap::new(config)
            .cluster("stable", up.addr)
            .wasm_file(trap_wasm_path());
        b.failure_policy = policy.to_string();
        Drill {
            envoy: Envoy::start(&b, 1),
            _up: up,
            client: client(1),
        }
    }

    async fn get(&self, trap: bool) -> Resp {
        let r = if trap {
            Req::get("/").header("x-meshguard-trap", "1")
        } else {
            Req::get("/")
        };
        send(&self.client, &self.envoy.url(""), &r).await
    }
}

/// The filter ran on this request: the upstream saw the route header.
fn filtered(r: &Resp) -> bool {
    serde_json::from_str::<serde_json::Value>(&r.body)
        .map(|echo| echoed_header(&echo, "x-meshguard-route") == vec![b"web".to_vec()])
        .unwrap_or(false)
}

async fn statuses_after_trap(d: &Drill, n: usize) -> Vec<(u16, bool)> {
    let mut out = Vec::new();
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = d.get(false).await;
        out.push((r.status, filtered(&r)));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_closed_answers_503_to_everything_after_a_trap() {
    let d = Drill::start("FAIL_CLOSED");
    assert!(filtered(&d.get(false).await));
    assert_eq!(d.get(true).await.status, 503);
    let after = statuses_after_trap(&d, 10).await;
    assert!(after.iter().all(|(s, _)| *s == 503), "{after:?}");
    assert!(d
        .envoy
        .log()
        .contains("Function: proxy_on_request_headers failed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_open_lets_traffic_through_without_meshguard_after_a_trap() {
    let d = Drill::start("FAIL_OPEN");
    assert!(filtered(&d.get(false).await));
    assert_eq!(
        d.get(true).await.status,
        503,
        "the trapping request itself fails"
    );
    let after = statuses_after_trap(&d, 10).await;
    // Every request passes, and none is seen by meshguard: no route header, and
    // the 4-per-hour limit no longer applies (10 > 4 pass).
    assert!(after.iter().all(|(s, f)| *s == 200 && !*f), "{after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_reload_recovers_with_policies_and_shared_state_intact() {
    let d = Drill::start("FAIL_RELOAD");
    assert!(filtered(&d.get(false).await)); // 1 of the 4 tokens used
    assert_eq!(d.get(true).await.status, 503); // trapped before charging
    let trapped_at = Instant::now();
    // Requests fail while Envoy backs off, then a fresh VM takes over.
    let mut outage = 0;
    let first_ok = loop {
        let r = d.get(false).await;
        if r.status == 200 {
            break r;
        }
        assert_eq!(r.status, 503);
        outage += 1;
        assert!(
            trapped_at.elapsed() < Duration::from_secs(10),
            "the VM did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(outage >= 1, "the reload is not instantaneous");
    assert!(
        filtered(&first_ok),
        "policies are enforced again after the reload"
    );
    // Shared data survived the VM reload: the bucket still remembers the token used
    // before the trap (the outage requests never reached the filter). Tokens: 1
    // before, then 3 more pass; a fresh bucket would have let a 4th through.
    let mut codes = vec![first_ok.status];
    for _ in 0..3 {
        codes.push(d.get(false).await.status);
    }
    assert_eq!(
        codes,
        vec![200, 200, 200, 429],
        "the bucket kept its state across the reload"
    );
    eprintln!(
        "FAIL_RELOAD outage: {outage} request(s), {:?}",
        trapped_at.elapsed()
    );
}

/// Route `web` limited to two requests in flight.
const SLOTS: &str =
    r#"{"schemaVersion":1,"routes":[{"name":"web","breaker":{"maxConcurrent":2}}]}"#;

fn concurrency_rejection(r: &Resp) -> bool {
    r.status == 503 && r.header("x-meshguard-breaker") == Some("concurrency")
}

#[tokio::test(flavor = "multi_thread")]
async fn slots_held_by_a_trapped_vm_are_reclaimed_by_the_next_one() {
    let d = Drill::start_with("FAIL_RELOAD", SLOTS);
    let url = d.envoy.url("/");
    let slow = || {
        let (c, u) = (d.client.clone(), url.clone());
        tokio::spawn(
            async move { send(&c, &u, &Req::get("/").header("x-test-delay-ms", "2000")).await },
        )
    };
    // Two slow requests take both slots, and the VM traps with them in flight:
    // their `on_log` never runs in it.
    let held = [slow(), slow()];
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(concurrency_rejection(&d.get(false).await), "2 of 2 taken");
    assert_eq!(d.get(true).await.status, 503);
    let trapped_at = Instant::now();
    for h in held {
        let _ = h.await;
    }
    // The next VM sees the dead one's two slots until their deadline passes, then
    // admits again. Without owners and deadlines they would count forever.
    let mut seen_taken = 0;
    let reclaimed = loop {
        let r = d.get(false).await;
        if r.status == 200 {
            break trapped_at.elapsed();
        }
        seen_taken += u32::from(concurrency_rejection(&r));
        assert!(
            trapped_at.elapsed() < Duration::from_secs(30),
            "the dead VM's slots were never reclaimed ({seen_taken} concurrency rejections)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        seen_taken > 0,
        "after the reload the dead VM's slots still counted for a while"
    );
    // Their deadline was 10 s after they were taken, half a second before the
    // trap; requests are 250 ms apart.
    assert!(
        (Duration::from_secs(8)..=Duration::from_secs(12)).contains(&reclaimed),
        "reclaimed {reclaimed:?} after the trap"
    );
    // The limit itself is intact: two in flight, the third refused.
    let held = [slow(), slow()];
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(concurrency_rejection(&d.get(false).await));
    for h in held {
        assert_eq!(h.await.map(|r| r.status).ok(), Some(200));
    }
    assert_eq!(d.get(false).await.status, 200);
    eprintln!("slots reclaimed {reclaimed:?} after the trap ({seen_taken} rejections meanwhile)");
}
