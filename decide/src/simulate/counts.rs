//! `dimmer simulate`: many synthetic rollouts through the same analysis code
//! the controller runs, and, on the same random streams, a reference detector
//! written to Argo Rollouts' documented semantics: the canary's error rate is
//! measured over each minute, a measurement above the threshold is a failure,
//! and the analysis fails when failures exceed `failureLimit`.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution, Gamma, Poisson};
use serde::Serialize;

use crate::analysis::{AnalysisState, Analyzer, Counts, Input, SequentialAnalyzer, Verdict};
use crate::counts::VersionCounts;
use crate::spec::Analysis;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub rps: f64,
    /// The canary's share of traffic, 0 to 1.
    pub split: f64,
    pub baseline_error: f64,
    pub canary_error: f64,
    pub runs: usize,
    pub horizon_s: f64,
    pub seed: u64,
    /// Gamma shape of a per-interval multiplier (mean 1) on the canary arm's
    /// error rate: bursts of errors that come and go. `None`: no bursts.
    pub burst_shape: Option<f64>,
    /// Seconds between scrapes.
    pub interval_s: f64,
    pub analysis: Analysis,
    /// Reference detector: threshold on the canary's error rate per minute.
    pub argo_threshold: f64,
    pub argo_failure_limit: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct DetectorResult {
    pub detector: String,
    /// False-alarm rate: only when the canary is no worse than the baseline.
    pub fpr: Option<f64>,
    /// Fraction of runs aborted within the horizon.
    pub detected: f64,
    pub median_ttd_s: Option<f64>,
    pub p90_ttd_s: Option<f64>,
    /// Failed canary requests served before the abort (or the horizon), mean per run.
    pub bad_requests_served: f64,
}

struct Run {
    dimmer: Option<f64>,
    argo: Option<f64>,
    dimmer_bad: f64,
    argo_bad: f64,
}

fn one_run(s: &Scenario, run: usize) -> Run {
    let mut rng = StdRng::seed_from_u64(s.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ run as u64);
    let per_interval = Poisson::new((s.rps * s.interval_s).max(1e-9)).ok();
    let burst = s.burst_shape.and_then(|k| Gamma::new(k, 1.0 / k).ok());
    let mut canary = VersionCounts::default();
    let mut base = VersionCounts::default();
    let mut state = AnalysisState::for_spec(&s.analysis);
    let (mut dimmer, mut argo) = (None, None);
    let (mut dimmer_bad, mut argo_bad) = (0.0, 0.0);
    let (mut win_n, mut win_e, mut win_start, mut failures) = (0.0, 0.0, 0.0, 0);
    let intervals = (s.horizon_s / s.interval_s).ceil() as usize;
    for i in 1..=intervals {
        let t = i as f64 * s.interval_s;
        let n = per_interval.as_ref().map_or(0.0, |d| d.sample(&mut rng)) as u64;
        let nc = Binomial::new(n, s.split).map_or(0, |d| d.sample(&mut rng));
        let nb = n - nc;
        let factor = burst.as_ref().map_or(1.0, |g| g.sample(&mut rng));
        let pc = (s.canary_error * factor).clamp(0.0, 1.0);
        let ec = Binomial::new(nc, pc).map_or(0, |d| d.sample(&mut rng)) as f64;
        let eb = Binomial::new(nb, s.baseline_error).map_or(0, |d| d.sample(&mut rng)) as f64;
        let (ic, ib) = (counts(nc as f64 - ec, ec), counts(nb as f64 - eb, eb));

        if dimmer.is_none() {
            dimmer_bad += ec;
            add(&mut canary, &ic);
            add(&mut base, &ib);
            let input = Input {
                analysis: &s.analysis,
                slo: None,
                step: Counts {
                    canary: &canary,
                    baseline: Some(&base),
                },
                interval: Counts {
                    canary: &ic,
                    baseline: Some(&ib),
                },
                weight: s.split,
                now_ms: (t * 1000.0) as u64,
            };
            state.feed(&input);
            if let Verdict::Fail(..) = SequentialAnalyzer.judge(&input, &state) {
                dimmer = Some(t);
            }
        }
        if argo.is_none() {
            argo_bad += ec;
            win_n += nc as f64;
            win_e += ec;
            if t - win_start >= 60.0 - 1e-9 {
                if win_n > 0.0 && win_e / win_n > s.argo_threshold {
                    failures += 1;
                }
                if failures > s.argo_failure_limit {
                    argo = Some(t);
                }
                (win_n, win_e, win_start) = (0.0, 0.0, t);
            }
        }
        if dimmer.is_some() && argo.is_some() {
            break;
        }
    }
    Run {
        dimmer,
        argo,
        dimmer_bad,
        argo_bad,
    }
}

