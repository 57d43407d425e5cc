//! The threshold method: fixed limits on each step's counts — error rate and
//! a latency percentile against the baseline, absolute ceilings, and the
//! SLO's burn rate — plus the sample-ratio hold every method shares.

use super::analyzer::{enough_data, sample_ratio, Analyzer, Evidence, Verdict};
use super::input::Input;
use super::state::AnalysisState;
use super::team_metrics::{self, Judgement};
use crate::counts::VersionCounts;
use crate::spec::{Analysis, Slo};

/// Fixed thresholds over the counts of the current step: error rate and a
/// latency percentile against the baseline, absolute ceilings, and the SLO's
/// burn rate.
pub struct ThresholdAnalyzer;

impl Analyzer for ThresholdAnalyzer {
    fn judge(&self, input: &Input<'_>, state: &AnalysisState) -> Verdict {
        let a = input.analysis;
        let compare = input.step.baseline.is_some();
        let metrics = team_metrics::judge(&a.metrics, &state.metrics, None, compare);
        let counts = self.judge_counts(a, input.slo, input.step.canary, input.step.baseline);
        match (counts, metrics) {
            (Verdict::Fail(why, ev), _)
            | (Verdict::Insufficient(_, ev), Some(Judgement::Fail(why))) => Verdict::Fail(why, ev),
            (Verdict::Pass(ev), Some(Judgement::Fail(why))) => Verdict::Fail(why, ev),
            (Verdict::Insufficient(why, ev), _) => Verdict::Insufficient(why, ev),
            (Verdict::Pass(ev), Some(Judgement::Hold(why))) => Verdict::Insufficient(why, ev),
            (Verdict::Pass(ev), None) => {
                sample_ratio(a, input, state, &ev).unwrap_or(Verdict::Pass(ev))
            }
        }
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
        vec![(10.0, n), (100.0, n), (crate::counts::INF_BOUND, n)]
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
                (crate::counts::INF_BOUND, 1000.0),
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
