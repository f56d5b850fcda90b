//! Which final statuses count as failures (`failureStatuses`: classes like `5xx`,
//! codes like `429`), for breakers and the canary analysis alike.

use crate::problem::{index, Problems};

/// A set of failure statuses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailureStatuses {
    /// Status classes, as hundreds (`5` for `5xx`).
    pub classes: Vec<u16>,
    /// Exact codes.
    pub codes: Vec<u16>,
    /// gRPC status codes (from `grpc-status`) that count as failures.
    pub grpc: Vec<u32>,
}

impl FailureStatuses {
    /// Whether `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        self.codes.contains(&status) || self.classes.contains(&(status / 100))
    }

    /// Whether gRPC status `code` is in the set.
    pub fn contains_grpc(&self, code: u32) -> bool {
        self.grpc.contains(&code)
    }
}

/// The default: `["5xx"]`, and gRPC's default failure codes.
pub fn default_failure_statuses() -> FailureStatuses {
    FailureStatuses {
        classes: vec![5],
        codes: Vec::new(),
        grpc: crate::grpc::DEFAULT_FAILURE_GRPC_CODES.to_vec(),
    }
}

/// Parses `failureStatuses` entries at `path`, recording a problem for each entry
/// that is neither a class (1xx-5xx) nor a code (100-599).
pub fn failure_statuses(list: &[String], path: &str, p: &mut Problems) -> FailureStatuses {
    let mut out = FailureStatuses {
        grpc: crate::grpc::DEFAULT_FAILURE_GRPC_CODES.to_vec(),
        ..FailureStatuses::default()
    };
    for (i, s) in list.iter().enumerate() {
        match (
            s.strip_suffix("xx").and_then(|c| c.parse::<u16>().ok()),
            s.parse::<u16>(),
        ) {
            (Some(c), _) if (1..=5).contains(&c) => out.classes.push(c),
            (_, Ok(code)) if (100..=599).contains(&code) => out.codes.push(code),
            _ => p.push(
                index(path, i),
                format!("{s:?} is neither a status class (1xx-5xx) nor a code (100-599)"),
            ),
        }
    }
    out
}