fn counts(ok: f64, errors: f64) -> VersionCounts {
    let mut c = VersionCounts::default();
    c.by_class.insert("2xx".into(), ok);
    c.by_class.insert("5xx".into(), errors);
    c
}

fn add(total: &mut VersionCounts, more: &VersionCounts) {
    for (k, v) in &more.by_class {
        *total.by_class.entry(k.clone()).or_default() += v;
    }
}

pub(crate) fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(idx).copied()
}

fn summarise(name: &str, s: &Scenario, ttd: Vec<Option<f64>>, bad: Vec<f64>) -> DetectorResult {
    let runs = ttd.len().max(1) as f64;
    let mut hits: Vec<f64> = ttd.into_iter().flatten().collect();
    hits.sort_by(f64::total_cmp);
    let detected = hits.len() as f64 / runs;
    DetectorResult {
        detector: name.to_owned(),
        fpr: (s.canary_error <= s.baseline_error).then_some(detected),
        detected,
        median_ttd_s: quantile(&hits, 0.5),
        p90_ttd_s: quantile(&hits, 0.9),
        bad_requests_served: bad.iter().sum::<f64>() / runs,
    }
}

/// `one(r)` for each of `runs` runs, on two threads, in run order: the
/// result does not depend on the threads.
pub(crate) fn in_parallel<R: Send>(runs: usize, one: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let threads = 2;
    let one = &one;
    let mut out: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (0..runs)
                        .filter(|r| r % threads == t)
                        .map(|r| (r, one(r)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Runs the scenario on two threads; the result does not depend on them.
pub fn simulate(s: &Scenario) -> Vec<DetectorResult> {
    let runs: Vec<(usize, Run)> = in_parallel(s.runs, |r| (r, one_run(s, r)));
    let dimmer = summarise(
        "dimmer (sequential)",
        s,
        runs.iter().map(|(_, r)| r.dimmer).collect(),
        runs.iter().map(|(_, r)| r.dimmer_bad).collect(),
    );
    let argo = summarise(
        &format!(
            "argo-style (>{}%/min, failureLimit {})",
            100.0 * s.argo_threshold,
            s.argo_failure_limit
        ),
        s,
        runs.iter().map(|(_, r)| r.argo).collect(),
        runs.iter().map(|(_, r)| r.argo_bad).collect(),
    );
    vec![dimmer, argo]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(split: f64, canary_error: f64, runs: usize) -> Scenario {
        Scenario {
            rps: 200.0,
            split,
            baseline_error: 0.001,
            canary_error,
            runs,
            horizon_s: 1800.0,
            seed: 7,
            burst_shape: None,
            interval_s: 5.0,
            analysis: Analysis::default(),
            argo_threshold: 0.01,
            argo_failure_limit: 3,
        }
    }

    #[test]
    fn a_seeded_simulation_is_repeatable() {
        let a = simulate(&scenario(0.1, 0.02, 20));
        let b = simulate(&scenario(0.1, 0.02, 20));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    /// The A/A false-alarm bound, checked by a seeded simulation small
    /// enough for CI: 300 half-hour rollouts, α = 0.05 so that a broken test
    /// would show; the bound is α, and we allow for sampling noise.
    #[test]
    fn a_a_false_alarms_stay_under_alpha() {
        let mut s = scenario(0.1, 0.001, 300);
        s.analysis.alpha = 0.05;
        let r = &simulate(&s)[0];
        let fpr = r.fpr.unwrap_or(1.0);
        // 300 runs at a true rate of 5% would exceed 9% with probability < 0.5%.
        assert!(fpr <= 0.09, "A/A false alarm rate {fpr}");
    }

    #[test]
    fn a_clear_regression_is_caught_faster_than_the_reference() {
        let r = simulate(&scenario(0.1, 0.02, 100));
        let (d, a) = (&r[0], &r[1]);
        assert!(d.detected >= 0.99, "{d:?}");
        assert!(
            d.median_ttd_s.unwrap_or(f64::MAX) < a.median_ttd_s.unwrap_or(f64::MAX),
            "{d:?} {a:?}"
        );
        assert!(d.bad_requests_served < a.bad_requests_served);
    }
}
