//! Whole rollouts through the engine itself (`engine::advance_with`), to
//! measure what promoting on evidence of safety buys and costs: how often a
//! canary beyond its tolerance reaches 100%, and how long a healthy one
//! takes, beside `promote_on: no_alarm` on the same random streams.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution, LogNormal, Poisson};
use serde::Serialize;

use crate::analysis::team_metrics::{Reading, Value};
use crate::counts::{Snapshot, VersionCounts};
use crate::engine::{advance_with, Observation, Phase, RolloutState};
use crate::spec::RolloutSpec;

/// What the canary is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// The error rate: baseline's and canary's, with the default tolerance
    /// (`max_rate_increase_pp`).
    Errors { baseline: f64, canary: f64 },
    /// The share of requests slower than 250 ms, with the default
    /// tolerance (`latency.max_slow_increase_pp`).
    Slow { baseline: f64, canary: f64 },
    /// A `ratio` metric, higher is better, with a relative tolerance.
    Conversion {
        baseline: f64,
        canary: f64,
        tolerance_percent: f64,
    },
    /// A `mean` metric, higher is better: log-normal order values (σ of
    /// the log 0.8) on 5% of requests, with a relative tolerance.
    OrderValue {
        baseline: f64,
        canary: f64,
        tolerance_percent: f64,
    },
}

/// Orders per request of [`Signal::OrderValue`], and σ of the log of a value.
const ORDERS: f64 = 0.05;
const SIGMA: f64 = 0.8;

