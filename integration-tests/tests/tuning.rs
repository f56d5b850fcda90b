//! What the cost cuts change, in a real Envoy: counters handed over on the tick
//! (also after a worker stopped ticking), every header read in one call deciding
//! as single reads do, and the client address taken from a header that an earlier
//! native filter sets from the connection.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use meshguard_integration_tests::bootstrap::Bootstrap;
use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::load::{client_from, send, send_all, Req};
use meshguard_integration_tests::upstream::Upstream;
use serde_json::json;

/// Polls `name` until it equals `want` or 3 s pass; returns the last value.
fn eventually(envoy: &Envoy, name: &str, want: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let got = envoy.stat_now(name).unwrap_or(0);
        if got == want || Instant::now() > until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const OK: &str = "wasmcustom.meshguard.requests_total.route.web.variant.none.code_class.2xx";

#[tokio::test(flavor = "multi_thread")]
async fn batched_counters_reach_envoy_exactly_also_after_the_tick_stopped() {
    for counters in ["batched", "immediate"] {
        let up = Upstream::start("web");
        let cfg = format!(
            r#"{{"schemaVersion":1,"metrics":{{"counters":"{counters}"}},"routes":[{{"name":"web"}}]}}"#
        );
        let envoy = Envoy::start(&Bootstrap::new(&cfg).cluster("web", up.addr), 2);
        let answers = send_all(&envoy.url(""), vec![Req::get("/"); 200], 8).await;
        assert!(answers.iter().all(|r| r.status == 200));
        assert_eq!(eventually(&envoy, OK, 200), 200, "{counters}");
        // A second and a half without traffic: a batched worker's tick stops. The
        // next requests start it again from the stream, or their counts would never
        // reach Envoy.
        std::thread::sleep(Duration::from_millis(1_500));
        let answers = send_all(&envoy.url(""), vec![Req::get("/"); 50], 4).await;
        assert!(answers.iter().all(|r| r.status == 200));
        assert_eq!(eventually(&envoy, OK, 250), 250, "{counters}");
        assert_eq!(
            eventually(
                &envoy,
                "wasmcustom.meshguard.requests_in_flight.route.web",
                0
            ),
            0
        );
        assert!(
            envoy.wasm_failures().is_empty(),
            "{:?}",
            envoy.wasm_failures()
        );
    }
}

/// A canary with three headers to read (route path, a rule, a sticky key, a
/// cookie rule) decides the same with `requestHeaders: all` as with `each`.
#[tokio::test(flavor = "multi_thread")]
async fn all_headers_in_one_call_decide_as_single_reads_do() {
    let mut seen = Vec::new();
    for mode in ["each", "all"] {
        let stable = Upstream::start("stable");
        let canary = Upstream::start("canary");
        let cfg = format!(
            r#"{{"schemaVersion":1,"requestHeaders":"{mode}","routes":[
              {{"name":"api","match":{{"pathPrefix":"/api"}}}},
              {{"name":"web","match":{{"pathPrefix":"/"}},"canary":{{
                "variants":[{{"name":"stable","weight":5000}},{{"name":"canary","weight":5000}}],
                "rules":[{{"variant":"canary","header":{{"name":"x-beta","exact":"1"}}}},
                         {{"variant":"stable","cookie":{{"name":"pin","exact":"stable"}}}}],
                "sticky":{{"header":"x-user-id"}}}}}}]}}"#
        );
        let b = Bootstrap::new(&cfg)
            .cluster("stable", stable.addr)
            .cluster("canary", canary.addr)
            .canary_routes("x-meshguard-cluster", "stable");
        let envoy = Envoy::start(&b, 1);
        let browser = |r: Req| {
            r.header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0")
                .header("accept", "text/html,application/xhtml+xml")
                .header("accept-language", "en-US,en;q=0.9")
                .header("cookie", "session=abc; theme=dark")
        };
        let mut reqs: Vec<Req> = (0..60)
            .map(|i| browser(Req::get("/").header("x-user-id", format!("user-{i}"))))
            .collect();
        reqs.push(browser(Req::get("/").header("x-beta", "1")));
        reqs.push(
            Req::get("/")
                .header("cookie", "a=1; pin=stable")
                .header("x-beta", "1"),
        );
        reqs.push(Req::get("/api/x").header("x-beta", "1"));
        let answers = send_all(&envoy.url(""), reqs, 1).await;
        let got: Vec<String> = answers
            .iter()
            .map(|r| r.header("x-upstream").unwrap_or("?").to_string())
            .collect();
        // The rule wins over the split, the cookie rule is checked after the
        // header rule, and /api has no canary.
        assert_eq!(got[60..], ["canary", "canary", "stable"], "{mode}");
        let canaries = got[..60].iter().filter(|u| *u == "canary").count();
        // 60 sticky users at 50%: fails with probability below 1e-6 either side.
        assert!((10..=50).contains(&canaries), "{mode}: {canaries}/60");
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "each and all decided differently");
}

