//! Shared by the breaker's unit tests: a compiled policy from JSON, and outcomes.

use meshguard_config::breaker::CompiledBreaker;
use meshguard_config::load_json;

use super::machine::Outcome;

/// One millisecond in ns.
pub const MS: u64 = 1_000_000;
/// One second in ns.
pub const SEC: u64 = 1_000 * MS;
/// A wall-clock instant to start from.
pub const T0: u64 = 1_700_000_000 * SEC;

/// The compiled breaker of a one-route config whose breaker is `json`.
pub fn policy(json: &str) -> CompiledBreaker {
    let c = load_json(
        format!(r#"{{"schemaVersion":1,"routes":[{{"name":"r","breaker":{json}}}]}}"#).as_bytes(),
    )
    .unwrap();
    c.routes[0].breaker.clone().unwrap()
}

/// A call that succeeded in time.
pub const OK: Outcome = Outcome {
    failed: false,
    slow: false,
};
/// A failed call.
pub const FAIL: Outcome = Outcome {
    failed: true,
    slow: false,
};
/// A call that succeeded, slowly.
pub const SLOW_OK: Outcome = Outcome {
    failed: false,
    slow: true,
};
