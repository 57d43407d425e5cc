//! The sequential analyzer: anytime-valid tests that may be looked at every
//! interval without inflating false alarms (see [`crate::eprocess`]).
//!
//! - errors (5xx and resets), canary against baseline: abort when the
//!   e-value reaches 2/α;
//! - latency: the requests slower than each bound in `latency.bounds_ms`,
//!   fed to the same test, the bounds' e-processes averaged: abort at 2/α;
//! - sample ratio: the canary's share of requests against its weight: hold
//!   (not abort) at 1/α, since the fault may be a proxy that has not applied
//!   the weights rather than the canary;
//! - the SLO's burn rate over two windows scaled to the canary's life (the
//!   whole life and its last twelfth): abort when both burn too fast;
//! - too little traffic to decide: "insufficient data", never a pass.

use serde::{Deserialize, Serialize};

use crate::analysis::{enough_data, fmt_e, Analyzer, Evidence, Input, Verdict};
use crate::eprocess::{CeilingTest, RateRatioTest, ShareTest};

/// What the sequential tests carry from one interval to the next; persisted
/// with the rollout, so a restart loses no evidence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnalysisState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<RateRatioTest>,
    #[serde(default)]
    pub latency: Vec<(f64, RateRatioTest)>,
    #[serde(default)]
    pub share: ShareTest,
    /// The canary's error rate against `error_rate.max_percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<CeilingTest>,
    /// `(at_ms, canary requests, canary errors)` per interval, for burn windows.
    #[serde(default)]
    pub canary_history: Vec<(u64, f64, f64)>,
}

pub struct SequentialAnalyzer;

impl SequentialAnalyzer {
    /// Feeds one interval's counts to the tests.
    pub fn update(input: &Input<'_>, state: &mut AnalysisState) {
        let a = input.analysis;
        let c = input.interval.canary;
        let errors = state
            .errors
            .get_or_insert_with(|| RateRatioTest::new(a.max_rate_ratio));
        if state.latency.len() != a.latency.bounds_ms.len() {
            state.latency = a
                .latency
                .bounds_ms
                .iter()
                .map(|&b| (b, RateRatioTest::new(1.0)))
                .collect();
        }
        state
            .canary_history
            .push((input.now_ms, c.requests(), c.errors()));
        let Some(b) = input.interval.baseline else {
            return;
        };
        let (nc, nb) = (c.requests(), b.requests());
        if nc + nb <= 0.0 {
            return;
        }
        let pi = nc / (nc + nb);
        errors.update(c.errors(), c.errors() + b.errors(), pi);
        for (bound, test) in &mut state.latency {
            let (sc, sb) = (c.slower_than(*bound), b.slower_than(*bound));
            test.update(sc, sc + sb, pi);
        }
        state.share.update(nc, nc + nb, input.weight);
    }

    fn burn(input: &Input<'_>, state: &AnalysisState) -> Option<String> {
        let slo = input.slo?;
        let budget = 1.0 - slo.objective_percent / 100.0;
        let (start, now) = (state.canary_history.first()?.0, input.now_ms);
        let short_from = now.saturating_sub(
            (now.saturating_sub(start) / 12).max(input.analysis.interval.as_millis() as u64),
        );
        let window = |from: u64| {
            let (n, e) = state
                .canary_history
                .iter()
                .filter(|(t, _, _)| *t >= from)
                .fold((0.0, 0.0), |(n, e), (_, rn, re)| (n + rn, e + re));
            (n, if n > 0.0 { e / n / budget } else { 0.0 })
        };
        let (n_long, long) = window(start);
        let (n_short, short) = window(short_from);
        let need = input.analysis.min_requests as f64;
        (n_long >= need && n_short > 0.0 && long > slo.max_burn_rate && short > slo.max_burn_rate).then(|| {
            format!(
                "canary burns the error budget of a {}% SLO {long:.1}× too fast over its life and {short:.1}× over the last {}s (limit {}×)",
                slo.objective_percent,
                (now - short_from) / 1000,
                slo.max_burn_rate
            )
        })
    }
}

