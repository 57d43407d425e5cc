//! The rollout state machine, pure: state and fresh counts in, a decision
//! out. The runner applies decisions (store, audit, webhooks); the API feeds
//! it human commands through the same transitions.

use serde::{Deserialize, Serialize};

use crate::analysis::team_metrics::{self, Reading};
use crate::analysis::{analyzer_for, AnalysisState, Counts, Evidence, Input, Verdict};
use crate::metrics::Snapshot;
use crate::spec::{MetricsLossPolicy, RolloutSpec, StepTraffic};

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
        Some(StepTraffic::Shadow) => crate::metrics::shadow_key(&spec.canary),
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
        Snapshot::from_versions([("v1".to_string(), c(v1)), ("v2".to_string(), c(v2))].into())
    }

    fn counts(s: &RolloutState, snap: &Snapshot, now_ms: u64) -> Outcome {
        advance(s, Observation::Counts(snap), now_ms, None)
    }

    /// A state whose current step has `baseline` as its baseline.
    fn started(baseline: &Snapshot) -> RolloutState {
        let s = RolloutState::new(spec(), 0);
        let o = counts(&s, baseline, 0);
        assert!(
            matches!(o.decision, Decision::Hold { ref reason } if reason.contains("baseline taken"))
        );
        o.next
    }

    #[test]
    fn a_phase_is_named_as_the_api_writes_it() {
        for p in [
            Phase::Progressing,
            Phase::Paused,
            Phase::Completed,
            Phase::Aborted,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.name());
        }
    }

    #[test]
    fn walks_the_steps_with_pauses_and_a_gate() {
        let zero = snap((0.0, 0.0), (0.0, 0.0));
        let mut s = started(&zero);
        assert_eq!(s.weight_bp, 100);
        let few = snap((5000.0, 0.0), (50.0, 0.0));
        let d = counts(&s, &few, 60_000).decision;
        assert_eq!(
            d,
            Decision::Hold {
                reason: "canary has 50 of 100 requests needed".into()
            }
        );

        let enough = snap((10_000.0, 0.0), (150.0, 0.0));
        let d = counts(&s, &enough, 5_000).decision;
        assert!(
            matches!(d, Decision::Hold { ref reason } if reason.contains("pausing 5s of 10s")),
            "{d:?}"
        );
        let o = counts(&s, &enough, 10_000);
        assert!(
            matches!(
                o.decision,
                Decision::StepUp {
                    step: 1,
                    weight_bp: 5000,
                    ..
                }
            ),
            "{:?}",
            o.decision
        );
        s = o.next;
        assert_eq!(s.weight_bp, 5000);

        // The next step judges only what came after it began.
        let d = counts(&s, &enough, 20_000).decision;
        assert!(
            matches!(d, Decision::Hold { ref reason } if reason.contains("canary has 0 of 100")),
            "{d:?}"
        );
        let more = snap((20_000.0, 0.0), (5000.0, 0.0));
        let d = counts(&s, &more, 20_000).decision;
        assert!(
            matches!(d, Decision::Hold { ref reason } if reason.contains("approval")),
            "{d:?}"
        );
        s.approved = true;
        s = counts(&s, &more, 20_000).next;
        assert_eq!(s.weight_bp, 10_000);
        let all = snap((20_000.0, 0.0), (9000.0, 0.0));
        let o = counts(&s, &all, 30_000);
        assert!(
            matches!(o.decision, Decision::Complete { .. }),
            "{:?}",
            o.decision
        );
        assert_eq!((o.next.phase, o.next.weight_bp), (Phase::Completed, 10_000));
    }

    fn blue_green() -> RolloutSpec {
        RolloutSpec::from_yaml(
            "name: checkout\nstable: v1\ncanary: v2\nidentity: [{header: x-user-id}]\n\
             overrides: [{header: x-preview, values: [qa], version: v2}]\n\
             strategy: {blue_green: {keep_previous_for: 10m}}\n\
             analysis: {min_requests: 100, method: threshold}\n",
        )
        .unwrap()
    }

    #[test]
    fn blue_green_previews_then_switches_once_and_keeps_blue_ready() {
        let zero = snap((0.0, 0.0), (0.0, 0.0));
        let s = RolloutState::new(blue_green(), 0);
        assert_eq!(s.weight_bp, 0, "green gets no users before the switch");
        assert!(s.label().contains("previewing v2"), "{}", s.label());
        let s = counts(&s, &zero, 0).next;
        // Only the preview's requests reach green: it is judged on them.
        let few = snap((10_000.0, 0.0), (40.0, 0.0));
        let d = counts(&s, &few, 10_000).decision;
        assert!(
            matches!(d, Decision::Hold { ref reason } if reason.contains("canary has 40 of 100")),
            "{d:?}"
        );
        let enough = snap((10_000.0, 0.0), (150.0, 0.0));
        let o = counts(&s, &enough, 20_000);
        assert!(
            matches!(o.decision, Decision::Hold { ref reason } if reason.contains("approval")),
            "no sample-ratio hold at 0%, and the switch is gated: {:?}",
            o.decision
        );
        let mut s = o.next;
        s.approved = true;
        let o = counts(&s, &enough, 20_000);
        assert!(
            matches!(
                o.decision,
                Decision::StepUp {
                    step: 1,
                    weight_bp: 10_000,
                    ..
                }
            ),
            "one step to 100%: {:?}",
            o.decision
        );
        let s = o.next;
        assert!(s.label().contains("v1 kept ready"), "{}", s.label());
        let later = snap((10_000.0, 0.0), (5000.0, 0.0));
        let d = counts(&s, &later, 80_000).decision;
        assert!(
            matches!(d, Decision::Hold { ref reason } if reason.contains("instant switch back")),
            "{d:?}"
        );
        // A bad green within the window switches back to blue at once.
        let bad = snap((10_000.0, 0.0), (5000.0, 900.0));
        let o = counts(&s, &bad, 80_000);
        assert!(
            matches!(o.decision, Decision::Abort { .. }),
            "{:?}",
            o.decision
        );
        assert_eq!(o.next.weight_bp, 0);
        assert!(o.next.label().contains("switched back to v1"));
        // A good one is done once the window is over.
        let o = counts(&s, &later, 20_000 + 600_000);
        assert!(
            matches!(o.decision, Decision::Complete { .. }),
            "{:?}",
            o.decision
        );
        assert!(o.next.label().contains("switched to v2"));
    }

    #[test]
    fn a_shadow_step_judges_the_mirrored_requests_only() {
        let spec = RolloutSpec::from_yaml(
            "name: checkout\nstable: v1\ncanary: v2\nidentity: [{header: x-user-id}]\n\
             steps: [{percent: 0, traffic: shadow}, {percent: 10}]\n\
             analysis: {min_requests: 100, method: threshold}\n",
        )
        .unwrap();
        let with_shadow = |users: (f64, f64), shadow: (f64, f64)| {
            let stable = if shadow.0 > 0.0 { 20_000.0 } else { 10_000.0 };
            let mut s = snap((stable, 0.0), users);
            let c = s.counts_mut("", &crate::metrics::shadow_key("v2"));
            c.by_class.insert("2xx".into(), shadow.0);
            c.by_class.insert("5xx".into(), shadow.1);
            s
        };
        let s = RolloutState::new(spec, 0);
        assert!(s.label().contains("mirrors to v2"), "{}", s.label());
        let s = counts(&s, &with_shadow((0.0, 0.0), (0.0, 0.0)), 0).next;
        // Users' requests on v2 (a stray override, say) do not count...
        let d = counts(&s, &with_shadow((500.0, 0.0), (20.0, 0.0)), 5000).decision;
        assert!(
            matches!(d, Decision::Hold { ref reason } if reason.contains("canary has 20 of 100")),
            "{d:?}"
        );
        // ...the shadow's errors do.
        let o = counts(&s, &with_shadow((500.0, 0.0), (300.0, 100.0)), 10_000);
        assert!(
            matches!(o.decision, Decision::Abort { .. }),
            "{:?}",
            o.decision
        );
        let o = counts(&s, &with_shadow((0.0, 0.0), (300.0, 0.0)), 10_000);
        assert!(
            matches!(
                o.decision,
                Decision::StepUp {
                    step: 1,
                    weight_bp: 1000,
                    ..
                }
            ),
            "{:?}",
            o.decision
        );
    }

    #[test]
    fn aborts_to_zero_with_evidence() {
        let s = started(&snap((0.0, 0.0), (0.0, 0.0)));
        let bad = snap((10_000.0, 5.0), (900.0, 100.0));
        let o = counts(&s, &bad, 1000);
        assert!(
            matches!(o.decision, Decision::Abort { .. }),
            "{:?}",
            o.decision
        );
        assert_eq!(o.evidence.canary_errors, 100.0);
        assert_eq!((o.next.phase, o.next.weight_bp), (Phase::Aborted, 0));
    }

    #[test]
    fn never_promotes_on_no_data() {
        let s = RolloutState::new(spec(), 0);
        for t in [0, 60_000, 3_600_000] {
            let o = counts(&s, &Snapshot::default(), t);
            assert!(
                matches!(o.decision, Decision::Hold { ref reason } if reason.contains("no counts reported")),
                "{:?}",
                o.decision
            );
            assert!(o.next.step_baseline.is_none());
        }
        let s = started(&snap((0.0, 0.0), (0.0, 0.0)));
        for t in [0, 60_000, 3_600_000] {
            let d = counts(&s, &Snapshot::default(), t).decision;
            assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
            let d = advance(&s, Observation::Lost("refused"), t, None).decision;
            assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
        }
    }

    #[test]
    fn the_first_look_after_apply_ignores_what_envoy_counted_before() {
        // An earlier rollout of the same name left bad counts in Envoy.
        let old = snap((10_000.0, 5.0), (900.0, 100.0));
        let s = RolloutState::new(spec(), 0);
        let o = counts(&s, &old, 1000);
        assert!(
            matches!(o.decision, Decision::Hold { .. }),
            "{:?}",
            o.decision
        );
        assert_eq!(o.next.phase, Phase::Progressing);
        // Healthy traffic from then on is judged on its own.
        let later = snap((20_000.0, 5.0), (1100.0, 100.0));
        let o = counts(&o.next, &later, 20_000);
        assert!(
            matches!(o.decision, Decision::StepUp { .. }),
            "{:?}",
            o.decision
        );
    }

    #[test]
    fn a_step_entered_without_counts_is_not_left_on_old_data() {
        // A person promotes to the last step while metrics are down.
        let s = started(&snap((0.0, 0.0), (0.0, 0.0)));
        let mut s = advance(&s, Observation::Lost("refused"), 1000, None).next;
        let d = next_step(&s, "promoted by alice: ok").unwrap();
        apply(&mut s, &d, None, 2000);
        let d = next_step(&s, "promoted by alice: ok").unwrap();
        apply(&mut s, &d, None, 2000);
        assert_eq!((s.step, s.weight_bp), (2, 10_000));
        // Metrics come back with everything Envoy ever counted: a baseline,
        // not the last step's data.
        let back = snap((50_000.0, 0.0), (5000.0, 0.0));
        let o = counts(&s, &back, 60_000);
        assert!(
            matches!(o.decision, Decision::Hold { ref reason } if reason.contains("baseline")),
            "{:?}",
            o.decision
        );
        let d = counts(&o.next, &back, 70_000).decision;
        assert!(
            matches!(d, Decision::Hold { ref reason } if reason.contains("canary has 0")),
            "{d:?}"
        );
        let done = snap((50_000.0, 0.0), (5200.0, 0.0));
        let d = counts(&o.next, &done, 80_000).decision;
        assert!(matches!(d, Decision::Complete { .. }), "{d:?}");
    }

    #[test]
    fn losing_metrics_holds_or_aborts_as_the_spec_says() {
        let s = started(&snap((0.0, 0.0), (0.0, 0.0)));
        let o = advance(&s, Observation::Lost("timed out"), 10_000, None);
        let o = advance(&o.next, Observation::Lost("timed out"), 3_600_000, None);
        assert!(
            matches!(o.decision, Decision::Hold { ref reason } if reason.contains("metrics_loss: hold")),
            "{:?}",
            o.decision
        );
        let mut spec = spec();
        spec.analysis.metrics_loss = crate::spec::MetricsLoss {
            policy: MetricsLossPolicy::Abort,
            after: std::time::Duration::from_secs(60),
        };
        let s = RolloutState::new(spec, 0);
        let o = advance(&s, Observation::Lost("timed out"), 10_000, None);
        assert!(
            matches!(o.decision, Decision::Hold { ref reason } if reason.contains("abort after 1m")),
            "{:?}",
            o.decision
        );
        let o = advance(&o.next, Observation::Lost("timed out"), 69_000, None);
        assert!(
            matches!(o.decision, Decision::Hold { .. }),
            "{:?}",
            o.decision
        );
        let o = advance(&o.next, Observation::Lost("timed out"), 70_000, None);
        assert!(
            matches!(o.decision, Decision::Abort { .. }),
            "{:?}",
            o.decision
        );
        assert_eq!(o.next.weight_bp, 0);
        // Counts that come back in time reset the clock.
        let s = RolloutState::new(o.next.spec.clone(), 0);
        let o = advance(&s, Observation::Lost("x"), 10_000, None);
        let o = counts(&o.next, &snap((0.0, 0.0), (0.0, 0.0)), 20_000);
        let o = advance(&o.next, Observation::Lost("x"), 75_000, None);
        assert!(
            matches!(o.decision, Decision::Hold { .. }),
            "{:?}",
            o.decision
        );
    }

    #[test]
    fn a_step_up_waits_for_lagging_proxies_but_an_abort_does_not() {
        let s = started(&snap((0.0, 0.0), (0.0, 0.0)));
        let ok = snap((10_000.0, 0.0), (150.0, 0.0));
        let o = advance(
            &s,
            Observation::Counts(&ok),
            20_000,
            Some("waiting for edge-2".into()),
        );
        assert!(
            matches!(o.decision, Decision::Hold { ref reason } if reason.contains("edge-2")),
            "{:?}",
            o.decision
        );
        let bad = snap((10_000.0, 5.0), (900.0, 100.0));
        let o = advance(
            &s,
            Observation::Counts(&bad),
            20_000,
            Some("waiting for edge-2".into()),
        );
        assert!(
            matches!(o.decision, Decision::Abort { .. }),
            "{:?}",
            o.decision
        );
    }
}
