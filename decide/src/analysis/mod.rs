//! Judging canary against baseline. Every method sees the same tests: one
//! constructor ([`AnalysisState::for_spec`]) builds all of a rollout's tests
//! from its spec and one call ([`AnalysisState::feed`]) feeds them all each
//! interval, so no guard can be declared and never fed. A method
//! ([`Analyzer`]) only decides what the numbers mean:
//!
//! - [`sequential`]: anytime-valid e-processes (the default);
//! - [`threshold`]: fixed limits on each step's counts.
//!
//! Guards, and where each method checks them:
//!
//! | guard | sequential | threshold |
//! |---|---|---|
//! | enough requests in each arm (`min_requests`) | hold | hold |
//! | error rate against the baseline | e-process, abort | pp and ratio, abort |
//! | latency against the baseline | e-process per bound, abort | percentile ratio, abort |
//! | error-rate ceiling (`error_rate.max_percent`) | e-process, abort | abort |
//! | latency ceiling (`latency.max_ms`) | e-process, abort | abort |
//! | SLO burn rate (`slo`) | two windows, abort | the step, abort |
//! | sample ratio (canary share against weight) | hold | hold |
//! | each cohort dimension's mix against the baseline's | hold | hold |
//! | the team's `ratio` and `mean` metrics | safe t-test, abort | the step's means, abort |
//! | the team's `gauge` metrics | beyond its limit: hold; at `consecutive` looks, abort | the same |
//! | a metric with no value | hold | hold |
//! | evidence of safety: every comparative test's bound within its tolerance (`promote_on: evidence`) | hold | hold |
//!
//! May import: `spec`, `counts`.

mod analyzer;
pub mod eprocess;
mod format;
mod input;
pub mod mean;
mod method;
pub mod mix;
pub mod safety;
pub mod safety_report;
pub mod sequential;
pub mod state;
pub mod team_metrics;
pub mod threshold;

#[cfg(test)]
mod guard_tests;

pub use analyzer::{enough_data, sample_ratio, Analyzer, Evidence, Verdict};
pub use format::fmt_e;
pub use input::{Counts, Input};
pub use method::analyzer_for;
pub use sequential::SequentialAnalyzer;
pub use state::AnalysisState;
pub use threshold::ThresholdAnalyzer;
