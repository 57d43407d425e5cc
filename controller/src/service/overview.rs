//! The overview page's numbers, pure: what is running now, and what the
//! last days' rollouts came to, out of the states and the audit log.

use serde::Serialize;

use crate::store::audit::AuditRecord;
use dimmer_decide::engine::{Phase, RolloutState};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub active: Vec<Active>,
    /// The last 7 and 30 days.
    pub windows: Vec<Window>,
    /// Every active rollout with an SLO: how much of its canary's error
    /// budget this step has used.
    pub budgets: Vec<Budget>,
    /// Rollouts and flags that have ended, the latest first (at most
    /// [`FINISHED_SHOWN`]): an aborted one is one click from the overview.
    pub finished: Vec<Finished>,
}

/// How many ended rollouts the overview lists.
pub const FINISHED_SHOWN: usize = 50;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finished {
    pub name: String,
    pub kind: &'static str,
    /// `completed` or `aborted`.
    pub outcome: Phase,
    /// Who ended it: `analysis` for the controller's own decision, or the
    /// person's token name.
    pub decided_by: String,
    pub reason: String,
    pub at_ms: u64,
    /// The team it belongs to (a rollout's `team`, a flag's `owner`), for
    /// the overview's filter by team.
    pub team: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Active {
    pub name: String,
    /// `rollout`, `flag` or `arm` (of an A/B/n).
    pub kind: &'static str,
    pub phase: Phase,
    pub label: String,
    pub step: usize,
    pub steps: usize,
    pub weight_bp: u32,
    pub in_step_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub days: u64,
    pub started: usize,
    pub completed: usize,
    pub aborted_by_analysis: usize,
    pub aborted_by_person: usize,
    /// Median, over the analysis's aborts, of the time from the start of
    /// the step that went bad to the abort.
    pub median_detection_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budget {
    pub name: String,
    pub objective_percent: f64,
    /// The canary's errors over the errors its SLO allows for its requests
    /// in this step: 1.0 is the whole budget.
    pub consumed: f64,
}

const DAY_MS: u64 = 24 * 3600 * 1000;

fn kind_of(s: &RolloutState) -> &'static str {
    if s.spec.is_flag() {
        "flag"
    } else if s.spec.arm_of.is_some() {
        "arm"
    } else {
        "rollout"
    }
}

/// The ended rollouts among `states`, each with the record that ended it.
fn finished(states: &[&RolloutState], records: &[AuditRecord]) -> Vec<Finished> {
    let mut last: std::collections::HashMap<&str, &AuditRecord> = Default::default();
    for r in records {
        last.insert(&r.rollout, r);
    }
    let mut out: Vec<Finished> = states
        .iter()
        .filter(|s| s.phase.is_final())
        .map(|s| {
            let r = last.get(s.spec.name.as_str());
            Finished {
                name: s.spec.name.clone(),
                kind: kind_of(s),
                outcome: s.phase,
                decided_by: r.map_or(String::new(), |r| match r.actor.as_str() {
                    "controller" => "analysis".to_owned(),
                    who => who.to_owned(),
                }),
                reason: r.map_or(String::new(), |r| r.reason.clone()),
                at_ms: r.map_or(s.revision_ms, |r| r.at_ms.max(0) as u64),
                team: s.spec.team().map(str::to_owned),
            }
        })
        .collect();
    out.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then_with(|| a.name.cmp(&b.name)));
    out.truncate(FINISHED_SHOWN);
    out
}

pub fn overview(states: &[&RolloutState], records: &[AuditRecord], now_ms: u64) -> Overview {
    let active = states
        .iter()
        .filter(|s| !s.phase.is_final())
        .map(|s| Active {
            name: s.spec.name.clone(),
            kind: kind_of(s),
            phase: s.phase,
            label: s.label(),
            step: s.step,
            steps: s.spec.steps.len(),
            weight_bp: s.weight_bp,
            in_step_ms: now_ms.saturating_sub(s.step_started_ms),
        })
        .collect();
    let budgets = states
        .iter()
        .filter(|s| !s.phase.is_final())
        .filter_map(|s| {
            let slo = s.spec.slo.as_ref()?;
            let allowed = s.evidence.canary_requests * (1.0 - slo.objective_percent / 100.0);
            Some(Budget {
                name: s.spec.name.clone(),
                objective_percent: slo.objective_percent,
                consumed: if allowed > 0.0 {
                    s.evidence.canary_errors / allowed
                } else {
                    0.0
                },
            })
        })
        .collect();
    Overview {
        active,
        windows: [7, 30].map(|d| window(records, d, now_ms)).into(),
        budgets,
        finished: finished(states, records),
    }
}

