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

pub fn overview(states: &[&RolloutState], records: &[AuditRecord], now_ms: u64) -> Overview {
    let active = states
        .iter()
        .filter(|s| !s.phase.is_final())
        .map(|s| Active {
            name: s.spec.name.clone(),
            kind: if s.spec.is_flag() {
                "flag"
            } else if s.spec.arm_of.is_some() {
                "arm"
            } else {
                "rollout"
            },
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
}
