//! What each rollout looked like at each look of the analysis, kept in
//! memory for the web UI's charts: weight, requests, error rates,
//! latencies and each sequential test's e-value against its boundary.
//! Bounded: the oldest points go first.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use dimmer_decide::counts::Snapshot;
use dimmer_decide::engine::RolloutState;

/// Points kept per rollout: an hour at the default 5 s interval.
pub const MAX_POINTS: usize = 720;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Counts every point ever recorded for the rollout, so that a reader
    /// asks for what came after the last one it has.
    pub seq: u64,
    pub at_ms: u64,
    pub step: usize,
    pub weight_bp: u32,
    pub phase: &'static str,
    pub canary_requests: f64,
    pub baseline_requests: f64,
    pub canary_error_rate: f64,
    pub baseline_error_rate: f64,
    pub canary_p50_ms: Option<f64>,
    pub canary_p99_ms: Option<f64>,
    pub baseline_p50_ms: Option<f64>,
    pub baseline_p99_ms: Option<f64>,
    pub e_errors: Option<f64>,
    pub e_latency: Option<f64>,
    pub e_share: Option<f64>,
    /// Where a test decides (1/α).
    pub e_threshold: Option<f64>,
    /// The canary's error rate over its SLO's budget rate, if it has one.
    pub burn_rate: Option<f64>,
    /// Evidence of safety: each comparative test's bound on the canary's
    /// harm, in tolerances (≤ 1 lets a step go up; `null`: nothing ruled
    /// out yet), by test.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub bounds: BTreeMap<String, Option<f64>>,
}

#[derive(Default)]
pub struct Series {
    by_rollout: BTreeMap<String, (u64, VecDeque<Point>)>,
}

impl Series {
    /// Records how `s` stands after a look at `snap`.
    pub fn record(&mut self, s: &RolloutState, snap: Option<&Snapshot>, now_ms: u64) {
        let step = match (snap, &s.step_baseline) {
            (Some(now), Some(base)) => Some(now.since(base)),
            _ => None,
        };
        let quantile = |version: &str, q: f64| {
            step.as_ref()
                .and_then(|d| d.version(version).latency_quantile(q))
        };
        let (canary, stable) = (&s.spec.canary, &s.spec.stable);
        let ev = &s.evidence;
        let burn_rate = s.spec.slo.as_ref().and_then(|slo| {
            let budget = 1.0 - slo.objective_percent / 100.0;
            (budget > 0.0 && ev.canary_requests > 0.0).then(|| ev.canary_rate() / budget)
        });
        let (seq, points) = self.by_rollout.entry(s.spec.name.clone()).or_default();
        *seq += 1;
        points.push_back(Point {
            seq: *seq,
            at_ms: now_ms,
            step: s.step,
            weight_bp: s.weight_bp,
            phase: s.phase.name(),
            canary_requests: ev.canary_requests,
            baseline_requests: ev.baseline_requests,
            canary_error_rate: ev.canary_rate(),
            baseline_error_rate: ev.baseline_rate(),
            canary_p50_ms: quantile(canary, 0.5),
            canary_p99_ms: quantile(canary, 0.99),
            baseline_p50_ms: quantile(stable, 0.5),
            baseline_p99_ms: quantile(stable, 0.99),
            e_errors: ev.e_errors,
            e_latency: ev.e_latency,
            e_share: ev.e_share,
            e_threshold: ev.e_threshold,
            burn_rate,
            bounds: ev
                .safety
                .iter()
                .map(|r| (r.test.clone(), r.bound))
                .collect(),
        });
        while points.len() > MAX_POINTS {
            points.pop_front();
        }
    }

    /// The points of `name` after `after` (a `seq`; 0 for all).
    pub fn since(&self, name: &str, after: u64) -> Vec<Point> {
        self.by_rollout
            .get(name)
            .map(|(_, p)| p.iter().filter(|p| p.seq > after).cloned().collect())
            .unwrap_or_default()
    }

    pub fn forget(&mut self, name: &str) {
        self.by_rollout.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dimmer_decide::spec::RolloutSpec;

    #[test]
    fn keeps_the_newest_points_and_answers_from_a_seq() {
        let spec = RolloutSpec::from_yaml(
            "name: checkout\nstable: v1\ncanary: v2\nsteps: [{percent: 10}]\n",
        )
        .unwrap();
        let s = RolloutState::new(spec, 0);
        let mut series = Series::default();
        for t in 0..(MAX_POINTS as u64 + 10) {
            series.record(&s, None, t);
        }
        let all = series.since("checkout", 0);
        assert_eq!(all.len(), MAX_POINTS);
        assert_eq!(all[0].seq, 11);
        assert_eq!(series.since("checkout", all[MAX_POINTS - 3].seq).len(), 2);
        assert!(series.since("search", 0).is_empty());
        series.forget("checkout");
        assert!(series.since("checkout", 0).is_empty());
    }
}
