use super::*;
use meshguard_config::load_json;
use wasm_bindgen_test::wasm_bindgen_test;

/// A request: headers plus an optional source address.
#[derive(Default)]
struct Req {
    headers: Vec<(String, Vec<u8>)>,
    source: Option<Vec<u8>>,
}

impl Req {
    fn with(mut self, name: &str, value: &[u8]) -> Self {
        self.headers.push((name.to_string(), value.to_vec()));
        self
    }
    fn from(mut self, addr: &str) -> Self {
        self.source = Some(addr.as_bytes().to_vec());
        self
    }
}

impl RequestView for Req {
    fn header(&mut self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
    fn source_address(&mut self) -> Option<&[u8]> {
        self.source.as_deref()
    }
}

fn policy(canary: &str) -> CompiledCanary {
    let json = format!(r#"{{"schemaVersion":1,"routes":[{{"name":"web","canary":{canary}}}]}}"#);
    load_json(json.as_bytes()).unwrap().routes[0]
        .canary
        .clone()
        .unwrap()
}

fn split(canary_weight: u32, extra: &str) -> CompiledCanary {
    policy(&format!(
        r#"{{"variants":[{{"name":"stable","weight":{}}},{{"name":"canary","weight":{canary_weight}}}]{extra}}}"#,
        10_000 - canary_weight
    ))
}

const UNTRUSTED: Draw<'static> = Draw {
    trusted: false,
    roll: 0,
    fresh_key: None,
};

fn choose(p: &CompiledCanary, req: &mut Req, draw: Draw<'_>) -> Choice {
    choose_variant(p, "x-meshguard-variant", req, draw)
}

#[wasm_bindgen_test(unsupported = test)]
fn rules_beat_weights_and_the_first_rule_wins() {
    let p = split(
        0,
        r#","rules":[
            {"variant":"canary","header":{"name":"x-user-type","exact":"beta-tester"}},
            {"variant":"stable","header":{"name":"x-user-type","prefix":"beta"}},
            {"variant":"canary","cookie":{"name":"beta","exact":"1"}},
            {"variant":"canary","query":{"name":"canary","present":true}}]"#,
    );
    let mut beta = Req::default().with("x-user-type", b"beta-tester");
    assert_eq!(
        choose(&p, &mut beta, UNTRUSTED),
        Choice {
            variant: 1,
            reason: Reason::Rule(0)
        }
    );
    let mut betax = Req::default()
        .with("x-user-type", b"beta-x")
        .with("cookie", b"beta=1");
    assert_eq!(
        choose(&p, &mut betax, UNTRUSTED),
        Choice {
            variant: 0,
            reason: Reason::Rule(1)
        }
    );
    let mut cookie = Req::default().with("cookie", b"a=b; beta=1");
    assert_eq!(choose(&p, &mut cookie, UNTRUSTED).reason, Reason::Rule(2));
    let mut query = Req::default().with(":path", b"/x?canary");
    assert_eq!(choose(&p, &mut query, UNTRUSTED).reason, Reason::Rule(3));
    let mut none = Req::default().with(":path", b"/x?canaryx=1");
    assert_eq!(
        choose(&p, &mut none, UNTRUSTED),
        Choice {
            variant: 0,
            reason: Reason::Random
        }
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn weight_boundaries_hold_for_every_roll() {
    // Canary owns the top `w` buckets: roll r goes to canary iff r >= 10000 - w.
    for w in [0u32, 1, 9999, 10000] {
        let p = split(w, "");
        let canary = (0..10_000u64)
            .filter(|r| {
                choose(
                    &p,
                    &mut Req::default(),
                    Draw {
                        roll: *r,
                        ..UNTRUSTED
                    },
                )
                .variant
                    == 1
            })
            .count();
        assert_eq!(canary, w as usize, "weight {w}");
        if w > 0 {
            let first = u64::from(10_000 - w);
            assert_eq!(
                choose(
                    &p,
                    &mut Req::default(),
                    Draw {
                        roll: first,
                        ..UNTRUSTED
                    }
                )
                .variant,
                1
            );
        }
        if w < 10_000 {
            let last = u64::from(9_999 - w);
            assert_eq!(
                choose(
                    &p,
                    &mut Req::default(),
                    Draw {
                        roll: last,
                        ..UNTRUSTED
                    }
                )
                .variant,
                0
            );
        }
    }
    // Rolls are reduced modulo 10000, so any u64 is a valid roll.
    let p = split(1, "");
    assert_eq!(
        choose(
            &p,
            &mut Req::default(),
            Draw {
                roll: u64::MAX,
                ..UNTRUSTED
            }
        )
        .variant,
        0
    ); // u64::MAX % 10000 = 1615
    assert_eq!(
        choose(
            &p,
            &mut Req::default(),
            Draw {
                roll: 19_999,
                ..UNTRUSTED
            }
        )
        .variant,
        1
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn same_key_gets_same_variant_whatever_the_roll() {
    let p = split(5000, r#","sticky":{"header":"x-user-id"}"#);
    for user in 0..200 {
        let id = format!("user-{user}");
        let first = choose(
            &p,
            &mut Req::default().with("x-user-id", id.as_bytes()),
            UNTRUSTED,
        );
        assert_eq!(first.reason, Reason::Sticky);
        for roll in [1u64, 7777, 123_456_789] {
            let again = choose(
                &p,
                &mut Req::default().with("x-user-id", id.as_bytes()),
                Draw { roll, ..UNTRUSTED },
            );
            assert_eq!(again, first, "{id}");
        }
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn raising_the_canary_weight_never_moves_a_canary_user_back() {
    let weights = [0u32, 1, 500, 2500, 5000, 9999, 10000];
    let policies: Vec<CompiledCanary> = weights
        .iter()
        .map(|w| split(*w, r#","sticky":{"header":"x-user-id"}"#))
        .collect();
    for user in 0..5_000 {
        let id = format!("u{user}");
        let on_canary: Vec<bool> = policies
            .iter()
            .map(|p| {
                choose(
                    p,
                    &mut Req::default().with("x-user-id", id.as_bytes()),
                    UNTRUSTED,
                )
                .variant
                    == 1
            })
            .collect();
        // Once on canary at some weight, on canary at every higher weight.
        if let Some(first) = on_canary.iter().position(|c| *c) {
            assert!(on_canary[first..].iter().all(|c| *c), "{id}: {on_canary:?}");
        }
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn an_empty_or_absent_key_falls_back_to_the_roll() {
    let p = split(10_000, r#","sticky":{"header":"x-user-id"}"#);
    let mut empty = Req::default().with("x-user-id", b"");
    assert_eq!(choose(&p, &mut empty, UNTRUSTED).reason, Reason::Random);
    assert_eq!(
        choose(&p, &mut Req::default(), UNTRUSTED).reason,
        Reason::Random
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_fresh_key_is_used_when_the_cookie_is_absent() {
    let p = split(5000, r#","sticky":{"cookie":"mg-user","issueCookie":{}}"#);
    let fresh = b"0123456789abcdef";
    let issued = choose(
        &p,
        &mut Req::default(),
        Draw {
            fresh_key: Some(fresh),
            ..UNTRUSTED
        },
    );
    assert_eq!(issued.reason, Reason::StickyIssued);
    // The next request carries the cookie and lands on the same variant.
    let mut back = Req::default().with("cookie", b"mg-user=0123456789abcdef");
    let again = choose(&p, &mut back, UNTRUSTED);
    assert_eq!(
        (again.variant, again.reason),
        (issued.variant, Reason::Sticky)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn client_address_key_groups_ipv6_by_64() {
    let p = split(5000, r#","sticky":{"clientAddress":true}"#);
    let pick = |addr: &str| choose(&p, &mut Req::default().from(addr), UNTRUSTED);
    assert_eq!(
        pick("[2001:db8:1:2::1]:1000"),
        pick("[2001:db8:1:2:ffff::9]:2000")
    );
    assert_eq!(pick("10.1.2.3:1"), pick("10.1.2.3:65000"));
    assert_eq!(pick("10.1.2.3:1").reason, Reason::Sticky);
    assert_eq!(
        address_key("2001:db8:1:2::1".parse().unwrap()),
        vec![0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2]
    );
    assert_eq!(
        address_key("::ffff:10.1.2.3".parse().unwrap()),
        vec![10, 1, 2, 3]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn only_trusted_callers_may_name_their_variant_or_use_trusted_rules() {
    let p = split(
        0,
        r#","trustedSources":["10.0.0.0/8"],
           "rules":[{"variant":"canary","header":{"name":"x-force","present":true},"trustedOnly":true}]"#,
    );
    let spoof = || {
        Req::default()
            .with("x-meshguard-variant", b"canary")
            .with("x-force", b"1")
    };
    let mut outside = spoof().from("203.0.113.9:5555");
    let trusted = is_trusted(&p, &mut outside);
    assert!(!trusted);
    assert_eq!(
        choose(
            &p,
            &mut outside,
            Draw {
                trusted,
                ..UNTRUSTED
            }
        )
        .variant,
        0
    );
    let mut inside = spoof().from("10.2.3.4:5555");
    let trusted = is_trusted(&p, &mut inside);
    assert!(trusted);
    assert_eq!(
        choose(
            &p,
            &mut inside,
            Draw {
                trusted,
                ..UNTRUSTED
            }
        ),
        Choice {
            variant: 1,
            reason: Reason::Propagated
        }
    );
    // A trusted caller naming an unknown variant falls through to the rules.
    let mut unknown = Req::default()
        .with("x-meshguard-variant", b"nope")
        .with("x-force", b"1");
    assert_eq!(
        choose(
            &p,
            &mut unknown,
            Draw {
                trusted: true,
                ..UNTRUSTED
            }
        )
        .reason,
        Reason::Rule(0)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn without_trusted_sources_nobody_is_trusted_and_no_address_is_read() {
    let p = split(0, "");
    struct Counting(u32);
    impl RequestView for Counting {
        fn header(&mut self, _: &str) -> Option<&[u8]> {
            None
        }
        fn source_address(&mut self) -> Option<&[u8]> {
            self.0 += 1;
            Some(b"10.0.0.1:1")
        }
    }
    let mut req = Counting(0);
    assert!(!is_trusted(&p, &mut req));
    assert_eq!(req.0, 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn source_addresses_parse_with_and_without_ports() {
    assert_eq!(
        parse_source_address(b"10.0.0.1:80"),
        Some("10.0.0.1".parse().unwrap())
    );
    assert_eq!(
        parse_source_address(b"[::1]:80"),
        Some("::1".parse().unwrap())
    );
    assert_eq!(parse_source_address(b"::1"), Some("::1".parse().unwrap()));
    assert_eq!(parse_source_address(b"garbage"), None);
    assert_eq!(parse_source_address(b"\xff"), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn three_variants_split_by_their_weights() {
    let p = policy(
        r#"{"variants":[{"name":"a","weight":7000},{"name":"b","weight":2000},{"name":"c","weight":1000}]}"#,
    );
    let mut counts = [0usize; 3];
    for r in 0..10_000u64 {
        counts[choose(
            &p,
            &mut Req::default(),
            Draw {
                roll: r,
                ..UNTRUSTED
            },
        )
        .variant] += 1;
    }
    assert_eq!(counts, [7000, 2000, 1000]);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_fresh_sticky_key_is_issued_as_the_policys_cookie_and_a_known_one_is_not() {
    let p = split(
        5000,
        r#","sticky":{"cookie":"mg-user","issueCookie":{"maxAgeSeconds":60}}"#,
    );
    let slices = meshguard_config::canary::slices([5000u32, 5000].into_iter());
    let split = || Split {
        slices: &slices,
        rolled_back: &[false, false],
    };
    let rng = Rng::new(3);
    let (choice, cookie) = decide(
        &p,
        split(),
        "x-meshguard-variant",
        &mut Req::default(),
        &rng,
    );
    assert_eq!(choice.reason, Reason::StickyIssued);
    let cookie = cookie.unwrap_or_default();
    let (pair, attrs) = cookie.split_once("; ").unwrap_or_default();
    let (name, key) = pair.split_once('=').unwrap_or_default();
    assert_eq!(name, "mg-user");
    assert!(
        key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    assert_eq!(attrs, "Max-Age=60; Path=/; HttpOnly; SameSite=Lax; Secure");
    // The client sends it back: sticky on that key, nothing issued.
    let mut back = Req::default().with("cookie", pair.as_bytes());
    let (again, none) = decide(&p, split(), "x-meshguard-variant", &mut back, &rng);
    assert_eq!(
        (again.variant, again.reason, none),
        (choice.variant, Reason::Sticky, None)
    );
}
