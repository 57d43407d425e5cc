//! The rollout state machine, pure: state and fresh counts in, a decision
//! out. The runner applies decisions (store, audit, webhooks); the API feeds
//! it human commands through the same transitions.

use crate::analysis::team_metrics::{self, Reading};
use crate::analysis::{
    analyzer_for, safety_report, AnalysisState, Counts, Evidence, Input, Verdict,
};
use crate::counts::Snapshot;
use crate::spec::{MetricsLossPolicy, OnInconclusive, PromoteOn, StepTraffic};

use super::state::{Phase, RolloutState};

/// How the reason of a rollout held at an approval gate begins: healthy,
/// its pause over, only a person's `promote` lets it go on.
pub const AWAITING_APPROVAL: &str = "healthy; waiting for approval";

/// Whether `state` waits for nothing but a person's approval.
pub fn awaits_approval(state: &RolloutState) -> bool {
    state.phase == Phase::Progressing && state.reason.starts_with(AWAITING_APPROVAL)
}

/// How the reason of a rollout begins once a step has waited past its
/// `max_duration` for evidence of safety (`on_inconclusive: hold`).
pub const INCONCLUSIVE: &str = "inconclusive";

/// Whether `state` is held past its step's `max_duration` without evidence.
pub fn is_inconclusive(state: &RolloutState) -> bool {
    state.phase == Phase::Progressing && state.reason.starts_with(INCONCLUSIVE)
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

/// What one look at a progressing rollout concluded: the decision, the
/// evidence, and the rollout's next state with the decision applied.
pub struct Outcome {
    pub decision: Decision,
    pub evidence: Evidence,
    pub next: RolloutState,
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

/// What the runner saw when it looked: the cumulative counts, or why there
/// are none.
#[derive(Debug, Clone, Copy)]
pub enum Observation<'a> {
    Counts(&'a Snapshot),
    Lost(&'a str),
}

/// One look at a progressing rollout. `lagging` names the live proxies that
/// have not applied its current weights: a step up waits for them, so the
/// next step is judged on the traffic it was meant to have; an abort never
/// waits.
pub fn advance(
    state: &RolloutState,
    seen: Observation<'_>,
    now_ms: u64,
    lagging: Option<String>,
) -> Outcome {
    advance_with(state, seen, None, now_ms, lagging)
}

/// [`advance`], with the latest reading of the team's own metrics
/// (`analysis.metrics`), if the rollout has any.
pub fn advance_with(
    state: &RolloutState,
    seen: Observation<'_>,
    reading: Option<&Reading>,
    now_ms: u64,
    lagging: Option<String>,
) -> Outcome {
    let mut next = state.clone();
    let snap = match seen {
        Observation::Lost(why) => {
            let since = *next.metrics_lost_since_ms.get_or_insert(now_ms);
            let decision = metrics_lost(state, why, now_ms.saturating_sub(since));
            apply(&mut next, &decision, None, now_ms);
            return Outcome {
                decision,
                evidence: state.evidence.clone(),
                next,
            };
        }
        Observation::Counts(snap) => snap,
    };
    next.metrics_lost_since_ms = None;
    let Some(baseline) = &state.step_baseline else {
        // No series at all is not a baseline: counts that appear later
        // would all look new, even those from before the step (a source
        // that briefly answers empty, an earlier rollout of the same name).
        // The filter defines its counters when it takes the config, so
        // they exist, at zero, before any traffic.
        if snap.is_empty() {
            let decision = Decision::Hold {
                reason: "holding: no counts reported for this rollout yet; the step's baseline is taken once the proxies report it".into(),
            };
            next.reason = decision.reason().to_owned();
            return Outcome {
                decision,
                evidence: state.evidence.clone(),
                next,
            };
        }
        // No counts from when the step began: these are its baseline, and
        // only what comes after them is the step's data.
        next.step_baseline = Some(snap.clone());
        next.analysed_at = Some(snap.clone());
        let decision = Decision::Hold {
            reason: format!(
                "step baseline taken at {}%; judging the traffic from now on",
                state.weight_bp as f64 / 100.0
            ),
        };
        next.reason = decision.reason().to_owned();
        return Outcome {
            decision,
            evidence: Evidence::default(),
            next,
        };
    };
    let analysed_at = state.analysed_at.as_ref().unwrap_or(baseline);
    let (mut decision, evidence) = decide(
        state,
        snap,
        reading,
        baseline,
        analysed_at,
        now_ms,
        &mut next.analysis,
    );
    if let Some(lagging) = lagging {
        if matches!(
            decision,
            Decision::StepUp { .. } | Decision::Complete { .. }
        ) {
            decision = Decision::Hold {
                reason: format!("healthy; {lagging}"),
            };
        }
    }
    next.evidence = evidence.clone();
    next.analysed_at = Some(snap.clone());
    apply(&mut next, &decision, Some(snap), now_ms);
    Outcome {
        decision,
        evidence,
        next,
    }
}

fn metrics_lost(state: &RolloutState, why: &str, for_ms: u64) -> Decision {
    let lost = humantime::format_duration(std::time::Duration::from_secs(for_ms / 1000));
    match state.spec.analysis.metrics_loss.policy {
        MetricsLossPolicy::Hold => Decision::Hold {
            reason: format!("holding: no metrics for {lost} (metrics_loss: hold): {why}"),
        },
        MetricsLossPolicy::Abort => {
            let after = state.spec.analysis.metrics_loss.after;
            if for_ms >= after.as_millis() as u64 {
                Decision::Abort {
                    reason: format!(
                        "no metrics for {lost}, the limit of metrics_loss (abort after {}): {why}",
                        humantime::format_duration(after)
                    ),
                }
            } else {
                Decision::Hold {
                    reason: format!(
                        "holding: no metrics for {lost} (metrics_loss: abort after {}): {why}",
                        humantime::format_duration(after)
                    ),
                }
            }
        }
    }
}

/// The verdict on the step's data and what it means for the steps.
fn decide(
    state: &RolloutState,
    now: &Snapshot,
    reading: Option<&Reading>,
    baseline: &Snapshot,
    analysed_at: &Snapshot,
    now_ms: u64,
    analysis: &mut AnalysisState,
) -> (Decision, Evidence) {
    let spec = &state.spec;
    let since = now.since(baseline);
    let fresh = now.since(analysed_at);
    let with_baseline = state.weight_bp < 10_000;
    // A shadow step judges the canary on what Envoy mirrored to it, which
    // the filter counts apart from the users' requests.
    let canary_key = match spec.steps.get(state.step).map(|s| s.traffic) {
        Some(StepTraffic::Shadow) => crate::counts::shadow_key(&spec.canary),
        _ => spec.canary.clone(),
    };
    let (canary, stable) = (since.version(&canary_key), since.version(&spec.stable));
    let (i_canary, i_stable) = (fresh.version(&canary_key), fresh.version(&spec.stable));
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
        // The canary's expected share of the requests of canary and
        // baseline together: other arms of an A/B/n take theirs from both.
        weight: f64::from(state.weight_bp)
            / f64::from(10_000u32.saturating_sub(state.peers_bp).max(1)),
        now_ms,
    };
    analysis.feed(&input);
    analysis.feed_metrics(&spec.analysis, reading, now_ms, with_baseline);
    let mix = crate::analysis::mix::rows(&spec.analysis.dimensions, &canary, &stable);
    let verdict = analyzer_for(spec.analysis.method).judge(&input, analysis);
    let mut evidence = verdict.evidence().clone();
    evidence.metrics = team_metrics::evidence(&spec.analysis.metrics, &analysis.metrics);
    evidence.mix = mix;
    if with_baseline {
        evidence.safety = safety_report::rows(&spec.analysis, analysis);
    }
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
    if held_ms < pause_ms && spec.blue_green().is_some() && step.percent >= 100.0 {
        return hold(format!(
            "healthy; {} kept ready for an instant switch back (dimmer abort) for {}s more",
            spec.stable,
            (pause_ms - held_ms) / 1000
        ));
    }
    if held_ms < pause_ms {
        return hold(format!(
            "healthy; pausing {}s of {}s at {}%",
            held_ms / 1000,
            pause_ms / 1000,
            step.percent
        ));
    }
    let gated = spec.analysis.promote_on == PromoteOn::Evidence && with_baseline;
    let waiting = if gated {
        safety_report::waiting_for(&evidence.safety, analysis)
    } else {
        None
    };
    if let Some(wait) = waiting {
        let max = step.max_duration.or(spec.analysis.max_duration);
        let Some(max) = max.filter(|m| held_ms >= m.as_millis() as u64) else {
            return hold(wait);
        };
        let within = humantime::format_duration(std::time::Duration::from_secs(max.as_secs()));
        return match spec.analysis.on_inconclusive {
            OnInconclusive::Abort => (
                Decision::Abort {
                    reason: format!(
                        "{INCONCLUSIVE} at {}% after {within} (max_duration; on_inconclusive: abort): {wait}",
                        step.percent
                    ),
                },
                evidence,
            ),
            OnInconclusive::Hold => hold(format!(
                "{INCONCLUSIVE} at {}% after {within} (max_duration): {wait}; holding — never promoted without evidence: promote by hand with a reason, or abort",
                step.percent
            )),
        };
    }
    if step.approval && !state.approved {
        return hold(format!(
            "{AWAITING_APPROVAL} to leave {}% (dimmer promote)",
            step.percent
        ));
    }
    let passed = if gated {
        format!(
            "evidence of safety ({})",
            safety_report::all_within(&evidence.safety)
        )
    } else if with_baseline {
        "no alarm (promote_on: no_alarm)".to_owned()
    } else {
        "analysis passed".to_owned()
    };
    next_step(state, &passed).map_or(
        (
            Decision::Complete {
                reason: format!("{passed} at the last step"),
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

/// Applies a decision to the state. A step up takes `now` as the new step's
/// baseline: the counts the decision was made on, taken before the new
/// weights were served. Without them (a person's command) the new step has
/// no baseline until the runner's next look. Returns whether the canary's
/// weight changed.
pub fn apply(
    state: &mut RolloutState,
    decision: &Decision,
    now: Option<&Snapshot>,
    now_ms: u64,
) -> bool {
    let before = state.weight_bp;
    match decision {
        Decision::StepUp {
            step,
            weight_bp,
            reason,
        } => {
            state.step = *step;
            state.weight_bp = *weight_bp;
            state.step_started_ms = now_ms;
            state.step_baseline = now.cloned();
            state.analysed_at = now.cloned();
            state.analysis.begin_step();
            // The new step has gathered nothing yet: what a person's abort
            // or pause records now is this step's evidence, not the last's
            // (the step up's own record keeps the numbers it was made on).
            state.evidence = Evidence::default();
            state.approved = false;
            state.reason = reason.clone();
        }
        Decision::Complete { reason } => {
            state.phase = Phase::Completed;
            // An A/B/n arm stays in its lane: a person picks the winner.
            if state.spec.arm_of.is_none() {
                state.weight_bp = 10_000;
            }
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
