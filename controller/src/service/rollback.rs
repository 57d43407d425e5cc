//! An abort's way to the proxies: when it was decided, and when the last
//! live proxy had applied it.

use serde::Serialize;

/// One abort on its way to the proxies.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    /// The revision that serves the canary at 0%.
    pub revision: u64,
    pub decided_ms: u64,
    /// When every live proxy had applied it (to the runner's 250 ms tick).
    pub applied_ms: Option<u64>,
    /// Decided by a person, not by the analysis.
    pub by_person: bool,
    /// From the start of the step to the abort: how long the regression
    /// ran before it was caught.
    pub detection_lag_ms: u64,
}
