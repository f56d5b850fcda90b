//! The fleet service: where the Envoys of a fleet send their canary counts so
//! that one test judges them all (`fleetService`, and `canary.fleet` per
//! rollout). Validated and compiled here; the rollout's side is in
//! [`crate::rollout`].

use crate::problem::{in_range, join, Problems};
use crate::raw::FleetService;

/// Default sync interval, ms.
pub const DEFAULT_SYNC_MS: u64 = 250;
/// Shortest and longest sync interval, ms.
pub const SYNC_MS: (u64, u64) = (50, 10_000);
/// Default time a sync waits for its answer, ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 200;
/// Longest time a sync may wait, ms.
pub const MAX_TIMEOUT_MS: u64 = 10_000;
/// Longest `unreachableAfterMs`.
pub const MAX_UNREACHABLE_AFTER_MS: u64 = 600_000;
/// Sync intervals without an answer before the service counts as unreachable,
/// when `unreachableAfterMs` is not given.
pub const DEFAULT_UNREACHABLE_SYNCS: u64 = 4;

/// A compiled `fleetService`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFleetService {
    /// The Envoy cluster of the service (HTTP/2).
    pub cluster: String,
    /// How often an Envoy syncs, ns.
    pub sync_ns: u64,
    /// How long a sync waits for its answer, ms.
    pub timeout_ms: u64,
    /// Without an answer for this long, ns, the service is unreachable.
    pub unreachable_ns: u64,
}

/// Validates and compiles `fleetService` at `path`.
pub fn compile_fleet_service(
    s: &FleetService,
    path: &str,
    p: &mut Problems,
) -> Option<CompiledFleetService> {
    let mut local = Problems::default();
    if !crate::names::usable_cluster_name(&s.cluster) {
        local.push(
            join(path, "cluster"),
            format!("{:?} is not a usable Envoy cluster name", s.cluster),
        );
    }
    let sync_ms = s.sync_ms.unwrap_or(DEFAULT_SYNC_MS);
    in_range(&mut local, &join(path, "syncMs"), sync_ms, SYNC_MS, "");
    let timeout_ms = s.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    let at = join(path, "timeoutMs");
    in_range(&mut local, &at, timeout_ms, (1, MAX_TIMEOUT_MS), "");
    let least = sync_ms.saturating_add(timeout_ms);
    let unreachable_ms = s
        .unreachable_after_ms
        .unwrap_or_else(|| (DEFAULT_UNREACHABLE_SYNCS * sync_ms).max(least));
    let at = join(path, "unreachableAfterMs");
    in_range(
        &mut local,
        &at,
        unreachable_ms,
        (least, MAX_UNREACHABLE_AFTER_MS.max(least)),
        " (at least syncMs + timeoutMs)",
    );
    local.merge_into(p).then(|| CompiledFleetService {
        cluster: s.cluster.clone(),
        sync_ns: sync_ms * 1_000_000,
        timeout_ms,
        unreachable_ns: unreachable_ms * 1_000_000,
    })
}

#[cfg(test)]
mod tests {
    use crate::rollout::{compile_fleet_spec, CompiledRollout};
    use crate::{load_json, Problem};
    use wasm_bindgen_test::wasm_bindgen_test;

