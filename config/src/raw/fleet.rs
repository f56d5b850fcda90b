//! The fleet as written: `fleetService` (compiled by [`crate::fleet`]) and a
//! rollout's `canary.fleet` (compiled with the rollout).

use serde::{Deserialize, Serialize};

/// The fleet service: where an Envoy sends its canary counts and reads the
/// fleet's verdicts (meshguard's `meshguard.fleet.v1.Fleet/Sync`, served by
/// `meshguard-rls`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetService {
    /// The Envoy cluster of the service; it must speak HTTP/2.
    pub cluster: String,
    /// How often an Envoy sends its counts and reads the fleet's state, ms
    /// (50 to 10000, default 250).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_ms: Option<u64>,
    /// How long a sync waits for its answer, ms (1 to 10000, default 200); a
    /// sync that timed out is sent again, with the same counts, by the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Without an answer for this long, ms, the service counts as unreachable
    /// and each rollout does what its `fleet.whileUnreachable` says (default
    /// 4 × `syncMs`; at least `syncMs` + `timeoutMs`, at most 600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_after_ms: Option<u64>,
}

/// A rollout judged by the fleet: its counts go to `fleetService`, which judges
/// the counts of every Envoy as one test and steps one ramp for all of them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CanaryFleet {
    /// While the service cannot be reached: `hold` (default: route by the last
    /// fleet state, keep the counts for when it returns) or `local` (also judge
    /// this Envoy's own counts at `alpha`; a local rollback is kept and reported
    /// to the fleet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub while_unreachable: Option<String>,
}

/// What a fleet rollout does while the fleet service cannot be reached
/// (`canary.fleet.whileUnreachable`: read as a string, checked when compiled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhileUnreachable {
    /// Route by the last fleet state; counts wait for the service.
    #[default]
    Hold,
    /// Also judge this Envoy's own counts (rollbacks only; the ramp holds).
    Local,
}
