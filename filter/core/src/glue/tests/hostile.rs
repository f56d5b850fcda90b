//! A hostile host: a store that takes no more writes, and a clock that jumps by
//! hours. Each has the behaviour docs/src/operations.md documents (Operations, Failure modes).

use super::{plugin, send_at};
use crate::glue::tick::on_tick;
use crate::host::fake::FakeHost;
use crate::host::Level;

const SEC: u64 = 1_000_000_000;
const HOUR: u64 = 3_600 * SEC;

const CONFIG: &str = r#"{"schemaVersion":1,"routes":[{"name":"web",
   "rateLimits":[{"name":"allow","key":[{"header":"x-k"}],"limit":{"burst":2,"rate":1,"per":"minute"}},
                 {"name":"deny","key":[{"header":"x-d"}],"limit":{"burst":2,"rate":1,"per":"minute"},"onStoreError":"deny"}],
   "breaker":{"consecutiveFailures":3,"openDurationMs":60000,"halfOpenProbes":1,"maxConcurrent":5}}]}"#;

fn status(h: &FakeHost) -> Option<u16> {
    h.replies.borrow().first().map(|r| r.0)
}

fn warned(h: &FakeHost) -> bool {
    h.logs.borrow().iter().any(|(l, _)| *l == Level::Warn)
}

#[test]
fn a_store_that_refuses_writes_admits_by_each_policy_and_recovers() {
    let world = FakeHost::new();
    let p = plugin(CONFIG, &world);
    world.world().refuse_writes.set(true);
    for i in 0..20 {
        let now = SEC + i * 1_000_000;
        // onStoreError allow (the default): admitted, counted, a warning logged.
        let h = send_at(&p, &world, now, "192.0.2.1:1", &[("x-k", "a")], 503);
        assert_eq!(status(&h), None, "request {i}");
        assert!(warned(&h));
        // onStoreError deny: rejected as limited.
        let h = send_at(&p, &world, now, "192.0.2.1:1", &[("x-d", "a")], 200);
        assert_eq!(status(&h), Some(429), "request {i}");
    }
    assert_eq!(
        world.metric("meshguard.ratelimit_requests_total.policy.allow.outcome.error_allowed"),
        20
    );
    assert_eq!(
        world.metric("meshguard.ratelimit_requests_total.policy.deny.outcome.error_denied"),
        20
    );
    // 20 failures that could not be written: the breaker could not open, so
    // traffic was admitted rather than refused on a store fault.
    assert_eq!(
        world.metric("meshguard.breaker_state.route.web.variant.all"),
        0
    );
    // The store takes writes again: limits and the breaker work as before.
    world.world().refuse_writes.set(false);
    let at = 10 * SEC;
    for _ in 0..3 {
        send_at(&p, &world, at, "192.0.2.1:1", &[], 503);
    }
    let h = send_at(&p, &world, at + 1_000_000, "192.0.2.1:1", &[], 200);
    assert_eq!(status(&h), Some(503), "3 failures in a row open it");
    let k = |n| send_at(&p, &world, at, "192.0.2.1:1", &[("x-k", n)], 200);
    assert_eq!(
        status(&k("fresh")),
        Some(503),
        "the breaker is open for everyone"
    );
}

#[test]
fn a_clock_that_jumps_hours_ahead_refills_to_the_burst_and_ends_the_open_period() {
    let world = FakeHost::new();
    let p = plugin(CONFIG, &world);
    let limited = |now| {
        status(&send_at(
            &p,
            &world,
            now,
            "192.0.2.1:1",
            &[("x-k", "a")],
            200,
        ))
    };
    assert_eq!(
        (limited(SEC), limited(SEC), limited(SEC)),
        (None, None, Some(429))
    );
    // Three hours later: a full bucket (the burst, 2), never more.
    let later = SEC + 3 * HOUR;
    assert_eq!(
        (limited(later), limited(later), limited(later)),
        (None, None, Some(429))
    );
    // The breaker opened just before the jump lets its probe through after it.
    let t = later + SEC;
    for _ in 0..3 {
        send_at(&p, &world, t, "192.0.2.1:1", &[], 503);
    }
    assert_eq!(
        status(&send_at(&p, &world, t + 1_000_000, "192.0.2.1:1", &[], 200)),
        Some(503)
    );
    world.now.set(t + 5 * HOUR);
    on_tick(&world, &p);
    let probe = send_at(&p, &world, t + 5 * HOUR, "192.0.2.1:1", &[], 200);
    assert_eq!(status(&probe), None, "half-open: the probe is admitted");
    assert_eq!(
        status(&send_at(
            &p,
            &world,
            t + 5 * HOUR + SEC,
            "192.0.2.1:1",
            &[],
            200
        )),
        None,
        "closed again"
    );
    // The key spends its bucket, then the clock steps back two hours (an NTP
    // correction): no token appears until the clock catches up.
    let late = t + 5 * HOUR + 2 * SEC;
    assert_eq!(
        (limited(late), limited(late), limited(late)),
        (None, None, Some(429))
    );
    let back = late - 2 * HOUR;
    let refused = (0..5).filter(|_| limited(back) == Some(429)).count();
    assert_eq!(refused, 5, "a backwards step grants nothing");
}
