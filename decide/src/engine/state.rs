//! A rollout's state as the store keeps it: its spec, phase, step, weight
//! and evidence so far.

use serde::{Deserialize, Serialize};

use crate::analysis::{AnalysisState, Evidence};
use crate::counts::Snapshot;
use crate::spec::{RolloutSpec, StepTraffic};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Progressing,
    Paused,
    /// The canary serves everyone: it is the new stable.
    Completed,
    /// The canary serves no one.
    Aborted,
}

impl Phase {
    /// As in the API and the stats: `progressing`, `paused`, ...
    pub fn name(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Completed => "completed",
            Phase::Aborted => "aborted",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Phase::Completed | Phase::Aborted)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub spec: RolloutSpec,
    pub phase: Phase,
    /// Index into `spec.steps` of the step being held.
    pub step: usize,
    /// The canary's weight now, in basis points.
    pub weight_bp: u32,
    /// Config revision at which `weight_bp` took effect, and when.
    pub revision: u64,
    #[serde(default)]
    pub revision_ms: u64,
    pub step_started_ms: u64,
    /// Counts when the step's data began: the analysis judges only what came
    /// after. `None` until the first snapshot taken after the step began: a
    /// step without a baseline is never judged.
    pub step_baseline: Option<Snapshot>,
    /// Whether a person has approved leaving the current step.
    pub approved: bool,
    /// Why the rollout is where it is, for `dimmer status`.
    pub reason: String,
    #[serde(default)]
    pub evidence: Evidence,
    /// Every test of the analysis, built from the spec at apply.
    pub analysis: AnalysisState,
    /// Counts at the last analysis: the next interval is what came after.
    pub analysed_at: Option<Snapshot>,
    /// Since when no metrics could be read, if they cannot now.
    #[serde(default)]
    pub metrics_lost_since_ms: Option<u64>,
    /// A flag turned off by a person (`dimmer flag off`): everyone gets the
    /// default variant, whatever the step.
    #[serde(default)]
    pub flag_off: bool,
    /// An A/B/n arm: the other arms' weight now, in basis points, which
    /// the stable's share is short of. Derived from the other arms by the
    /// runner before each look, so never stored.
    #[serde(skip)]
    pub peers_bp: u32,
}

impl RolloutState {
    pub fn new(spec: RolloutSpec, now_ms: u64) -> Self {
        let weight_bp = spec.steps.first().map_or(0, |s| s.weight_bp());
        let analysis = AnalysisState::for_spec(&spec.analysis);
        RolloutState {
            spec,
            phase: Phase::Progressing,
            step: 0,
            weight_bp,
            revision: 0,
            revision_ms: now_ms,
            step_started_ms: now_ms,
            step_baseline: None,
            approved: false,
            reason: "started".into(),
            evidence: Evidence::default(),
            analysis,
            analysed_at: None,
            metrics_lost_since_ms: None,
            flag_off: false,
            peers_bp: 0,
        }
    }

    pub fn label(&self) -> String {
        match &self.spec.arm_of {
            Some(group) => format!(
                "{} — arm {} of A/B/n {group}",
                self.own_label(),
                self.spec.canary
            ),
            None => self.own_label(),
        }
    }

    fn own_label(&self) -> String {
        let traffic = self.spec.steps.get(self.step).map(|s| s.traffic);
        let blue_green = self.spec.blue_green().is_some();
        match self.phase {
            Phase::Progressing | Phase::Paused if traffic == Some(StepTraffic::Preview) => format!(
                "{} at step {}/{} (0%: previewing {} to the people overrides name)",
                self.phase.name(),
                self.step + 1,
                self.spec.steps.len(),
                self.spec.canary
            ),
            Phase::Progressing | Phase::Paused if traffic == Some(StepTraffic::Shadow) => format!(
                "{} at step {}/{} (0%: judging the requests Envoy mirrors to {})",
                self.phase.name(),
                self.step + 1,
                self.spec.steps.len(),
                self.spec.canary
            ),
            Phase::Progressing | Phase::Paused if blue_green => format!(
                "{} at step {}/{} (switched to {}; {} kept ready to switch back)",
                self.phase.name(),
                self.step + 1,
                self.spec.steps.len(),
                self.spec.canary,
                self.spec.stable
            ),
            Phase::Completed if blue_green => format!(
                "completed (switched to {}; {} released)",
                self.spec.canary, self.spec.stable
            ),
            Phase::Completed if self.spec.arm_of.is_some() && self.weight_bp < 10_000 => format!(
                "completed at {}%: passed every step; dimmer promote makes it the winner",
                self.weight_bp as f64 / 100.0
            ),
            Phase::Completed if self.spec.arm_of.is_some() => {
                format!("completed ({} won: it serves everyone)", self.spec.canary)
            }
            Phase::Aborted if blue_green => {
                format!("aborted (switched back to {})", self.spec.stable)
            }
            Phase::Progressing | Phase::Paused => format!(
                "{:?} at step {}/{} ({}%)",
                self.phase,
                self.step + 1,
                self.spec.steps.len(),
                self.weight_bp as f64 / 100.0
            )
            .to_lowercase(),
            Phase::Completed if self.spec.is_flag() => {
                format!("completed ({} serves everyone)", self.spec.canary)
            }
            Phase::Aborted if self.spec.is_flag() => {
                format!("aborted ({} at 0%)", self.spec.canary)
            }
            Phase::Completed => "completed (canary is stable)".into(),
            Phase::Aborted => "aborted (canary at 0%)".into(),
        }
    }
}
