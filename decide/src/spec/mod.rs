//! The specs an operator writes and `dimmer apply`s: a rollout's, a flag's
//! (which becomes the rollout that carries it), and the team's own metrics
//! inside either. Each section's type sits beside its checks; every check
//! names the field it refuses, with its line when the spec came from YAML.
//!
//! May import: `dimmer_core` (the filter's config, which a spec becomes).

mod analysis;
mod arms;
mod context;
mod counting;
mod duration;
mod error;
pub mod flag;
mod flag_rollout;
pub mod hooks;
mod http_syntax;
pub mod metric;
mod parse;
mod rollout;
mod steps;
mod strict;
#[cfg(test)]
mod tests;
pub mod yaml_guard;
pub mod yaml_lines;

pub use analysis::{
    Analysis, ErrorRateCheck, LatencyCheck, Method, MetricsLoss, MetricsLossPolicy, OnInconclusive,
    PromoteOn, Slo,
};
pub use arms::{arm_name, MAX_ARMS};
pub use counting::{CountedBy, Counting};
pub use error::{check_name, SpecError, MAX_PAUSE};
pub use flag::{FlagMeta, FlagSpec, Kind};
pub use flag_rollout::AuthoredSpec;
pub use hooks::{Hook, HookKind, HookResult, PinToCanary, Probe};
pub use parse::document_count;
pub use rollout::{RolloutSpec, MAX_WEBHOOKS};
pub use steps::{BlueGreen, Step, StepTraffic, Strategy, MAX_STEPS};
