//! `dimmer simulate --signal …`: many synthetic rollouts judged on the
//! team's own metrics and on the cohort's mix, through the same test code
//! the controller runs ([`MetricState`], [`MixTest`]), beside an Argo-style
//! fixed-threshold reference on the same random streams: each minute's
//! measurement of the canary against the baseline fails when it is worse
//! than the threshold, and the analysis fails after `failure_limit`
//! failures.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution, LogNormal, Poisson};
use serde::Serialize;

use super::counts::{in_parallel, quantile};
use crate::analysis::mix::MixTest;
use crate::analysis::team_metrics::{judge, Judgement, MetricState, Reading, Value};
use crate::analysis::AnalysisState;
use crate::spec::metric::{Direction, MetricCheck, MetricKind, Tolerance};
use crate::spec::Analysis;
use dimmer_core::config::{Dimension, DimensionSource};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Orders per checkout (a ratio); `effect` is the canary's relative drop.
    Conversion,
    /// Mean order value (log-normal, σ of the log `sigma`); `effect` is the
    /// canary's relative drop.
    OrderValue,
    /// The share of one value of a dimension among the canary's users is
    /// `1 − effect` times the baseline's (0.5: half as frequent).
    Mix,
}

#[derive(Debug, Clone)]
pub struct SignalScenario {
    pub signal: Signal,
    pub rps: f64,
    pub split: f64,
    /// Conversion of the baseline (checkouts that become orders).
    pub conversion: f64,
    /// Mix: the value's share of the baseline's requests.
    pub value_share: f64,
    /// Order value: mean and σ of the log.
    pub order_mean: f64,
    pub sigma: f64,
    pub effect: f64,
    pub runs: usize,
    pub horizon_s: f64,
    pub interval_s: f64,
    pub seed: u64,
    pub alpha: f64,
    /// Values a batch of the metric's test holds (`min_count`).
    pub min_count: u64,
    /// Reference: a minute fails when the canary is worse than the
    /// baseline by more than this, relatively (or for the mix, when the
    /// value's share differs by more than this, relatively).
    pub reference_threshold: f64,
    pub reference_failure_limit: u32,
    /// The metric's tolerance (none: any harm is harm).
    pub tolerance: Tolerance,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignalResult {
    pub detector: String,
    /// Runs stopped (aborted, or held for the mix) within the horizon.
    pub detected: f64,
    /// In an A/A scenario (no effect), stops per rollout-hour.
    pub false_alarms_per_hour: Option<f64>,
    pub median_ttd_s: Option<f64>,
    pub p90_ttd_s: Option<f64>,
}

fn metric(s: &SignalScenario) -> MetricCheck {
    let ratio = s.signal == Signal::Conversion;
    let q = |name: &str| Some(format!("{name}{{{{version}}}}"));
    MetricCheck {
        name: if ratio { "conversion" } else { "order_value" }.into(),
        provider: Default::default(),
        kind: if ratio {
            MetricKind::Ratio
        } else {
            MetricKind::Mean
        },
        successes: ratio.then(|| q("n")).flatten(),
        trials: ratio.then(|| q("d")).flatten(),
        sum: (!ratio).then(|| q("n")).flatten(),
        count: (!ratio).then(|| q("d")).flatten(),
        query: None,
        direction: Some(Direction::Higher),
        tolerance: s.tolerance,
        min_count: s.min_count,
        max: None,
        min: None,
        consecutive: 3,
    }
}

struct Run {
    dimmer: Option<f64>,
    reference: Option<f64>,
}

fn one_run(s: &SignalScenario, run: usize) -> Run {
    let mut rng = StdRng::seed_from_u64(s.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ run as u64);
    let arrivals = Poisson::new((s.rps * s.interval_s).max(1e-9)).ok();
    let values = LogNormal::new(s.order_mean.ln() - s.sigma * s.sigma / 2.0, s.sigma).ok();
    let m = metric(s);
    let analysis = Analysis {
        alpha: s.alpha,
        metrics: vec![m.clone()],
        dimensions: vec![Dimension {
            source: DimensionSource::Header("x-country".into()),
            max_values: dimmer_core::config::DEFAULT_MAX_VALUES,
        }],
        ..Analysis::default()
    };
    // What the controller splits α by for such a spec.
    let k = AnalysisState::abort_tests(&analysis);
    let abort_at = k as f64 / s.alpha;
    let hold_at = AnalysisState::hold_tests(&analysis) as f64 / s.alpha;
    let mut state = MetricState::new(&m);
    let mut mix = MixTest::new(&analysis.dimensions[0]);
    let mut cum = [0.0f64; 4];
    let (mut dimmer, mut reference) = (None, None);
    let mut win = [0.0f64; 4];
    let (mut win_start, mut failures) = (0.0, 0);
    let binomial = |n: u64, p: f64, rng: &mut StdRng| {
        Binomial::new(n, p.clamp(0.0, 1.0)).map_or(0, |d| d.sample(rng)) as f64
    };
    let intervals = (s.horizon_s / s.interval_s).ceil() as usize;
    for i in 1..=intervals {
        let t = i as f64 * s.interval_s;
        let n = arrivals.as_ref().map_or(0.0, |d| d.sample(&mut rng)) as u64;
        let nc = binomial(n, s.split, &mut rng) as u64;
        let nb = n - nc;
        // This interval's numerator and denominator of each arm.
        let delta = match s.signal {
            Signal::Conversion => [
                binomial(nc, s.conversion * (1.0 - s.effect), &mut rng),
                nc as f64,
                binomial(nb, s.conversion, &mut rng),
                nb as f64,
            ],
            Signal::OrderValue => {
                let (oc, ob) = (
                    binomial(nc, s.conversion, &mut rng) as u64,
                    binomial(nb, s.conversion, &mut rng) as u64,
                );
                let mut sum = |orders: u64, scale: f64| {
                    (0..orders)
                        .map(|_| values.as_ref().map_or(0.0, |d| d.sample(&mut rng)) * scale)
                        .sum::<f64>()
                };
                let sc = sum(oc, 1.0 - s.effect);
                let sb = sum(ob, 1.0);
                [sc, oc as f64, sb, ob as f64]
            }
            Signal::Mix => [
                binomial(nc, s.value_share * (1.0 - s.effect), &mut rng),
                nc as f64,
                binomial(nb, s.value_share, &mut rng),
                nb as f64,
            ],
        };
        for (c, d) in cum.iter_mut().zip(delta) {
            *c += d;
        }
        let now_ms = (t * 1000.0) as u64;
        if dimmer.is_none() {
            match s.signal {
                Signal::Mix => {
                    let counts = |value: f64, all: f64| {
                        [("fr".to_string(), value), ("rest".to_string(), all - value)]
                            .into_iter()
                            .collect()
                    };
                    mix.feed(
                        &analysis.dimensions[0],
                        &counts(delta[0], delta[1]),
                        &counts(delta[2], delta[3]),
                    );
                    if mix.e_value(&analysis.dimensions[0]) >= hold_at {
                        dimmer = Some(t);
                    }
                }
                _ => {
                    let reading = Reading {
                        at_ms: now_ms,
                        values: [(
                            m.name.clone(),
                            Ok(Value::Pair {
                                canary: [cum[0], cum[1]],
                                stable: [cum[2], cum[3]],
                            }),
                        )]
                        .into(),
                    };
                    state.feed(
                        &m,
                        Some(&reading),
                        now_ms,
                        (s.interval_s * 1000.0) as u64,
                        true,
                    );
                    let verdict = judge(
                        std::slice::from_ref(&m),
                        std::slice::from_ref(&state),
                        Some((abort_at, k)),
                        true,
                    );
                    if let Some(Judgement::Fail(_)) = verdict {
                        dimmer = Some(t);
                    }
                }
            }
        }
        if reference.is_none() {
            for (w, d) in win.iter_mut().zip(delta) {
                *w += d;
            }
            if t - win_start >= 60.0 - 1e-9 {
                if win[1] > 0.0 && win[3] > 0.0 {
                    let (c, b) = (win[0] / win[1], win[2] / win[3]);
                    let bad = match s.signal {
                        Signal::Mix => (c - b).abs() > s.reference_threshold * b,
                        _ => c < (1.0 - s.reference_threshold) * b,
                    };
                    if bad {
                        failures += 1;
                    }
                }
                if failures > s.reference_failure_limit {
                    reference = Some(t);
                }
                (win, win_start) = ([0.0; 4], t);
            }
        }
        if dimmer.is_some() && reference.is_some() {
            break;
        }
    }
    Run { dimmer, reference }
}

fn summarise(name: String, s: &SignalScenario, ttd: Vec<Option<f64>>) -> SignalResult {
    let runs = ttd.len().max(1) as f64;
    let mut hits: Vec<f64> = ttd.into_iter().flatten().collect();
    hits.sort_by(f64::total_cmp);
    let detected = hits.len() as f64 / runs;
    // Rollout-hours at risk: each run counts until it stopped or ended.
    let hours: f64 =
        hits.iter().sum::<f64>() / 3600.0 + (runs - hits.len() as f64) * s.horizon_s / 3600.0;
    SignalResult {
        detector: name,
        detected,
        false_alarms_per_hour: (s.effect == 0.0).then(|| hits.len() as f64 / hours.max(1e-9)),
        median_ttd_s: quantile(&hits, 0.5),
        p90_ttd_s: quantile(&hits, 0.9),
    }
}

pub fn simulate_signal(s: &SignalScenario) -> Vec<SignalResult> {
    let runs = in_parallel(s.runs, |r| one_run(s, r));
    let what = match s.signal {
        Signal::Mix => "mix test (hold)",
        Signal::Conversion => "safe t-test on conversion",
        Signal::OrderValue => "safe t-test on order value",
    };
    vec![
        summarise(
            format!("dimmer ({what})"),
            s,
            runs.iter().map(|r| r.dimmer).collect(),
        ),
        summarise(
            format!(
                "argo-style (>{}% worse per minute, failureLimit {})",
                100.0 * s.reference_threshold,
                s.reference_failure_limit
            ),
            s,
            runs.iter().map(|r| r.reference).collect(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(signal: Signal, effect: f64, runs: usize) -> SignalScenario {
        SignalScenario {
            signal,
            rps: 200.0,
            split: 0.1,
            conversion: 0.05,
            value_share: 0.2,
            order_mean: 50.0,
            sigma: 0.8,
            effect,
            runs,
            horizon_s: 3600.0,
            interval_s: 5.0,
            seed: 11,
            alpha: 0.05,
            min_count: 30,
            reference_threshold: 0.05,
            reference_failure_limit: 3,
            tolerance: Tolerance::default(),
        }
    }

    /// Small enough for CI, with α = 0.05 so that a broken test would show:
    /// the A/A stop rate stays under α per run for each signal.
    #[test]
    fn a_a_stops_stay_under_alpha_for_every_signal() {
        for signal in [Signal::Conversion, Signal::OrderValue, Signal::Mix] {
            let r = &simulate_signal(&scenario(signal, 0.0, 200))[0];
            assert!(r.detected <= 0.1, "{signal:?}: {r:?}");
        }
    }

    #[test]
    fn a_large_harm_is_found_by_every_test() {
        for (signal, effect) in [
            (Signal::Conversion, 0.5),
            (Signal::OrderValue, 0.3),
            (Signal::Mix, 0.5),
        ] {
            let r = &simulate_signal(&scenario(signal, effect, 40))[0];
            assert!(r.detected >= 0.9, "{signal:?}: {r:?}");
        }
    }
}