    fn load(service: &str, fleet: &str) -> Result<crate::CompiledConfig, Vec<String>> {
        let json = format!(
            r#"{{"schemaVersion":1{service},"routes":[{{"name":"web","canary":{{
                "variants":[{{"name":"stable","weight":9000}},{{"name":"canary","weight":1000}}],
                "revision":"r1","analysis":{{}}{fleet}}}}}]}}"#
        );
        load_json(json.as_bytes()).map_err(|l| l.iter().map(Problem::to_string).collect())
    }

    const SERVICE: &str = r#","fleetService":{"cluster":"fleet"}"#;

    #[wasm_bindgen_test(unsupported = test)]
    fn a_fleet_rollout_compiles_with_the_service_defaults() {
        let c = load(SERVICE, r#","fleet":{}"#).unwrap();
        let s = c.fleet_service.unwrap();
        assert_eq!(
            (
                s.cluster.as_str(),
                s.sync_ns,
                s.timeout_ms,
                s.unreachable_ns
            ),
            ("fleet", 250_000_000, 200, 1_000_000_000)
        );
        let r = c.routes[0]
            .canary
            .as_ref()
            .unwrap()
            .rollout
            .clone()
            .unwrap();
        let f = r.fleet.unwrap();
        assert_eq!(f.while_unreachable, crate::raw::WhileUnreachable::Hold);
        assert!(f.key.starts_with("web/r1/"), "{}", f.key);
        // A long interval moves the default: four intervals, at least one
        // interval and the timeout.
        let slow = load(
            r#","fleetService":{"cluster":"fleet","syncMs":10000,"timeoutMs":10000}"#,
            "",
        )
        .unwrap();
        assert_eq!(slow.fleet_service.unwrap().unreachable_ns, 40_000_000_000);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_problem_of_the_fleet_scope_is_named_by_its_path() {
        let bad = r#","fleetService":{"cluster":"a b","syncMs":49,"timeoutMs":0,"unreachableAfterMs":10}"#;
        assert_eq!(
            load(bad, r#","fleet":{"whileUnreachable":"guess"}"#).unwrap_err(),
            vec![
                "fleetService.cluster: \"a b\" is not a usable Envoy cluster name",
                "fleetService.syncMs: must be 50 to 10000, got 49",
                "fleetService.timeoutMs: must be 1 to 10000, got 0",
                "fleetService.unreachableAfterMs: must be 49 to 600000 (at least syncMs + timeoutMs), got 10",
                "routes[0].canary.fleet.whileUnreachable: must be hold or local, got \"guess\"",
            ]
        );
        assert_eq!(
            load("", r#","fleet":{}"#).unwrap_err(),
            vec!["routes[0].canary.fleet: needs fleetService (the service that judges the fleet's counts)"]
        );
        let upper = r#","fleetService":{"cluster":"f","syncMs":10001,"timeoutMs":10001,"unreachableAfterMs":700000}"#;
        assert_eq!(
            load(upper, "").unwrap_err(),
            vec![
                "fleetService.syncMs: must be 50 to 10000, got 10001",
                "fleetService.timeoutMs: must be 1 to 10000, got 10001",
                "fleetService.unreachableAfterMs: must be 20002 to 600000 (at least syncMs + timeoutMs), got 700000",
            ]
        );
    }

    fn without_fleet(r: &CompiledRollout) -> CompiledRollout {
        CompiledRollout {
            fleet: None,
            ..r.clone()
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_spec_compiles_back_to_the_same_rollout() {
        for (first, rollout) in [
            (
                "stable",
                r#""variants":[{"name":"stable","weight":9000},{"name":"canary","weight":1000}],"analysis":{}"#,
            ),
            (
                "stable",
                r#""variants":[{"name":"stable"},{"name":"canary"}],"analysis":{"alpha":0.0005,"minRequests":7,
                "slowCallMs":250,"shadow":true,"method":"changepoint","horizonSeconds":7200,"successRate":{"min":99.25,"intervalSeconds":30,"intervals":4},
                "zTest":{"z":2.5,"intervalSeconds":10}},"ramp":{"steps":[100,2500,10000],"holdSeconds":30,"minRequests":9},"pause":true"#,
            ),
            (
                "a",
                r#""variants":[{"name":"a","weight":5000},{"name":"b","weight":3000},{"name":"c","weight":2000}],
                "analysis":{"sequential":false,"zTest":{"intervalSeconds":5}},"rollback":true"#,
            ),
        ] {
            let json = format!(
                r#"{{"schemaVersion":1,"fleetService":{{"cluster":"f"}},"routes":[{{"name":"web","canary":{{
                    {rollout},"revision":"v-2","fleet":{{"whileUnreachable":"local"}},
                    "rules":[{{"variant":"{first}","header":{{"name":"x","exact":"1"}}}}]}}}}]}}"#
            );
            let c = load_json(json.as_bytes()).unwrap();
            let canary = c.routes[0].canary.clone().unwrap();
            let r = canary.rollout.clone().unwrap();
            let f = r.fleet.clone().unwrap();
            let (route, back) = compile_fleet_spec(f.spec.as_bytes()).unwrap();
            assert_eq!(route, "web");
            assert_eq!(
                without_fleet(&back.rollout.unwrap()),
                without_fleet(&r),
                "{}",
                f.spec
            );
            assert_eq!(back.weights, canary.weights);
            assert!(back.rules.is_empty(), "nothing that routes requests");
        }
        assert!(compile_fleet_spec(b"{}").is_err());
        let no_rollout = br#"{"schemaVersion":1,"routes":[{"name":"w","canary":{"variants":[{"name":"a","weight":5000},{"name":"b","weight":5000}]}}]}"#;
        assert_eq!(
            compile_fleet_spec(no_rollout).unwrap_err()[0].path,
            "routes"
        );
    }
}
