//! Canary routing against a real Envoy at `--concurrency 2`: shares, stickiness,
//! the monotone ramp, rule precedence, the upstream really changing (also when an
//! earlier filter already resolved the route), and spoofing at the edge.

use meshguard_integration_tests::bootstrap::Bootstrap;
use meshguard_integration_tests::envoy::Envoy;
use meshguard_integration_tests::load::{send_all, Req, Resp};
use meshguard_integration_tests::upstream::{echoed_header, Upstream};
use serde_json::json;

/// A canary policy on route `web` with `weight` basis points to canary.
fn config(weight: u32, extra: &str) -> String {
    format!(
        r#"{{"schemaVersion":1,"routes":[{{"name":"web","match":{{"pathPrefix":"/"}},"canary":{{
            "variants":[{{"name":"stable","weight":{}}},{{"name":"canary","weight":{weight}}}],
            "rules":[
              {{"variant":"canary","header":{{"name":"x-user-type","exact":"beta-tester"}}}},
              {{"variant":"canary","cookie":{{"name":"beta","exact":"1"}}}},
              {{"variant":"canary","query":{{"name":"canary","exact":"yes"}}}}],
            "sticky":{{"header":"x-user-id"}},
            "respondWithVariant":true{extra}}}}}]}}"#,
        10_000 - weight
    )
}

struct Rig {
    stable: Upstream,
    canary: Upstream,
    envoy: Envoy,
}

fn rig(plugin_config: &str, before: Option<serde_json::Value>) -> Rig {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let mut b = Bootstrap::new(plugin_config)
        .cluster("stable", stable.addr)
        .cluster("canary", canary.addr)
        .canary_routes("x-meshguard-cluster", "stable");
    if let Some(f) = before {
        b = b.filter_before(f);
    }
    let envoy = Envoy::start(&b, 2);
    Rig {
        stable,
        canary,
        envoy,
    }
}

fn base(envoy: &Envoy) -> String {
    envoy.url("")
}

/// Which upstream answered, checked three ways: the upstream's own header, the
/// response tag meshguard adds, and the upstream's body.
fn answered_by(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{r:?}");
    let upstream = r.header("x-upstream").expect("x-upstream").to_string();
    assert_eq!(
        r.header("x-meshguard-variant"),
        Some(upstream.as_str()),
        "{r:?}"
    );
    let echo: serde_json::Value = serde_json::from_str(&r.body).expect("echo body");
    assert_eq!(echo["upstream"], upstream.as_str());
    assert_eq!(
        echoed_header(&echo, "x-meshguard-variant"),
        vec![upstream.clone().into_bytes()]
    );
    upstream
}

