//! The sequential method: anytime-valid tests that may be looked at every
//! interval without inflating false alarms (see [`super::eprocess`]).
//!
//! α is split evenly among the k tests that may abort, each at k/α:
//! - errors (5xx and resets), canary against baseline;
//! - latency: the requests slower than each bound in `latency.bounds_ms`,
//!   fed to the same test, the bounds' e-processes averaged;
//! - the error-rate and latency ceilings;
//! - each of the team's `ratio` and `mean` metrics (a safe t-test);
//! - the SLO's burn rate over two windows scaled to the canary's life (the
//!   whole life and its last twelfth): abort when both burn too fast;
//! - sample ratio and too little traffic: hold, never a pass.

use super::analyzer::{enough_data, sample_ratio, Analyzer, Evidence, Verdict};
use super::format::fmt_e;
use super::input::Input;
use super::state::AnalysisState;
use super::team_metrics::{self, Judgement};

pub struct SequentialAnalyzer;

impl SequentialAnalyzer {
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
                now.saturating_sub(short_from) / 1000,
                slo.max_burn_rate
            )
        })
    }
}

impl Analyzer for SequentialAnalyzer {
    fn judge(&self, input: &Input<'_>, state: &AnalysisState) -> Verdict {
        let a = input.analysis;
        let (c, b) = (input.step.canary, input.step.baseline);
        // α split evenly among every test that may abort (see
        // `AnalysisState::abort_tests`).
        let k = AnalysisState::abort_tests(a);
        let abort_at = k as f64 / a.alpha;
        let guard_at = abort_at;
        let e_errors = state.errors.e_value();
        let e_latency = state.e_latency();
        let ev = Evidence {
            canary_requests: c.requests(),
            canary_errors: c.errors(),
            baseline_requests: b.map_or(0.0, |b| b.requests()),
            baseline_errors: b.map_or(0.0, |b| b.errors()),
            e_errors: Some(e_errors),
            e_latency: Some(e_latency),
            e_share: Some(state.share.e_value()),
            e_threshold: Some(abort_at),
            ..Evidence::default()
        };
        if e_errors >= abort_at {
            let (x, t) = (state.errors.canary_events, state.errors.total_events);
            return Verdict::Fail(
                format!(
                    "canary error rate {:.2}% vs baseline {:.2}% this step ({x:.0} of {t:.0} errors since the start were the canary's), e-value {} ≥ {abort_at:.0} = {k}/α",
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
                    "canary too slow: {x:.0} of the {t:.0} requests slower than {bound} ms were the canary's, e-value {} ≥ {abort_at:.0} = {k}/α",
                    fmt_e(e_latency)
                ),
                ev,
            );
        }
        if let Some(why) = Self::burn(input, state) {
            return Verdict::Fail(why, ev);
        }
        // The ceilings are guardrails of their own, each at α: they do not
        // share the relative tests' budget.
        let e_ceiling = state.error_ceiling.e_value();
        if e_ceiling >= guard_at {
            return Verdict::Fail(
                format!(
                    "canary error rate {:.2}% is above the ceiling of {}% (e-value {} ≥ {guard_at:.0} = {k}/α)",
                    100.0 * ev.canary_rate(),
                    a.error_rate.max_percent,
                    fmt_e(e_ceiling),
                ),
                ev,
            );
        }
        if let Some((max, test)) = &state.latency_ceiling {
            let e = test.e_value();
            if e >= guard_at {
                return Verdict::Fail(
                    format!(
                        "canary p{} latency is above the ceiling of {max} ms: {:.0} of its {:.0} requests this step were slower (e-value {} ≥ {guard_at:.0} = {k}/α)",
                        a.latency.percentile,
                        c.slower_than(*max),
                        c.requests(),
                        fmt_e(e),
                    ),
                    ev,
                );
            }
        }
        let metrics =
            team_metrics::judge(&a.metrics, &state.metrics, Some((abort_at, k)), b.is_some());
        if let Some(Judgement::Fail(why)) = metrics {
            return Verdict::Fail(why, ev);
        }
        if let Some(v) = enough_data(a, &ev, b.is_some()) {
            return v;
        }
        if let Some(Judgement::Hold(why)) = metrics {
            return Verdict::Insufficient(why, ev);
        }
        if let Some(v) = sample_ratio(a, input, state, &ev) {
            return v;
        }
        if let Some(why) = Self::building(a, state, e_errors, e_latency, abort_at) {
            return Verdict::Insufficient(why, ev);
        }
        Verdict::Pass(ev)
    }
}