/// `clientAddress.header`: a header_mutation filter in front of meshguard sets
/// `x-client-ip` from the connection, overwriting what the client sent, so a
/// per-client limit holds per real client whatever the header says.
#[tokio::test(flavor = "multi_thread")]
async fn the_client_address_from_a_header_envoy_sets_cannot_be_spoofed() {
    let up = Upstream::start("api");
    let cfg = r#"{"schemaVersion":1,"clientAddress":{"header":"x-client-ip"},
        "routes":[{"name":"api"}],
        "rateLimits":[{"name":"per-client","key":[{"clientAddress":{}}],
          "limit":{"burst":3,"rate":1,"per":"hour"}}]}"#;
    let set_address = json!({
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"append": {
                "header": {"key": "x-client-ip", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}]}
        }
    });
    let b = Bootstrap::new(cfg)
        .cluster("api", up.addr)
        .filter_before(set_address);
    let envoy = Envoy::start(&b, 2);
    let base = envoy.url("");
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let client = client_from(ip.parse::<IpAddr>().unwrap());
        let mut statuses = Vec::new();
        for i in 0..5 {
            // Each request claims another address; the header Envoy sets wins.
            let req = Req::get("/").header("x-client-ip", format!("198.51.100.{i}"));
            statuses.push(send(&client, &base, &req).await.status);
        }
        assert_eq!(statuses, [200, 200, 200, 429, 429], "{ip}");
    }
    assert_eq!(
        envoy.stat(
            "wasmcustom.meshguard.ratelimit_requests_total.policy.per-client.outcome.limited"
        ),
        Some(4)
    );
}

/// Without the filter in front, the header is whatever the client sent: meshguard
/// takes it (that is why the docs say to set it in Envoy), and falls back to
/// the connection's address when it is absent or not an address.
#[tokio::test(flavor = "multi_thread")]
async fn without_the_filter_a_missing_or_bad_header_falls_back_to_the_connection() {
    let up = Upstream::start("api");
    let cfg = r#"{"schemaVersion":1,"clientAddress":{"header":"x-client-ip"},
        "routes":[{"name":"api"}],
        "rateLimits":[{"name":"per-client","key":[{"clientAddress":{}}],
          "limit":{"burst":2,"rate":1,"per":"hour"}}]}"#;
    let envoy = Envoy::start(&Bootstrap::new(cfg).cluster("api", up.addr), 1);
    let base = envoy.url("");
    let client = client_from("127.0.0.4".parse::<IpAddr>().unwrap());
    let mut statuses = Vec::new();
    for value in [
        None,
        Some("not-an-ip"),
        None,
        Some("203.0.113.9"),
        Some("203.0.113.9"),
    ] {
        let mut req = Req::get("/");
        if let Some(v) = value {
            req = req.header("x-client-ip", v);
        }
        statuses.push(send(&client, &base, &req).await.status);
    }
    // 127.0.0.4 twice, then limited; 203.0.113.9 is a bucket of its own.
    assert_eq!(statuses, [200, 200, 429, 200, 200]);
}

/// The module's regex crate has no Unicode property tables (they were a fifth of
/// its size): Envoy refuses a config that asks for one, naming the field.
#[test]
fn envoy_refuses_a_unicode_property_class_with_its_path() {
    let bad =
        r#"{"schemaVersion":1,"routes":[{"name":"web","match":{"pathRegex":"/\\p{Greek}+"}}]}"#;
    let b = Bootstrap::new(bad).cluster("web", "127.0.0.1:9".parse().unwrap());
    let (status, log) = Envoy::run_expecting_exit(&b, Duration::from_secs(60));
    assert!(!status.success());
    assert!(
        log.contains("meshguard: invalid configuration: routes[0].match.pathRegex: invalid regex:"),
        "{log}"
    );
}