fn users(n: usize, prefix: &str) -> Vec<Req> {
    (0..n)
        .map(|i| Req::get("/").header("x-user-id", format!("{prefix}-{i}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_sticky_split_sends_five_percent_of_users_to_canary() {
    let rig = rig(&config(500, ""), None);
    let n = 10_000usize;
    let answers = send_all(&base(&rig.envoy), users(n, "user"), 16).await;
    let canary = answers
        .iter()
        .filter(|r| answered_by(r) == "canary")
        .count();
    // Binomial(10000, 0.05): mean 500, sd sqrt(10000 * 0.05 * 0.95) = 21.8.
    let (mean, sd) = (500.0, (n as f64 * 0.05 * 0.95).sqrt());
    assert!(
        (canary as f64 - mean).abs() <= 3.0 * sd,
        "canary share {canary}/{n}, expected {mean} +- {:.0}",
        3.0 * sd
    );
    assert_eq!(rig.canary.requests() as usize, canary);
    assert_eq!(rig.stable.requests() as usize, n - canary);
    assert_eq!(rig.envoy.wasm_failures(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn same_user_always_gets_the_same_variant_on_both_workers() {
    let rig = rig(&config(5000, ""), None);
    for user in ["alice", "bob", "carol", "dave"] {
        let reqs = (0..250)
            .map(|_| Req::get("/").header("x-user-id", user))
            .collect();
        let answers = send_all(&base(&rig.envoy), reqs, 8).await;
        let first = answered_by(&answers[0]);
        assert!(
            answers.iter().all(|r| answered_by(r) == first),
            "{user} moved between variants"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn raising_the_weight_keeps_every_canary_user_on_canary() {
    let n = 2_000;
    let at5 = {
        let rig = rig(&config(500, ""), None);
        send_all(&base(&rig.envoy), users(n, "ramp"), 16).await
    };
    let at25 = {
        let rig = rig(&config(2500, ""), None);
        send_all(&base(&rig.envoy), users(n, "ramp"), 16).await
    };
    let mut moved_back = Vec::new();
    let mut canary_at25 = 0;
    for i in 0..n {
        let (before, after) = (answered_by(&at5[i]), answered_by(&at25[i]));
        if before == "canary" && after != "canary" {
            moved_back.push(i);
        }
        canary_at25 += usize::from(after == "canary");
    }
    assert_eq!(
        moved_back,
        Vec::<usize>::new(),
        "users moved from canary back to stable"
    );
    // Binomial(2000, 0.25): sd 19.4; 3 sd = 58.
    assert!(
        (canary_at25 as f64 - 500.0).abs() <= 58.1,
        "canary at 25%: {canary_at25}/{n}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn header_cookie_and_query_rules_beat_the_weights() {
    let rig = rig(&config(0, ""), None);
    let reqs = vec![
        Req::get("/")
            .header("x-user-type", "beta-tester")
            .header("x-user-id", "u1"),
        Req::get("/")
            .header("cookie", "session=x; beta=1")
            .header("x-user-id", "u1"),
        Req::get("/?canary=yes").header("x-user-id", "u1"),
        Req::get("/?canary=no").header("x-user-id", "u1"),
        Req::get("/")
            .header("x-user-type", "regular")
            .header("x-user-id", "u1"),
    ];
    let got: Vec<String> = send_all(&base(&rig.envoy), reqs, 1)
        .await
        .iter()
        .map(answered_by)
        .collect();
    assert_eq!(got, vec!["canary", "canary", "canary", "stable", "stable"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_changes_even_when_an_earlier_filter_resolved_the_route() {
    // The route is resolved and cached before meshguard runs (see the premise test
    // below; the fault filter in front looks it up once more). Only a cleared route
    // cache lets Envoy pick the cluster_header route meshguard's header selects.
    let fault = json!({
        "name": "envoy.filters.http.fault",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}
    });
    // `routeCache: auto` (the default) makes no clear_route_cache call with this
    // module's ABI 0.2.1: Envoy re-picks the route after the header edits by
    // itself. `clear` asks explicitly. Both must reach canary.
    for mode in ["auto", "clear"] {
        let cfg = config(0, "").replacen(
            r#"{"schemaVersion":1"#,
            &format!(r#"{{"schemaVersion":1,"routeCache":"{mode}""#),
            1,
        );
        let rig = rig(&cfg, Some(fault.clone()));
        let reqs = (0..50)
            .map(|_| Req::get("/").header("x-user-type", "beta-tester"))
            .collect();
        let answers = send_all(&base(&rig.envoy), reqs, 4).await;
        assert!(answers.iter().all(|r| answered_by(r) == "canary"), "{mode}");
        assert_eq!(
            (rig.canary.requests(), rig.stable.requests()),
            (50, 0),
            "{mode}"
        );
    }
}

/// `routingHeaders`: one header, the one Envoy's routes use, is enough to reach the
/// canary, and the other is not written.
#[tokio::test(flavor = "multi_thread")]
async fn one_routing_header_reaches_the_canary_through_the_route_that_uses_it() {
    for (mode, written, absent) in [
        ("cluster", "x-meshguard-cluster", "x-meshguard-variant"),
        ("variant", "x-meshguard-variant", "x-meshguard-cluster"),
    ] {
        let stable = Upstream::start("stable");
        let canary = Upstream::start("canary");
        let cfg = config(0, "").replacen(
            r#"{"schemaVersion":1"#,
            &format!(r#"{{"schemaVersion":1,"routingHeaders":"{mode}""#),
            1,
        );
        let mut b = Bootstrap::new(&cfg)
            .cluster("stable", stable.addr)
            .cluster("canary", canary.addr);
        b = if mode == "cluster" {
            b.canary_routes("x-meshguard-cluster", "stable")
        } else {
            // Istio-style: a header match on the variant picks the subset.
            b.route(json!({
                "match": {"prefix": "/", "headers": [{"name": "x-meshguard-variant",
                    "string_match": {"exact": "canary"}}]},
                "route": {"cluster": "canary"}
            }))
            .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "stable"}}))
        };
        let envoy = Envoy::start(&b, 1);
        let reqs = vec![
            Req::get("/").header("x-user-type", "beta-tester"),
            Req::get("/").header("x-user-id", "u1"),
        ];
        let answers = send_all(&envoy.url(""), reqs, 1).await;
        let got: Vec<&str> = answers
            .iter()
            .map(|r| r.header("x-upstream").unwrap_or("?"))
            .collect();
        assert_eq!(got, ["canary", "stable"], "{mode}");
        for r in &answers {
            let echo: serde_json::Value = serde_json::from_str(&r.body).expect("echo body");
            assert_eq!(echoed_header(&echo, written).len(), 1, "{mode}: {r:?}");
            assert!(echoed_header(&echo, absent).is_empty(), "{mode}: {r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_routing_headers_from_untrusted_clients_never_reach_canary() {
    // 127.0.0.1 is not trusted, so the source-address check runs and says no.
    let rig = rig(&config(0, r#","trustedSources":["10.0.0.0/8"]"#), None);
    let reqs = (0..1_000)
        .map(|i| {
            Req::get("/")
                .header("x-meshguard-variant", "canary")
                .header("x-meshguard-cluster", "canary")
                .header("x-user-id", format!("spoof-{i}"))
        })
        .collect();
    let answers = send_all(&base(&rig.envoy), reqs, 16).await;
    let canary = answers
        .iter()
        .filter(|r| answered_by(r) == "canary")
        .count();
    assert_eq!(canary, 0);
    assert_eq!(rig.canary.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_caller_keeps_the_variant_it_propagates() {
    let rig = rig(&config(0, r#","trustedSources":["127.0.0.0/8"]"#), None);
    let reqs = vec![
        Req::get("/").header("x-meshguard-variant", "canary"),
        Req::get("/").header("x-meshguard-variant", "no-such-variant"),
    ];
    let got: Vec<String> = send_all(&base(&rig.envoy), reqs, 1)
        .await
        .iter()
        .map(answered_by)
        .collect();
    assert_eq!(got, vec!["canary", "stable"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issued_cookie_pins_a_browser_to_its_variant() {
    let config = r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
        "variants":[{"name":"stable","weight":5000},{"name":"canary","weight":5000}],
        "sticky":{"cookie":"mg-user","issueCookie":{"maxAgeSeconds":600}},
        "respondWithVariant":true}}]}"#;
    let rig = rig(config, None);
    let first = send_all(&base(&rig.envoy), vec![Req::get("/"); 40], 4).await;
    for r in &first {
        let variant = answered_by(r);
        let cookie = r.header("set-cookie").expect("a sticky cookie is issued");
        assert!(
            cookie.ends_with("; Max-Age=600; Path=/; HttpOnly; SameSite=Lax; Secure"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().unwrap().to_string();
        let again = send_all(
            &base(&rig.envoy),
            vec![Req::get("/").header("cookie", &pair); 10],
            4,
        )
        .await;
        for a in &again {
            assert_eq!(answered_by(a), variant, "{pair}");
            assert_eq!(a.header("set-cookie"), None);
        }
    }
    // 40 fresh keys at 50%: both variants appear (fails with probability 2^-39).
    let canary = first.iter().filter(|r| answered_by(r) == "canary").count();
    assert!(canary > 0 && canary < 40, "{canary}/40");
}

#[test]
fn envoy_refuses_a_bad_canary_policy_with_its_path() {
    let bad = r#"{"schemaVersion":1,"routes":[{"name":"web","canary":{
        "variants":[{"name":"stable","weight":9000},{"name":"canary","weight":500}],
        "rules":[{"variant":"beta","header":{"name":"x","present":true}}]}}]}"#;
    let b = Bootstrap::new(bad).cluster("stable", "127.0.0.1:9".parse().unwrap());
    let (status, log) = Envoy::run_expecting_exit(&b, std::time::Duration::from_secs(60));
    assert!(!status.success());
    for line in [
        "meshguard: invalid configuration: routes[0].canary.variants: weights must sum to 10000 basis points, got 9500",
        "meshguard: invalid configuration: routes[0].canary.rules[0].variant: unknown variant \"beta\"",
    ] {
        assert!(log.contains(line), "missing {line:?}:\n{log}");
    }
}

/// Premise of the test above: when HTTP filters run, Envoy has already resolved
/// and cached the route (the connection manager does it before the filter chain,
/// and the fault filter looks it up again). A Lua filter that sets the cluster
/// header without clearing the route cache stays on the default cluster, with or
/// without the fault filter in front; the same Lua filter clearing the cache
/// reaches canary. So meshguard reaching canary means the route was re-picked.
#[tokio::test(flavor = "multi_thread")]
async fn premise_the_route_is_already_cached_when_filters_run() {
    let lua = |clear: bool| {
        json!({
            "name": "envoy.filters.http.lua",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "clear_route_cache": clear,
                "default_source_code": {"inline_string":
                    "function envoy_on_request(h) h:headers():replace('x-meshguard-cluster', 'canary') end"}
            }
        })
    };
    let fault = json!({
        "name": "envoy.filters.http.fault",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}
    });
    // meshguard is present but decides nothing for these requests.
    let passive = r#"{"schemaVersion":1,"routes":[{"name":"elsewhere","match":{"pathPrefix":"/nothing-here"}}]}"#;
    let cases = [
        (vec![fault, lua(false)], "stable"),
        (vec![lua(false)], "stable"),
        (vec![lua(true)], "canary"),
    ];
    for (filters, want) in cases {
        let stable = Upstream::start("stable");
        let canary = Upstream::start("canary");
        let mut b = Bootstrap::new(passive)
            .cluster("stable", stable.addr)
            .cluster("canary", canary.addr)
            .canary_routes("x-meshguard-cluster", "stable");
        for f in filters {
            b = b.filter_before(f);
        }
        let envoy = Envoy::start(&b, 1);
        let r = &send_all(&envoy.url(""), vec![Req::get("/")], 1).await[0];
        assert_eq!(r.header("x-upstream"), Some(want), "{r:?}");
    }
}
