//! The rollout state machine, pure: state and fresh counts in, a decision
//! out. The runner applies decisions (store, audit, webhooks); the API feeds
//! it human commands through the same transitions.

use serde::{Deserialize, Serialize};

use crate::analysis::{Analyzer, Counts, Evidence, Input, ThresholdAnalyzer, Verdict};
use crate::metrics::Snapshot;
use crate::sequential::{AnalysisState, SequentialAnalyzer};
use crate::spec::{Method, RolloutSpec};

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
    /// Config revision at which `weight_bp` took effect.
    pub revision: u64,
    pub step_started_ms: u64,
    /// Counts when the step began: the analysis judges what came after.
    pub step_baseline: Snapshot,
    /// Whether a person has approved leaving the current step.
    pub approved: bool,
    /// Why the rollout is where it is, for `dimmer status`.
    pub reason: String,
    #[serde(default)]
    pub evidence: Evidence,
    /// The sequential tests' running state, from the apply on.
    #[serde(default)]
    pub analysis: AnalysisState,
    /// Counts at the last analysis: the next interval is what came after.
    #[serde(default)]
    pub analysed_at: Snapshot,
}

impl RolloutState {
    pub fn new(spec: RolloutSpec, now_ms: u64) -> Self {
        let weight_bp = spec.steps.first().map_or(0, |s| s.weight_bp());
        RolloutState {
            spec,
            phase: Phase::Progressing,
            step: 0,
            weight_bp,
            revision: 0,
            step_started_ms: now_ms,
            step_baseline: Snapshot::default(),
            approved: false,
            reason: "started".into(),
            evidence: Evidence::default(),
            analysis: AnalysisState::default(),
            analysed_at: Snapshot::default(),
        }
    }

    pub fn label(&self) -> String {
        match self.phase {
            Phase::Progressing | Phase::Paused => format!(
                "{:?} at step {}/{} ({}%)",
                self.phase,
                self.step + 1,
                self.spec.steps.len(),
                self.weight_bp as f64 / 100.0
            )
            .to_lowercase(),
            Phase::Completed => "completed (canary is stable)".into(),
            Phase::Aborted => "aborted (canary at 0%)".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Go to `step` at `weight_bp`.
    StepUp {
        step: usize,
        weight_bp: u32,
        reason: String,
    },
    /// Past the last step: the canary takes all traffic.
    Complete {
        reason: String,
    },
    Hold {
        reason: String,
    },
    Abort {
        reason: String,
    },
}

pub fn analyzer_for(method: Method) -> &'static dyn Analyzer {
    match method {
        Method::Sequential => &SequentialAnalyzer,
        Method::Threshold => &ThresholdAnalyzer,
    }
}

/// What the analysis concluded: the decision, its evidence, and the analysis
/// state to keep for the next interval.
pub struct Outcome {
    pub decision: Decision,
    pub evidence: Evidence,
    pub analysis: AnalysisState,
}

impl Decision {
    /// The audit log's name for the decision; `None` for a hold, which is not
    /// a transition.
    pub fn action(&self) -> Option<&'static str> {
        match self {
            Decision::StepUp { .. } => Some("step"),
            Decision::Complete { .. } => Some("complete"),
            Decision::Abort { .. } => Some("abort"),
            Decision::Hold { .. } => None,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Decision::StepUp { reason, .. }
            | Decision::Complete { reason }
            | Decision::Hold { reason }
            | Decision::Abort { reason } => reason,
        }
    }
}

/// Decides what a progressing rollout does now, given its counts.
pub fn decide(state: &RolloutState, now: &Snapshot, now_ms: u64) -> Outcome {
    let mut analysis = state.analysis.clone();
    let (decision, evidence) = decide_with(state, now, now_ms, &mut analysis);
    Outcome {
        decision,
        evidence,
        analysis,
    }
}

fn decide_with(
    state: &RolloutState,
    now: &Snapshot,
    now_ms: u64,
    analysis: &mut AnalysisState,
) -> (Decision, Evidence) {
    let spec = &state.spec;
    let since = now.since(&state.step_baseline);
    let fresh = now.since(&state.analysed_at);
    let with_baseline = state.weight_bp < 10_000;
    let (canary, stable) = (since.version(&spec.canary), since.version(&spec.stable));
    let (i_canary, i_stable) = (fresh.version(&spec.canary), fresh.version(&spec.stable));
    let input = Input {
        analysis: &spec.analysis,
        slo: spec.slo.as_ref(),
        step: Counts {
            canary: &canary,
            baseline: with_baseline.then_some(&stable),
        },
        interval: Counts {
            canary: &i_canary,
            baseline: with_baseline.then_some(&i_stable),
        },
        weight: f64::from(state.weight_bp) / 10_000.0,
        now_ms,
    };
    let verdict = analyzer_for(spec.analysis.method).judge(&input, analysis);
    let evidence = verdict.evidence().clone();
    let hold = |reason: String| (Decision::Hold { reason }, evidence.clone());
    match &verdict {
        Verdict::Fail(why, _) => {
            return (
                Decision::Abort {
                    reason: why.clone(),
                },
                evidence.clone(),
            )
        }
        Verdict::Insufficient(why, _) => return hold(why.clone()),
        Verdict::Pass(_) => {}
    }
    let Some(step) = spec.steps.get(state.step) else {
        return (
            Decision::Complete {
                reason: "past the last step".into(),
            },
            evidence,
        );
    };
    let held_ms = now_ms.saturating_sub(state.step_started_ms);
    let pause_ms = step.pause.as_millis() as u64;
    if held_ms < pause_ms {
        return hold(format!(
            "healthy; pausing {}s of {}s at {}%",
            held_ms / 1000,
            pause_ms / 1000,
            step.percent
        ));
    }
    if step.approval && !state.approved {
        return hold(format!(
            "healthy; waiting for approval to leave {}% (dimmer promote)",
            step.percent
        ));
    }
    next_step(state, "analysis passed").map_or(
        (
            Decision::Complete {
                reason: "analysis passed at the last step".into(),
            },
            evidence.clone(),
        ),
        |d| (d, evidence),
    )
}