#[derive(Debug, Clone)]
pub struct EvidenceScenario {
    pub rps: f64,
    pub pause_s: u64,
    /// Step percents; the last is 100.
    pub steps: Vec<f64>,
    pub signal: Signal,
    pub interval_s: u64,
    pub horizon_s: u64,
    pub runs: usize,
    pub seed: u64,
    /// `evidence` or `no_alarm`.
    pub promote_on: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvidenceResult {
    pub promote_on: String,
    /// Share of runs in which the canary reached 100% within the horizon.
    pub reached_100: f64,
    pub aborted: f64,
    pub median_to_100_s: Option<f64>,
}

fn spec_of(s: &EvidenceScenario) -> Result<RolloutSpec, crate::spec::SpecError> {
    let steps: String = s
        .steps
        .iter()
        .map(|p| format!("  - {{percent: {p}, pause: {}s}}\n", s.pause_s))
        .collect();
    // A ratio reads successes of trials, a mean a sum of a count.
    let metric = match s.signal {
        Signal::Conversion {
            tolerance_percent, ..
        } => Some(("ratio", "successes", "trials", tolerance_percent)),
        Signal::OrderValue {
            tolerance_percent, ..
        } => Some(("mean", "sum", "count", tolerance_percent)),
        Signal::Errors { .. } | Signal::Slow { .. } => None,
    }
    .map_or(String::new(), |(kind, num, den, tol)| {
        format!(
            "  metrics:\n  - name: conversion\n    provider: {{prometheus: {{}}}}\n    kind: {kind}\n    \
             {num}: 'a{{{{version}}}}'\n    {den}: 'b{{{{version}}}}'\n    direction: higher\n    \
             tolerance: {{relative_percent: {tol}}}\n    min_count: 30\n"
        )
    });
    // Each signal judged alone: the latency test only where it is the signal.
    let bounds = if matches!(s.signal, Signal::Slow { .. }) {
        "[250]"
    } else {
        "[]"
    };
    RolloutSpec::from_yaml(&format!(
        "name: sim\nstable: v1\ncanary: v2\nidentity: [{{header: x-user-id}}]\nsteps:\n{steps}\
         analysis:\n  interval: {}s\n  min_requests: 100\n  promote_on: {}\n  max_duration: 30d\n  \
         latency: {{bounds_ms: {bounds}}}\n{metric}",
        s.interval_s, s.promote_on
    ))
}

fn counts(ok: f64, errors: f64, slow: f64) -> VersionCounts {
    let mut c = VersionCounts::default();
    c.by_class.insert("2xx".into(), ok);
    c.by_class.insert("5xx".into(), errors);
    let n = ok + errors;
    c.latency = vec![(250.0, n - slow), (crate::counts::INF_BOUND, n)];
    c
}

/// The sum of `k` log-normal values of mean `mean`.
fn order_values(rng: &mut StdRng, k: f64, mean: f64) -> f64 {
    let mu = mean.max(1e-9).ln() - SIGMA * SIGMA / 2.0;
    LogNormal::new(mu, SIGMA).map_or(0.0, |d| (0..k as u64).map(|_| d.sample(rng)).sum())
}

/// Time to 100% (seconds), or `None`; and whether it was aborted.
fn one_run(s: &EvidenceScenario, spec: &RolloutSpec, run: usize) -> (Option<f64>, bool) {
    let mut rng = StdRng::seed_from_u64(s.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ run as u64);
    let Ok(per_interval) = Poisson::new((s.rps * s.interval_s as f64).max(1e-9)) else {
        return (None, false);
    };
    let mut state = RolloutState::new(spec.clone(), 0);
    // Cumulative: [ok, errors] per version, and conversions per version.
    let (mut c, mut b) = ([0.0f64; 2], [0.0f64; 2]);
    let (mut c_conv, mut b_conv) = (0.0, 0.0);
    let (mut c_slow, mut b_slow) = (0.0, 0.0);
    // A mean metric's sums and counts per version.
    let (mut c_sum, mut c_n, mut b_sum, mut b_n) = (0.0, 0.0, 0.0, 0.0);
    let draw = |rng: &mut StdRng, n: u64, p: f64| {
        Binomial::new(n, p.clamp(0.0, 1.0)).map_or(0, |d| d.sample(rng)) as f64
    };
    let mut now_ms = 0;
    while now_ms < s.horizon_s * 1000 {
        now_ms += s.interval_s * 1000;
        let n = per_interval.sample(&mut rng) as u64;
        let split = f64::from(state.weight_bp) / 10_000.0;
        let nc = Binomial::new(n, split).map_or(0, |d| d.sample(&mut rng));
        let nb = n - nc;
        let (mut pc, mut pb, mut conv_c, mut conv_b) = (0.0, 0.0, 0.0, 0.0);
        let (mut slow_c, mut slow_b) = (0.0, 0.0);
        match s.signal {
            Signal::Errors { baseline, canary } => (pc, pb) = (canary, baseline),
            Signal::Slow { baseline, canary } => (slow_c, slow_b) = (canary, baseline),
            Signal::Conversion {
                baseline, canary, ..
            } => (conv_c, conv_b) = (canary, baseline),
            Signal::OrderValue {
                baseline, canary, ..
            } => {
                let (kc, kb) = (draw(&mut rng, nc, ORDERS), draw(&mut rng, nb, ORDERS));
                c_sum += order_values(&mut rng, kc, canary);
                b_sum += order_values(&mut rng, kb, baseline);
                c_n += kc;
                b_n += kb;
            }
        }
        let (ec, eb) = (draw(&mut rng, nc, pc), draw(&mut rng, nb, pb));
        c[0] += nc as f64 - ec;
        c[1] += ec;
        b[0] += nb as f64 - eb;
        b[1] += eb;
        c_conv += draw(&mut rng, nc, conv_c);
        b_conv += draw(&mut rng, nb, conv_b);
        c_slow += draw(&mut rng, nc, slow_c);
        b_slow += draw(&mut rng, nb, slow_b);
        let snap = Snapshot::from_versions(
            [
                ("v1".to_string(), counts(b[0], b[1], b_slow)),
                ("v2".to_string(), counts(c[0], c[1], c_slow)),
            ]
            .into(),
        );
        let reading = Reading {
            at_ms: now_ms,
            values: [(
                "conversion".to_string(),
                Ok(if matches!(s.signal, Signal::OrderValue { .. }) {
                    Value::Pair {
                        canary: [c_sum, c_n],
                        stable: [b_sum, b_n],
                    }
                } else {
                    Value::Pair {
                        canary: [c_conv, c[0] + c[1]],
                        stable: [b_conv, b[0] + b[1]],
                    }
                }),
            )]
            .into(),
        };
        let out = advance_with(
            &state,
            Observation::Counts(&snap),
            Some(&reading),
            now_ms,
            None,
        );
        state = out.next;
        if state.weight_bp >= 10_000 {
            return (Some(now_ms as f64 / 1000.0), false);
        }
        if state.phase == Phase::Aborted {
            return (None, true);
        }
    }
    (None, false)
}

pub fn simulate_evidence(s: &EvidenceScenario) -> Result<EvidenceResult, crate::spec::SpecError> {
    let spec = spec_of(s)?;
    let mut times = Vec::new();
    let mut aborted = 0usize;
    for run in 0..s.runs {
        let (t, a) = one_run(s, &spec, run);
        if let Some(t) = t {
            times.push(t);
        }
        aborted += usize::from(a);
    }
    times.sort_by(f64::total_cmp);
    let runs = s.runs.max(1) as f64;
    Ok(EvidenceResult {
        promote_on: s.promote_on.to_owned(),
        reached_100: times.len() as f64 / runs,
        aborted: aborted as f64 / runs,
        median_to_100_s: (times.len() * 2 > s.runs).then(|| times[s.runs / 2]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(signal: Signal, promote_on: &'static str) -> EvidenceScenario {
        EvidenceScenario {
            rps: 200.0,
            pause_s: 20,
            steps: vec![10.0, 50.0, 100.0],
            signal,
            interval_s: 5,
            horizon_s: 1200,
            runs: 40,
            seed: 11,
            promote_on,
        }
    }

    /// The case: conversion 3% against 5% (40% worse, tolerance
    /// 10%), short pauses. On "no alarm" it reaches 100% in most runs; on
    /// evidence in none.
    #[test]
    fn a_canary_40_percent_worse_reaches_100_only_without_evidence() {
        let bad = Signal::Conversion {
            baseline: 0.05,
            canary: 0.03,
            tolerance_percent: 10.0,
        };
        let evidence = simulate_evidence(&scenario(bad, "evidence")).unwrap();
        assert_eq!(evidence.reached_100, 0.0, "{evidence:?}");
        let no_alarm = simulate_evidence(&scenario(bad, "no_alarm")).unwrap();
        assert!(no_alarm.reached_100 > 0.3, "{no_alarm:?}");
    }

    #[test]
    fn a_healthy_canary_completes_on_evidence() {
        let ok = Signal::Errors {
            baseline: 0.001,
            canary: 0.001,
        };
        let r = simulate_evidence(&scenario(ok, "evidence")).unwrap();
        assert!(r.reached_100 > 0.9, "{r:?}");
        assert!(r.median_to_100_s.is_some_and(|t| t > 40.0), "{r:?}");
    }
}
