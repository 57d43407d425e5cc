//! Every test a rollout's analysis runs, built together from its spec and fed
//! together each interval, whatever the method.

use serde::{Deserialize, Serialize};

use super::eprocess::{CeilingTest, RateRatioTest, ShareTest};
use super::input::Input;
use super::mix::MixTest;
use super::safety::RateCounts;
use super::team_metrics::{MetricState, Reading};
use crate::spec::Analysis;

/// Bounds the burn-rate history: one entry per interval, merged pairwise
/// from the oldest when full, so a week-long rollout keeps its whole life at
/// a coarser grain and the state stays small.
pub const MAX_HISTORY: usize = 4096;

/// What the tests carry from one interval to the next; persisted with the
/// rollout, so a restart loses no evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisState {
    /// Canary against baseline: errors (5xx and resets).
    pub errors: RateRatioTest,
    /// Canary against baseline: requests slower than each of `bounds_ms`.
    pub latency: Vec<(f64, RateRatioTest)>,
    /// The canary's share of requests against its weight.
    pub share: ShareTest,
    /// The canary's own error rate against `error_rate.max_percent`.
    pub error_ceiling: CeilingTest,
    /// The canary's requests slower than `latency.max_ms`, against the share
    /// the percentile allows (1% for p99), when the spec sets a ceiling.
    pub latency_ceiling: Option<(f64, CeilingTest)>,
    /// `(at_ms, canary requests, canary errors)` per interval, for burn windows.
    pub canary_history: Vec<(u64, f64, f64)>,
    /// One per `analysis.metrics`, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricState>,
    /// One per `analysis.dimensions`, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mix: Vec<MixTest>,
    /// Evidence of safety over the whole rollout (see [`super::safety`]):
    /// errors, then requests slower than each of `latency.bounds_ms`.
    #[serde(default)]
    pub safe_errors: RateCounts,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub safe_slow: Vec<RateCounts>,
}

impl AnalysisState {
    /// All of a rollout's tests, from its spec. The only constructor.
    pub fn for_spec(a: &Analysis) -> AnalysisState {
        AnalysisState {
            errors: RateRatioTest::new(a.max_rate_ratio),
            latency: a
                .latency
                .bounds_ms
                .iter()
                .map(|&b| (b, RateRatioTest::new(1.0)))
                .collect(),
            share: ShareTest::default(),
            error_ceiling: CeilingTest::new(a.error_rate.max_percent / 100.0),
            latency_ceiling: a
                .latency
                .max_ms
                .map(|max| (max, CeilingTest::new(1.0 - a.latency.percentile / 100.0))),
            canary_history: Vec::new(),
            metrics: a.metrics.iter().map(MetricState::new).collect(),
            mix: a.dimensions.iter().map(MixTest::new).collect(),
            safe_errors: RateCounts::default(),
            safe_slow: vec![RateCounts::default(); a.latency.bounds_ms.len()],
        }
    }

    /// How many tests may hold a rollout (the sample ratio and each
    /// dimension's mix): α is split evenly among them too.
    pub fn hold_tests(a: &Analysis) -> usize {
        1 + a.dimensions.len()
    }

    /// How many tests may abort a rollout: α is split evenly among them, so
    /// each aborts at `abort_tests/α` and all together keep a canary no
    /// worse than allowed from being aborted with probability above α
    /// (the union bound). The burn rate and gauges are rules on fixed
    /// limits, not tests, and take no share.
    pub fn abort_tests(a: &Analysis) -> usize {
        let comparisons = a.metrics.iter().filter(|m| m.is_comparison()).count();
        1 + usize::from(!a.latency.bounds_ms.is_empty())
            + 1
            + usize::from(a.latency.max_ms.is_some())
            + comparisons
    }

    /// Feeds one reading of the team's metrics to their tests. `compare`:
    /// whether there is a baseline (not once the canary has everyone).
    pub fn feed_metrics(
        &mut self,
        a: &Analysis,
        reading: Option<&Reading>,
        now_ms: u64,
        compare: bool,
    ) {
        let interval = a.interval.as_millis() as u64;
        for (m, s) in a.metrics.iter().zip(self.metrics.iter_mut()) {
            s.feed(m, reading, now_ms, interval, compare);
        }
    }

    /// A new step: the metrics' step sums start again (their tests do not).
    pub fn begin_step(&mut self) {
        for s in &mut self.metrics {
            s.step = [0.0; 4];
        }
    }

    /// Feeds one interval's counts to every test.
    pub fn feed(&mut self, input: &Input<'_>) {
        let c = input.interval.canary;
        let (nc, ec) = (c.requests(), c.errors());
        self.canary_history.push((input.now_ms, nc, ec));
        if self.canary_history.len() > MAX_HISTORY {
            let merged: Vec<_> = self
                .canary_history
                .chunks(2)
                .map(|w| {
                    let last = w.last().map_or(0, |x| x.0);
                    (
                        last,
                        w.iter().map(|x| x.1).sum(),
                        w.iter().map(|x| x.2).sum(),
                    )
                })
                .collect();
            self.canary_history = merged;
        }
        self.error_ceiling.update(ec, nc);
        if let Some((max, test)) = &mut self.latency_ceiling {
            test.update(c.slower_than(*max), nc);
        }
        let Some(b) = input.interval.baseline else {
            return;
        };
        let nb = b.requests();
        if nc + nb <= 0.0 {
            return;
        }
        let pi = nc / (nc + nb);
        self.errors.update(ec, ec + b.errors(), pi);
        self.safe_errors.add(ec, nc, b.errors(), nb);
        if self.safe_slow.len() != self.latency.len() {
            self.safe_slow = vec![RateCounts::default(); self.latency.len()];
        }
        for ((bound, _), counts) in self.latency.iter().zip(self.safe_slow.iter_mut()) {
            counts.add(c.slower_than(*bound), nc, b.slower_than(*bound), nb);
        }
        for (bound, test) in &mut self.latency {
            let (sc, sb) = (c.slower_than(*bound), b.slower_than(*bound));
            test.update(sc, sc + sb, pi);
        }
        // At 0% the canary's requests are a preview's or a shadow's: there
        // is no share of users to check them against.
        if input.weight > 0.0 {
            self.share.update(nc, nc + nb, input.weight);
            for (d, test) in input.analysis.dimensions.iter().zip(self.mix.iter_mut()) {
                let name = d.name();
                let empty = Default::default();
                test.feed(
                    d,
                    c.mix.get(&name).unwrap_or(&empty),
                    b.mix.get(&name).unwrap_or(&empty),
                );
            }
        }
    }

    /// The latency tests' e-value: the average over the bounds.
    pub fn e_latency(&self) -> f64 {
        if self.latency.is_empty() {
            return 1.0;
        }
        self.latency.iter().map(|(_, t)| t.e_value()).sum::<f64>() / self.latency.len() as f64
    }
}
