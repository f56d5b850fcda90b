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
