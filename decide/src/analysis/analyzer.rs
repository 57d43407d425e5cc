//! What every analysis method shares: the [`Analyzer`] trait, its input
//! and verdict, the evidence kept with a verdict in the audit log, and the
//! guards every method applies the same way (enough data, sample ratio,
//! cohort mix).

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::counts::VersionCounts;
use crate::spec::Analysis;

use super::format::fmt_e;
use super::input::Input;
use super::state::AnalysisState;
use super::{mix, safety_report, team_metrics};

/// The numbers behind a verdict, kept with it in the audit log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub canary_requests: f64,
    pub canary_errors: f64,
    pub baseline_requests: f64,
    pub baseline_errors: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_latency_ms: Option<f64>,
    /// Which percentile the latencies are.
    #[serde(default)]
    pub percentile: f64,
    /// Sequential analysis: the e-values of the error-rate and latency tests,
    /// the sample-ratio test, and the value at which a test decides (1/α).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_errors: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_latency: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_threshold: Option<f64>,
    /// The team's own metrics (`analysis.metrics`), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<team_metrics::MetricEvidence>,
    /// The step's mix over each cohort dimension, canary beside baseline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mix: Vec<mix::MixRow>,
    /// Each comparative test's bound on the canary's harm against its
    /// tolerance, over the whole rollout (see `analysis::safety`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub safety: Vec<safety_report::SafetyRow>,
    /// The hooks that gated (or checked) this decision, and what each said.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<crate::spec::HookResult>,
}

impl Evidence {
    fn rate(errors: f64, n: f64) -> f64 {
        if n > 0.0 {
            errors / n
        } else {
            0.0
        }
    }

    pub fn canary_rate(&self) -> f64 {
        Self::rate(self.canary_errors, self.canary_requests)
    }

    pub fn baseline_rate(&self) -> f64 {
        Self::rate(self.baseline_errors, self.baseline_requests)
    }

    /// One line for people: "canary 5xx 2.10% of 1000 vs baseline 0.10% of 9000; p99 …".
    pub fn summary(&self) -> String {
        let mut s = format!(
            "canary errors {:.2}% of {:.0}",
            100.0 * self.canary_rate(),
            self.canary_requests
        );
        if self.baseline_requests > 0.0 {
            let _ = write!(
                s,
                " vs baseline {:.2}% of {:.0}",
                100.0 * self.baseline_rate(),
                self.baseline_requests
            );
        }
        if let (Some(e), Some(th)) = (self.e_errors, self.e_threshold) {
            let _ = write!(s, "; e-values: errors {}", fmt_e(e));
            if let Some(l) = self.e_latency {
                let _ = write!(s, ", latency {}", fmt_e(l));
            }
            let _ = write!(s, " (abort at {th:.0})");
        }
        if let Some(c) = self.canary_latency_ms {
            let _ = write!(s, "; p{} {:.1} ms", self.percentile, c);
            if let Some(b) = self.baseline_latency_ms {
                let _ = write!(s, " vs {b:.1} ms");
            }
        }
        let mut last_dim = "";
        for r in &self.mix {
            let sep = if r.dimension == last_dim {
                ","
            } else {
                last_dim = &r.dimension;
                let _ = write!(s, "; mix {} (canary vs baseline):", r.dimension);
                ""
            };
            let _ = write!(
                s,
                "{sep} {} {:.1}% vs {:.1}%",
                r.value, r.canary_percent, r.baseline_percent
            );
        }
        for m in &self.metrics {
            let num = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.4}"));
            let _ = write!(s, "; {} {}", m.name, num(m.canary));
            if m.baseline.is_some() {
                let _ = write!(s, " vs {}", num(m.baseline));
            }
        }
        for h in &self.hooks {
            let _ = write!(
                s,
                "; hook {} ({}) {}: {}",
                h.name,
                h.kind.name(),
                if h.passed { "passed" } else { "failed" },
                h.detail
            );
        }
        if !self.safety.is_empty() {
            s.push_str("; bounds:");
            for (i, r) in self.safety.iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                let mark = if r.within { "≤" } else { ">" };
                let _ = write!(
                    s,
                    "{sep}{} {} {mark} {}",
                    r.test, r.bound_text, r.tolerance_text
                );
            }
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The canary is no worse than allowed.
    Pass(Evidence),
    /// Not enough data to say either way: never a pass.
    Insufficient(String, Evidence),
    /// The canary is worse than allowed: abort.
    Fail(String, Evidence),
}

