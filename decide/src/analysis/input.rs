//! What an analysis method judges: the counts of a step and of the last
//! interval, and the canary's configured share.

use crate::counts::VersionCounts;
use crate::spec::{Analysis, Slo};

/// Counts of the canary and of the baseline (none when the canary has all
/// traffic) over some span.
#[derive(Debug, Clone, Copy)]
pub struct Counts<'a> {
    pub canary: &'a VersionCounts,
    pub baseline: Option<&'a VersionCounts>,
}

pub struct Input<'a> {
    pub analysis: &'a Analysis,
    pub slo: Option<&'a Slo>,
    pub step: Counts<'a>,
    pub interval: Counts<'a>,
    /// The canary's configured share of the requests of canary and
    /// baseline together, 0 to 1: its share of users, unless other arms of
    /// an A/B/n take some.
    pub weight: f64,
    pub now_ms: u64,
}