impl SequentialAnalyzer {
    /// Evidence against the canary that has not reached the abort boundary
    /// but is halfway there (the square root of it, where a canary no worse
    /// than allowed goes with probability at most 1/√(k/α)): a step up waits
    /// until it settles or aborts. Holding never costs the guarantee, and
    /// without it a canary failing fast enough to pass `min_requests`
    /// first — a quarter of mirrored requests failing at a 2 s shadow step —
    /// stepped up one look before its abort.
    fn building(
        a: &crate::spec::Analysis,
        state: &AnalysisState,
        e_errors: f64,
        e_latency: f64,
        abort_at: f64,
    ) -> Option<String> {
        let halfway = abort_at.sqrt();
        let mut tests = vec![
            ("errors", e_errors),
            ("latency", e_latency),
            ("the error ceiling", state.error_ceiling.e_value()),
        ];
        if let Some((_, t)) = &state.latency_ceiling {
            tests.push(("the latency ceiling", t.e_value()));
        }
        for (m, s) in a.metrics.iter().zip(&state.metrics) {
            if m.is_comparison() && s.test.harmful() {
                tests.push((m.name.as_str(), s.test.e_value()));
            }
        }
        let (name, e) = tests.into_iter().max_by(|x, y| x.1.total_cmp(&y.1))?;
        (e >= halfway).then(|| {
            format!(
                "holding: evidence against the canary is building ({name} e-value {}, past {halfway:.0} = √{abort_at:.0}; it aborts at {abort_at:.0}); not stepping up until it settles",
                fmt_e(e)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Counts;
    use crate::counts::VersionCounts;
    use crate::spec::Analysis;

    fn counts(ok: f64, errors: f64) -> VersionCounts {
        let mut c = VersionCounts::default();
        c.by_class.insert("2xx".into(), ok);
        c.by_class.insert("5xx".into(), errors);
        c
    }

    #[test]
    fn an_abort_gives_the_e_value_and_its_threshold() {
        let a = Analysis::default();
        let mut state = AnalysisState::for_spec(&a);
        let (c, b) = (counts(98.0, 2.0), counts(899.0, 1.0));
        let (mut ct, mut bt) = (VersionCounts::default(), VersionCounts::default());
        for i in 1..=100u64 {
            for (k, v) in &c.by_class {
                *ct.by_class.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &b.by_class {
                *bt.by_class.entry(k.clone()).or_default() += v;
            }
            let input = Input {
                analysis: &a,
                slo: None,
                step: Counts {
                    canary: &ct,
                    baseline: Some(&bt),
                },
                interval: Counts {
                    canary: &c,
                    baseline: Some(&b),
                },
                weight: 0.1,
                now_ms: 5000 * i,
            };
            state.feed(&input);
            if let Verdict::Fail(why, ev) = SequentialAnalyzer.judge(&input, &state) {
                assert!(why.contains("e-value") && why.contains("3/α"), "{why}");
                assert!(ev.e_errors.unwrap_or(0.0) >= 3.0 / a.alpha);
                return;
            }
        }
        panic!("never aborted");
    }

    #[test]
    fn a_step_up_waits_while_evidence_against_the_canary_builds() {
        let a = Analysis {
            min_requests: 10,
            ..Analysis::default()
        };
        let mut state = AnalysisState::for_spec(&a);
        let (c, b) = (counts(100.0, 0.0), counts(900.0, 0.0));
        let input = Input {
            analysis: &a,
            slo: None,
            step: Counts {
                canary: &c,
                baseline: Some(&b),
            },
            interval: Counts {
                canary: &c,
                baseline: Some(&b),
            },
            weight: 0.1,
            now_ms: 1000,
        };
        assert!(matches!(
            SequentialAnalyzer.judge(&input, &state),
            Verdict::Pass(_)
        ));
        // An errors e-value of 100: past √3000 ≈ 55, short of 3000.
        state.errors.ln_products = vec![100f64.ln(); state.errors.ln_products.len()];
        match SequentialAnalyzer.judge(&input, &state) {
            Verdict::Insufficient(why, _) => {
                assert!(
                    why.contains(
                        "evidence against the canary is building (errors e-value 100, past 55"
                    ),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