impl Analyzer for SequentialAnalyzer {
    fn judge(&self, input: &Input<'_>, state: &mut AnalysisState) -> Verdict {
        Self::update(input, state);
        let a = input.analysis;
        let (c, b) = (input.step.canary, input.step.baseline);
        let abort_at = 2.0 / a.alpha;
        let e_errors = state.errors.as_ref().map_or(1.0, RateRatioTest::e_value);
        let e_latency = if state.latency.is_empty() {
            1.0
        } else {
            state.latency.iter().map(|(_, t)| t.e_value()).sum::<f64>() / state.latency.len() as f64
        };
        let e_share = state.share.e_value();
        let ev = Evidence {
            canary_requests: c.requests(),
            canary_errors: c.errors(),
            baseline_requests: b.map_or(0.0, |b| b.requests()),
            baseline_errors: b.map_or(0.0, |b| b.errors()),
            e_errors: Some(e_errors),
            e_latency: Some(e_latency),
            e_share: Some(e_share),
            e_threshold: Some(abort_at),
            ..Evidence::default()
        };
        let totals = |t: &Option<RateRatioTest>| {
            t.as_ref()
                .map_or((0.0, 0.0), |t| (t.canary_events, t.total_events))
        };
        if e_errors >= abort_at {
            let (x, t) = totals(&state.errors);
            return Verdict::Fail(
                format!(
                    "canary error rate {:.2}% vs baseline {:.2}% this step ({x:.0} of {t:.0} errors since the start were the canary's), e-value {} ≥ {abort_at:.0} = 2/α",
                    100.0 * ev.canary_rate(),
                    100.0 * ev.baseline_rate(),
                    fmt_e(e_errors)
                ),
                ev,
            );
        }
        if e_latency >= abort_at {
            let worst = state
                .latency
                .iter()
                .max_by(|x, y| x.1.e_value().total_cmp(&y.1.e_value()))
                .map(|(bound, t)| (*bound, t.canary_events, t.total_events));
            let (bound, x, t) = worst.unwrap_or((0.0, 0.0, 0.0));
            return Verdict::Fail(
                format!(
                    "canary too slow: {x:.0} of the {t:.0} requests slower than {bound} ms were the canary's, e-value {} ≥ {abort_at:.0} = 2/α",
                    fmt_e(e_latency)
                ),
                ev,
            );
        }
        if let Some(why) = Self::burn(input, state) {
            return Verdict::Fail(why, ev);
        }
        // The ceiling is a guardrail of its own, at α: it does not share the
        // relative tests' budget.
        let e_ceiling = state.ceiling.as_ref().map_or(1.0, CeilingTest::e_value);
        if e_ceiling >= 1.0 / a.alpha {
            return Verdict::Fail(
                format!(
                    "canary error rate {:.2}% is above the ceiling of {}% (e-value {} ≥ {:.0} = 1/α)",
                    100.0 * ev.canary_rate(),
                    a.error_rate.max_percent,
                    fmt_e(e_ceiling),
                    1.0 / a.alpha
                ),
                ev,
            );
        }
        if let Some(v) = enough_data(a, &ev, b.is_some()) {
            return v;
        }
        if e_share >= 1.0 / a.alpha {
            return Verdict::Insufficient(
                format!(
                    "sample ratio mismatch: the canary had {:.2}% of requests against {:.2}% configured (e-value {}); holding — is every proxy on the current weights?",
                    100.0 * state.share.canary / state.share.total.max(1.0),
                    100.0 * input.weight,
                    fmt_e(e_share)
                ),
                ev,
            );
        }
        Verdict::Pass(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Counts;
    use crate::metrics::VersionCounts;
    use crate::spec::{Analysis, Slo};

    fn counts(ok: f64, errors: f64) -> VersionCounts {
        let mut c = VersionCounts::default();
        c.by_class.insert("2xx".into(), ok);
        c.by_class.insert("5xx".into(), errors);
        c
    }

    /// Feeds `intervals` identical intervals, 5 s apart; returns the last verdict.
    fn run(
        a: &Analysis,
        slo: Option<&Slo>,
        weight: f64,
        interval: (VersionCounts, VersionCounts),
        intervals: usize,
    ) -> Verdict {
        let mut state = AnalysisState::default();
        let (mut c_total, mut b_total) = (VersionCounts::default(), VersionCounts::default());
        let mut last = Verdict::Insufficient(String::new(), Evidence::default());
        for i in 1..=intervals {
            for (k, v) in &interval.0.by_class {
                *c_total.by_class.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &interval.1.by_class {
                *b_total.by_class.entry(k.clone()).or_default() += v;
            }
            let input = Input {
                analysis: a,
                slo,
                step: Counts {
                    canary: &c_total,
                    baseline: Some(&b_total),
                },
                interval: Counts {
                    canary: &interval.0,
                    baseline: Some(&interval.1),
                },
                weight,
                now_ms: 5000 * i as u64,
            };
            last = SequentialAnalyzer.judge(&input, &mut state);
            if matches!(last, Verdict::Fail(..)) {
                break;
            }
        }
        last
    }

    #[test]
    fn holds_until_enough_requests_then_passes_a_healthy_canary() {
        let a = Analysis {
            min_requests: 100,
            ..Analysis::default()
        };
        let healthy = (counts(10.0, 0.0), counts(90.0, 0.0));
        assert!(
            matches!(run(&a, None, 0.1, healthy.clone(), 5), Verdict::Insufficient(ref w, _) if w.contains("canary has 50 of 100"))
        );
        assert!(matches!(run(&a, None, 0.1, healthy, 20), Verdict::Pass(_)));
    }

    #[test]
    fn aborts_a_worse_canary_with_the_e_value_in_the_reason() {
        let a = Analysis::default();
        match run(&a, None, 0.1, (counts(98.0, 2.0), counts(899.0, 1.0)), 100) {
            Verdict::Fail(why, ev) => {
                assert!(why.contains("e-value") && why.contains("2/α"), "{why}");
                assert!(ev.e_errors.unwrap_or(0.0) >= 2.0 / a.alpha);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_share_far_from_the_weight_holds_and_says_so() {
        let a = Analysis {
            min_requests: 10,
            ..Analysis::default()
        };
        // Configured 10%, observed 2%: a proxy on stale weights, say.
        match run(&a, None, 0.1, (counts(20.0, 0.0), counts(980.0, 0.0)), 30) {
            Verdict::Insufficient(why, _) => {
                assert!(why.contains("sample ratio mismatch"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_fast_burn_of_the_error_budget_aborts() {
        // Both arms fail alike (no regression against the baseline), but the
        // canary alone burns a 99.9% SLO's budget 20× too fast.
        let a = Analysis {
            min_requests: 50,
            ..Analysis::default()
        };
        let slo = Slo {
            objective_percent: 99.9,
            max_burn_rate: 14.4,
        };
        match run(
            &a,
            Some(&slo),
            0.5,
            (counts(98.0, 2.0), counts(98.0, 2.0)),
            10,
        ) {
            Verdict::Fail(why, _) => assert!(why.contains("burns the error budget"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