fn window(records: &[AuditRecord], days: u64, now_ms: u64) -> Window {
    let since = now_ms.saturating_sub(days * DAY_MS) as i64;
    let mut w = Window {
        days,
        started: 0,
        completed: 0,
        aborted_by_analysis: 0,
        aborted_by_person: 0,
        median_detection_ms: None,
    };
    let mut lags = Vec::new();
    // When each rollout's current step began, as the log tells it.
    let mut step_began: std::collections::HashMap<&str, i64> = Default::default();
    for r in records {
        match r.action.as_str() {
            "apply" | "restart" | "step" | "promote" | "resume" => {
                step_began.insert(&r.rollout, r.at_ms);
            }
            _ => {}
        }
        if r.at_ms < since {
            continue;
        }
        match r.action.as_str() {
            "apply" | "restart" => w.started += 1,
            "abort" if r.actor == "controller" => {
                w.aborted_by_analysis += 1;
                if let Some(&began) = step_began.get(r.rollout.as_str()) {
                    lags.push(r.at_ms.saturating_sub(began).max(0) as u64);
                }
            }
            "abort" => w.aborted_by_person += 1,
            _ => {}
        }
        if r.to.starts_with("completed") && !r.from.starts_with("completed") {
            w.completed += 1;
        }
    }
    lags.sort_unstable();
    w.median_detection_ms = lags
        .get(lags.len() / 2)
        .copied()
        .filter(|_| !lags.is_empty());
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at_ms: i64, rollout: &str, actor: &str, action: &str, to: &str) -> AuditRecord {
        AuditRecord {
            seq: 0,
            at_ms,
            actor: actor.into(),
            rollout: rollout.into(),
            action: action.into(),
            from: "progressing".into(),
            to: to.into(),
            reason: String::new(),
            evidence: serde_json::Value::Null,
            prev_hash: String::new(),
            hash: String::new(),
            mac: String::new(),
        }
    }

    #[test]
    fn counts_the_windows_and_the_median_detection() {
        let now = 40 * DAY_MS;
        let old = (now - 20 * DAY_MS) as i64;
        let recent = (now - DAY_MS) as i64;
        let records = [
            rec(old, "a", "bot", "apply", "progressing"),
            rec(old + 1000, "a", "controller", "complete", "completed"),
            rec(old, "b", "bot", "apply", "progressing"),
            rec(old + 30_000, "b", "controller", "abort", "aborted"),
            rec(recent, "c", "bot", "apply", "progressing"),
            rec(recent + 5000, "c", "controller", "step", "progressing"),
            rec(recent + 15_000, "c", "controller", "abort", "aborted"),
            rec(recent, "d", "bot", "apply", "progressing"),
            rec(recent + 1000, "d", "alice", "abort", "aborted"),
            rec(recent, "e", "bot", "apply", "progressing"),
            rec(
                recent + 9000,
                "e",
                "alice",
                "promote",
                "completed (canary is stable)",
            ),
        ];
        let o = overview(&[], &records, now);
        let (week, month) = (&o.windows[0], &o.windows[1]);
        assert_eq!(
            (
                week.started,
                week.completed,
                week.aborted_by_analysis,
                week.aborted_by_person
            ),
            (3, 1, 1, 1)
        );
        // From the step that went bad, not from the apply.
        assert_eq!(week.median_detection_ms, Some(10_000));
        assert_eq!(
            (month.started, month.completed, month.aborted_by_analysis),
            (5, 2, 2)
        );
        assert_eq!(month.median_detection_ms, Some(30_000));
        let none = overview(&[], &[], now);
        assert_eq!(none.windows[0].median_detection_ms, None);
    }

    #[test]
    fn ended_rollouts_are_listed_latest_first_with_who_ended_them() {
        let spec = |name: &str| {
            dimmer_decide::spec::RolloutSpec::from_yaml(&format!(
                "name: {name}\nstable: v1\ncanary: v2\nidentity: [{{header: x-user-id}}]\nsteps: [{{percent: 10}}]\n"
            ))
            .unwrap()
        };
        let mut done = RolloutState::new(spec("search"), 1);
        done.phase = Phase::Completed;
        let mut bad = RolloutState::new(spec("checkout"), 1);
        bad.phase = Phase::Aborted;
        let running = RolloutState::new(spec("cart"), 1);
        let mut by_person = rec(5_000, "checkout", "alice", "abort", "aborted");
        by_person.reason = "customer report".into();
        let records = [
            rec(1_000, "search", "controller", "complete", "completed"),
            rec(2_000, "checkout", "controller", "step", "progressing"),
            by_person,
            rec(6_000, "cart", "bot", "apply", "progressing"),
        ];
        let o = overview(&[&done, &bad, &running], &records, 10_000);
        let listed: Vec<_> = o
            .finished
            .iter()
            .map(|f| (f.name.as_str(), f.outcome, f.decided_by.as_str(), f.at_ms))
            .collect();
        assert_eq!(
            listed,
            [
                ("checkout", Phase::Aborted, "alice", 5_000),
                ("search", Phase::Completed, "analysis", 1_000)
            ]
        );
        assert_eq!(o.finished[0].reason, "customer report");
        assert_eq!(o.active.len(), 1);
    }
}
