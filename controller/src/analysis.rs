//! Judging canary against baseline. The engine asks an [`Analyzer`] for a
//! verdict each interval; this module holds the simple, fixed-threshold one.
//! A sequential analyzer can take its place behind the same trait.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::metrics::VersionCounts;
use crate::spec::{Analysis, Slo};

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
        s
    }
}

/// E-values span many orders of magnitude: 0.003, 12.4, 2.1e5.
pub fn fmt_e(e: f64) -> String {
    if e >= 1e5 || (e > 0.0 && e < 1e-2) {
        format!("{e:.1e}")
    } else if e >= 100.0 {
        format!("{e:.0}")
    } else {
        format!("{e:.2}")
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

/// Counts of the canary and of the baseline (none when the canary has all
/// traffic) over some span.
#[derive(Debug, Clone, Copy)]
pub struct Counts<'a> {
    pub canary: &'a VersionCounts,
    pub baseline: Option<&'a VersionCounts>,
}

/// What the engine needs of an analysis: the counts of the current step and
/// of the interval since the last look, the configured canary share, and a
/// state of the analysis' own that lives (and is persisted) with the rollout.
pub trait Analyzer: Send + Sync {
    fn judge(&self, input: &Input<'_>, state: &mut crate::sequential::AnalysisState) -> Verdict;
}

pub struct Input<'a> {
    pub analysis: &'a Analysis,
    pub slo: Option<&'a Slo>,
    pub step: Counts<'a>,
    pub interval: Counts<'a>,
    /// The canary's configured share of users, 0 to 1.
    pub weight: f64,
    pub now_ms: u64,
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

/// Fixed thresholds over the counts of the current step: error rate and a
/// latency percentile against the baseline, absolute ceilings, and the SLO's
/// burn rate.
pub struct ThresholdAnalyzer;

impl Analyzer for ThresholdAnalyzer {
    fn judge(&self, input: &Input<'_>, _state: &mut crate::sequential::AnalysisState) -> Verdict {
        self.judge_counts(
            input.analysis,
            input.slo,
            input.step.canary,
            input.step.baseline,
        )
    }
}

impl ThresholdAnalyzer {
    pub fn judge_counts(
        &self,
        a: &Analysis,
        slo: Option<&Slo>,
        canary: &VersionCounts,
        baseline: Option<&VersionCounts>,
    ) -> Verdict {
        let q = a.latency.percentile / 100.0;
        let ev = Evidence {
            canary_requests: canary.requests(),
            canary_errors: canary.errors(),
            baseline_requests: baseline.map_or(0.0, VersionCounts::requests),
            baseline_errors: baseline.map_or(0.0, VersionCounts::errors),
            canary_latency_ms: canary.latency_quantile(q),
            baseline_latency_ms: baseline.and_then(|b| b.latency_quantile(q)),
            percentile: a.latency.percentile,
            ..Evidence::default()
        };
        if let Some(v) = enough_data(a, &ev, baseline.is_some()) {
            return v;
        }
        let (cr, br) = (ev.canary_rate(), ev.baseline_rate());
        let e = &a.error_rate;
        if 100.0 * cr > e.max_percent {
            let why = format!(
                "canary error rate {:.2}% is above the ceiling of {}%",
                100.0 * cr,
                e.max_percent
            );
            return Verdict::Fail(why, ev);
        }
        if let Some(slo) = slo {
            let budget = 1.0 - slo.objective_percent / 100.0;
            let burn = cr / budget;
            if burn > slo.max_burn_rate {
                return Verdict::Fail(
                    format!(
                        "canary burns the error budget of a {}% SLO {:.1}× too fast (limit {}×)",
                        slo.objective_percent, burn, slo.max_burn_rate
                    ),
                    ev,
                );
            }
        }
        if let Some(max) = a.latency.max_ms {
            if let Some(c) = ev.canary_latency_ms.filter(|&c| c > max) {
                return Verdict::Fail(
                    format!(
                        "canary p{} latency {c:.0} ms is above the ceiling of {max} ms",
                        a.latency.percentile
                    ),
                    ev,
                );
            }
        }
        // Against the baseline, when there is one (at 100% there is none).
        let Some(_) = baseline else {
            return Verdict::Pass(ev);
        };
        if cr - br > e.max_increase_pp / 100.0 && cr > br * e.max_ratio {
            return Verdict::Fail(
                format!(
                    "canary error rate {:.2}% vs baseline {:.2}%: more than {} points and {}× worse",
                    100.0 * cr,
                    100.0 * br,
                    e.max_increase_pp,
                    e.max_ratio
                ),
                ev,
            );
        }
        if let (Some(c), Some(b)) = (ev.canary_latency_ms, ev.baseline_latency_ms) {
            let l = &a.latency;
            if c > b * l.max_ratio && c - b > l.min_increase_ms {
                return Verdict::Fail(
                    format!(
                        "canary p{} latency {c:.1} ms vs baseline {b:.1} ms: more than {}× and {} ms slower",
                        l.percentile, l.max_ratio, l.min_increase_ms
                    ),
                    ev,
                );
            }
        }
        Verdict::Pass(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(ok: f64, errors: f64, latency: &[(f64, f64)]) -> VersionCounts {
        let mut c = VersionCounts::default();
        c.by_class.insert("2xx".into(), ok);
        c.by_class.insert("5xx".into(), errors);
        c.latency = latency.to_vec();
        c
    }

    fn fast(n: f64) -> Vec<(f64, f64)> {
        vec![(10.0, n), (100.0, n), (crate::metrics::INF_BOUND, n)]
    }

    #[test]
    fn holds_without_enough_data_and_says_how_much() {
        let a = Analysis::default();
        let v = ThresholdAnalyzer.judge_counts(
            &a,
            None,
            &counts(37.0, 0.0, &fast(37.0)),
            Some(&counts(5000.0, 0.0, &fast(5000.0))),
        );
        match v {
            Verdict::Insufficient(why, _) => {
                assert_eq!(why, "canary has 37 of 200 requests needed")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fails_a_worse_canary_and_passes_a_healthy_one() {
        let a = Analysis::default();
        let base = counts(9990.0, 10.0, &fast(10_000.0));
        let bad = counts(970.0, 30.0, &fast(1000.0));
        assert!(matches!(
            ThresholdAnalyzer.judge_counts(&a, None, &bad, Some(&base)),
            Verdict::Fail(..)
        ));
        let good = counts(999.0, 1.0, &fast(1000.0));
        assert!(matches!(
            ThresholdAnalyzer.judge_counts(&a, None, &good, Some(&base)),
            Verdict::Pass(_)
        ));
    }

    #[test]
    fn fails_a_slow_canary() {
        let a = Analysis::default();
        let base = counts(10_000.0, 0.0, &fast(10_000.0));
        let slow = counts(
            1000.0,
            0.0,
            &[
                (10.0, 0.0),
                (100.0, 0.0),
                (1000.0, 1000.0),
                (crate::metrics::INF_BOUND, 1000.0),
            ],
        );
        match ThresholdAnalyzer.judge_counts(&a, None, &slow, Some(&base)) {
            Verdict::Fail(why, ev) => {
                assert!(why.contains("latency"), "{why}");
                assert!(ev.canary_latency_ms.unwrap() > 500.0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_slo_burn_rate_is_a_gate() {
        let a = Analysis::default();
        let slo = Slo {
            objective_percent: 99.9,
            max_burn_rate: 10.0,
        };
        // 2% errors burns a 0.1% budget 20× too fast, though under the 5% ceiling.
        let c = counts(980.0, 20.0, &fast(1000.0));
        assert!(matches!(
            ThresholdAnalyzer.judge_counts(&a, Some(&slo), &c, None),
            Verdict::Fail(..)
        ));
    }
}