impl Verdict {
    pub fn evidence(&self) -> &Evidence {
        match self {
            Verdict::Pass(e) | Verdict::Insufficient(_, e) | Verdict::Fail(_, e) => e,
        }
    }
}

/// What an analysis method judges on: the counts of the current step and of
/// the interval since the last look, the configured canary share, and the
/// tests' running state that lives (and is persisted) with the rollout.
pub trait Analyzer: Send + Sync {
    /// `state` has already been fed this interval (see [`AnalysisState::feed`]).
    fn judge(&self, input: &Input<'_>, state: &AnalysisState) -> Verdict;
}

/// The check every method shares, on a step's counts: enough requests in
/// each arm, or hold and say how many are missing. `None`: enough.
pub fn enough_data(a: &Analysis, ev: &Evidence, with_baseline: bool) -> Option<Verdict> {
    let need = a.min_requests as f64;
    let missing = |arm: &str, have: f64| {
        Verdict::Insufficient(
            format!("{arm} has {have:.0} of {} requests needed", a.min_requests),
            ev.clone(),
        )
    };
    if ev.canary_requests < need {
        return Some(missing("canary", ev.canary_requests));
    }
    if with_baseline && ev.baseline_requests < need {
        return Some(missing("baseline", ev.baseline_requests));
    }
    None
}

/// The guards both methods share as holds, each at h/α (α split among
/// them): each cohort dimension's mix, then the canary's share of requests
/// against its weight. Neither is the canary's fault — a proxy on old
/// weights, a load balancer sending one country to one version — so they
/// hold, never abort.
pub fn sample_ratio(
    a: &Analysis,
    input: &Input<'_>,
    state: &AnalysisState,
    ev: &Evidence,
) -> Option<Verdict> {
    let h = AnalysisState::hold_tests(a);
    let hold_at = h as f64 / a.alpha;
    for (d, test) in a.dimensions.iter().zip(&state.mix) {
        let e = test.e_value(d);
        if e < hold_at {
            continue;
        }
        let name = d.name();
        let empty = VersionCounts::default();
        let rows = mix::rows(
            &a.dimensions,
            input.step.canary,
            input.step.baseline.unwrap_or(&empty),
        );
        // The value whose share differs most says best what is wrong: each
        // value's test saturates alike once the evidence is overwhelming.
        let row = rows.iter().filter(|r| r.dimension == name).max_by(|x, y| {
            (x.canary_percent - x.baseline_percent)
                .abs()
                .total_cmp(&(y.canary_percent - y.baseline_percent).abs())
        });
        let value = row.map_or(test.worst().unwrap_or_default(), |r| r.value.as_str());
        let (c, b) = row.map_or((0.0, 0.0), |r| (r.canary_percent, r.baseline_percent));
        let side = if c > b { "over" } else { "under" };
        return Some(Verdict::Insufficient(
            format!(
                "cohort mismatch on {name}: {value} is {c:.1}% of the canary's requests this step vs {b:.1}% of the baseline's ({side}-represented; e-value {} ≥ {hold_at:.0} = {h}/α); holding — the canary's users do not look like everyone's, which is not the canary's fault",
                fmt_e(e)
            ),
            ev.clone(),
        ));
    }
    let e_share = state.share.e_value();
    (e_share >= hold_at).then(|| {
        Verdict::Insufficient(
            format!(
                "sample ratio mismatch: the canary had {:.2}% of requests against {:.2}% configured (e-value {}); holding — is every proxy on the current weights?",
                100.0 * state.share.canary / state.share.total.max(1.0),
                100.0 * input.weight,
                fmt_e(e_share)
            ),
            ev.clone(),
        )
    })
}