/// The step after the current one, or `None` past the last.
pub fn next_step(state: &RolloutState, why: &str) -> Option<Decision> {
    let next = state.step + 1;
    state.spec.steps.get(next).map(|s| Decision::StepUp {
        step: next,
        weight_bp: s.weight_bp(),
        reason: format!(
            "{why}: {}% → {}%",
            state.weight_bp as f64 / 100.0,
            s.percent
        ),
    })
}

/// Applies a decision to the state; `now` is the snapshot to judge the next
/// step against. Returns whether the canary's weight changed.
pub fn apply(state: &mut RolloutState, decision: &Decision, now: &Snapshot, now_ms: u64) -> bool {
    let before = state.weight_bp;
    if !now.versions.is_empty() {
        state.analysed_at = now.clone();
    }
    match decision {
        Decision::StepUp {
            step,
            weight_bp,
            reason,
        } => {
            state.step = *step;
            state.weight_bp = *weight_bp;
            state.step_started_ms = now_ms;
            state.step_baseline = now.clone();
            state.approved = false;
            state.reason = reason.clone();
        }
        Decision::Complete { reason } => {
            state.phase = Phase::Completed;
            state.weight_bp = 10_000;
            state.reason = reason.clone();
        }
        Decision::Abort { reason } => {
            state.phase = Phase::Aborted;
            state.weight_bp = 0;
            state.reason = reason.clone();
        }
        Decision::Hold { reason } => state.reason = reason.clone(),
    }
    state.weight_bp != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::VersionCounts;

    fn spec() -> RolloutSpec {
        RolloutSpec::from_yaml(
            "name: checkout\nstable: v1\ncanary: v2\nidentity: [{header: x-user-id}]\n\
             steps:\n- {percent: 1, pause: 10s}\n- {percent: 50, approval: true}\n- {percent: 100}\n\
             analysis: {min_requests: 100, method: threshold}\n",
        )
        .unwrap()
    }

    fn snap(v1: (f64, f64), v2: (f64, f64)) -> Snapshot {
        let c = |(ok, err): (f64, f64)| {
            let mut c = VersionCounts::default();
            c.by_class.insert("2xx".into(), ok);
            c.by_class.insert("5xx".into(), err);
            c
        };
        Snapshot {
            versions: [("v1".to_string(), c(v1)), ("v2".to_string(), c(v2))].into(),
        }
    }

    #[test]
    fn walks_the_steps_with_pauses_and_a_gate() {
        let mut s = RolloutState::new(spec(), 0);
        assert_eq!(s.weight_bp, 100);
        let few = snap((5000.0, 0.0), (50.0, 0.0));
        let d = decide(&s, &few, 60_000).decision;
        assert_eq!(
            d,
            Decision::Hold {
                reason: "canary has 50 of 100 requests needed".into()
            }
        );

        let enough = snap((10_000.0, 0.0), (150.0, 0.0));
        let d = decide(&s, &enough, 5_000).decision;
        assert!(
            matches!(d, Decision::Hold { ref reason } if reason.contains("pausing 5s of 10s")),
            "{d:?}"
        );
        let d = decide(&s, &enough, 10_000).decision;
        assert!(
            matches!(
                d,
                Decision::StepUp {
                    step: 1,
                    weight_bp: 5000,
                    ..
                }
            ),
            "{d:?}"
        );
        assert!(apply(&mut s, &d, &enough, 10_000));

        // The next step judges only what came after it began.
        let d = decide(&s, &enough, 20_000).decision;
        assert!(
            matches!(d, Decision::Hold { ref reason } if reason.contains("canary has 0 of 100")),
            "{d:?}"
        );
        let more = snap((20_000.0, 0.0), (5000.0, 0.0));
        let d = decide(&s, &more, 20_000).decision;
        assert!(
            matches!(d, Decision::Hold { ref reason } if reason.contains("approval")),
            "{d:?}"
        );
        s.approved = true;
        let d = decide(&s, &more, 20_000).decision;
        assert!(apply(&mut s, &d, &more, 20_000));
        assert_eq!(s.weight_bp, 10_000);
        let all = snap((20_000.0, 0.0), (9000.0, 0.0));
        let d = decide(&s, &all, 30_000).decision;
        assert!(matches!(d, Decision::Complete { .. }), "{d:?}");
        apply(&mut s, &d, &all, 30_000);
        assert_eq!((s.phase, s.weight_bp), (Phase::Completed, 10_000));
    }

    #[test]
    fn aborts_to_zero_with_evidence() {
        let mut s = RolloutState::new(spec(), 0);
        let bad = snap((10_000.0, 5.0), (900.0, 100.0));
        let Outcome {
            decision: d,
            evidence: ev,
            ..
        } = decide(&s, &bad, 1000);
        assert!(matches!(d, Decision::Abort { .. }), "{d:?}");
        assert_eq!(ev.canary_errors, 100.0);
        assert!(apply(&mut s, &d, &bad, 1000));
        assert_eq!((s.phase, s.weight_bp), (Phase::Aborted, 0));
    }

    #[test]
    fn never_promotes_on_no_data() {
        let s = RolloutState::new(spec(), 0);
        for t in [0, 60_000, 3_600_000] {
            let d = decide(&s, &Snapshot::default(), t).decision;
            assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
        }
    }
}
