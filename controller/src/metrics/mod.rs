//! The metrics layer: where the counts the analysis reads come from. The
//! filter's own stats from one Envoy's admin or from Prometheus for every
//! proxy, behind the narrow [`MetricsSource`] trait (with a fake for tests);
//! and the team's own metrics from Prometheus or an HTTP JSON endpoint
//! (`providers`).
//!
//! Owns I/O only: what it reads becomes `dimmer_decide::counts` and
//! `dimmer_decide::analysis::team_metrics::Reading`, judged in that crate.
//! May import: `dimmer_decide`, never the service, fleet, API or CLI.

pub mod envoy_admin;
pub mod exposition;
pub mod fake;
mod http;
pub mod prometheus;
pub mod providers;
mod source;
#[cfg(test)]
mod tests;

pub use exposition::parse_exposition;
pub use source::{BoxFuture, MetricsError, MetricsSource};
