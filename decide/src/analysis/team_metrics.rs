//! The team's own metrics (`analysis.metrics`), judged beside the filter's
//! counts: what one reading holds, what each metric's test carries from one
//! look to the next, and what the numbers mean. Pure: the readings come from
//! `crate::providers`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::format::fmt_e;
use super::mean::{Contrast, MeanTest};
use super::safety::{MeanLadder, RateCounts};
use crate::spec::metric::{Direction, MetricCheck, MetricKind};

/// The cumulative values of one metric at one reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// A comparison: numerator and denominator (successes and trials, or
    /// sum and count) of the canary, then of the stable.
    Pair {
        canary: [f64; 2],
        stable: [f64; 2],
    },
    Gauge(f64),
}

/// One reading of every metric of a rollout, or why a metric has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub at_ms: u64,
    pub values: BTreeMap<String, Result<Value, String>>,
}

/// What one metric's test carries between looks; persisted with the rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricState {
    pub name: String,
    /// The values last fed, and when they were read: the next interval is
    /// what came after.
    pub last: Option<[f64; 4]>,
    pub last_at_ms: u64,
    /// This step's sums: canary numerator and denominator, then stable's.
    pub step: [f64; 4],
    pub test: MeanTest,
    /// Evidence of safety, over the whole rollout: a `ratio`'s successes
    /// and trials per version, a `mean`'s ladder of t-tests.
    #[serde(default)]
    pub safety: RateCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ladder: Option<MeanLadder>,
    /// Gauge: the last value, and looks in a row beyond the limit.
    pub value: Option<f64>,
    pub breaches: u32,
    /// Why the last look had no usable value.
    pub error: Option<String>,
}

/// How a comparison's spec becomes the contrast its test runs on.
pub fn contrast(m: &MetricCheck) -> Contrast {
    let r = m.tolerance.relative_percent.unwrap_or(0.0) / 100.0;
    let higher = m.direction == Some(Direction::Higher);
    Contrast {
        sign: if higher { 1.0 } else { -1.0 },
        k: if higher { 1.0 - r } else { 1.0 + r },
        shift: m.tolerance.absolute.unwrap_or(0.0),
    }
}

/// A reading older than this many intervals (plus the slack) is not used:
/// a provider that stopped answering must not be judged on its last word.
const STALE_INTERVALS: u64 = 3;
const STALE_SLACK_MS: u64 = 10_000;

impl MetricState {
    pub fn new(m: &MetricCheck) -> MetricState {
        MetricState {
            name: m.name.clone(),
            ..MetricState::default()
        }
    }

    /// Feeds one reading: a comparison's deltas since the last one, or a
    /// gauge's value. `compare`: whether there is a baseline to compare
    /// with (not once the canary has everyone).
    pub fn feed(
        &mut self,
        m: &MetricCheck,
        reading: Option<&Reading>,
        now_ms: u64,
        interval_ms: u64,
        compare: bool,
    ) {
        let Some(reading) = reading else {
            self.error = Some("not read yet".into());
            return;
        };
        let age = now_ms.saturating_sub(reading.at_ms);
        if age > STALE_INTERVALS * interval_ms + STALE_SLACK_MS {
            self.error = Some(format!(
                "its last reading is {}s old (the provider has not answered since)",
                age / 1000
            ));
            return;
        }
        let value = match reading.values.get(&m.name) {
            None => {
                self.error = Some("not read yet".into());
                return;
            }
            Some(Err(e)) => {
                self.error = Some(e.clone());
                return;
            }
            Some(Ok(v)) => *v,
        };
        if reading.at_ms == self.last_at_ms {
            return; // Seen already: nothing new since.
        }
        self.last_at_ms = reading.at_ms;
        self.error = None;
        match (m.kind, value) {
            (MetricKind::Gauge, Value::Gauge(x)) => {
                self.value = Some(x);
                let beyond = m.max.is_some_and(|max| x > max) || m.min.is_some_and(|min| x < min);
                self.breaches = if beyond { self.breaches + 1 } else { 0 };
            }
            (MetricKind::Ratio | MetricKind::Mean, Value::Pair { canary, stable }) => {
                let now = [canary[0], canary[1], stable[0], stable[1]];
                let Some(last) = self.last.replace(now) else {
                    return; // The first reading is where the deltas start.
                };
                let delta: Vec<f64> = now.iter().zip(last).map(|(n, l)| n - l).collect();
                let delta = [delta[0], delta[1], delta[2], delta[3]];
                // A counter that went down was reset: that interval is lost,
                // and the deltas start again from here.
                if delta.iter().any(|d| !d.is_finite() || *d < 0.0) {
                    return;
                }
                let delta = if compare {
                    delta
                } else {
                    [delta[0], delta[1], 0.0, 0.0]
                };
                for (s, d) in self.step.iter_mut().zip(delta) {
                    *s += d;
                }
                if compare {
                    self.test.add(delta, m.min_count as f64, &contrast(m));
                    let r = m.tolerance.relative_percent.unwrap_or(0.0) / 100.0;
                    let a = m.tolerance.absolute.unwrap_or(0.0);
                    match m.kind {
                        MetricKind::Ratio => {
                            self.safety.add(delta[0], delta[1], delta[2], delta[3])
                        }
                        _ => self.ladder.get_or_insert_with(MeanLadder::default).add(
                            delta,
                            m.min_count as f64,
                            m.higher_is_better(),
                            r,
                            a,
                        ),
                    }
                }
            }
            _ => self.error = Some("the provider's answer does not fit the metric's kind".into()),
        }
    }

    fn means(&self) -> (Option<f64>, Option<f64>) {
        let mean = |s: f64, n: f64| (n > 0.0).then(|| s / n);
        (
            mean(self.step[0], self.step[1]),
            mean(self.step[2], self.step[3]),
        )
    }
}

/// A metric's numbers, for the evidence, status and history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricEvidence {
    pub name: String,
    /// This step's value of the canary and of the baseline (a ratio or a
    /// mean), or the gauge's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_value: Option<f64>,
}

pub fn evidence(metrics: &[MetricCheck], states: &[MetricState]) -> Vec<MetricEvidence> {
    metrics
        .iter()
        .zip(states)
        .map(|(m, s)| match m.kind {
            MetricKind::Gauge => MetricEvidence {
                name: m.name.clone(),
                canary: s.value,
                baseline: None,
                e_value: None,
            },
            _ => {
                let (c, b) = s.means();
                MetricEvidence {
                    name: m.name.clone(),
                    canary: c,
                    baseline: b,
                    e_value: Some(s.test.e_value()),
                }
            }
        })
        .collect()
}

/// What the metrics say: an abort, a hold, or nothing against stepping up.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    Fail(String),
    Hold(String),
}

/// A gauge's limit, and which side of it is a breach.
fn limit_of(m: &MetricCheck) -> Option<(f64, &'static str)> {
    match (m.max, m.min) {
        (Some(max), _) => Some((max, "above its max")),
        (_, Some(min)) => Some((min, "below its min")),
        _ => None,
    }
}

fn show(m: &MetricCheck, x: f64) -> String {
    match m.kind {
        MetricKind::Ratio => format!("{:.2}%", 100.0 * x),
        _ => format!("{x:.4}"),
    }
}

fn unit(m: &MetricCheck) -> &'static str {
    match m.kind {
        MetricKind::Ratio => "trials",
        _ => "values",
    }
}

/// Sequential (`abort_at` = k/α) or fixed limits on the step's means
/// (`abort_at` = None). Aborts come first: one metric failing aborts even
/// while another cannot be read.
pub fn judge(
    metrics: &[MetricCheck],
    states: &[MetricState],
    abort_at: Option<(f64, usize)>,
    compare: bool,
) -> Option<Judgement> {
    for (m, s) in metrics.iter().zip(states) {
        if m.kind == MetricKind::Gauge {
            if s.breaches >= m.consecutive {
                let Some((limit, side)) = limit_of(m) else {
                    continue;
                };
                return Some(Judgement::Fail(format!(
                    "metric {} (gauge) is {} {side} {limit} at {} looks in a row",
                    m.name,
                    s.value.map_or("?".into(), |v| format!("{v}")),
                    s.breaches
                )));
            }
            continue;
        }
        if !compare {
            continue;
        }
        let (c, b) = s.means();
        let step = match (c, b) {
            (Some(c), Some(b)) => format!(
                "{} on the canary vs {} on the baseline this step",
                show(m, c),
                show(m, b)
            ),
            _ => "no values this step yet".into(),
        };
        let better = if m.higher_is_better() {
            "higher"
        } else {
            "lower"
        };
        match abort_at {
            Some((at, k)) => {
                let e = s.test.e_value();
                if s.test.harmful() && e >= at {
                    return Some(Judgement::Fail(format!(
                        "metric {} ({}, {better} is better) is worse on the canary: {step}, tolerance {}; e-value {} ≥ {at:.0} = {k}/α",
                        m.name,
                        m.kind.name(),
                        m.tolerance.describe(),
                        fmt_e(e)
                    )));
                }
            }
            None => {
                let need = m.min_count as f64;
                if let (Some(cm), Some(bm)) = (c, b) {
                    if s.step[1] >= need && s.step[3] >= need && contrast(m).margin(cm, bm) < 0.0 {
                        return Some(Judgement::Fail(format!(
                            "metric {} is worse on the canary than its tolerance ({}) allows: {step}",
                            m.name,
                            m.tolerance.describe()
                        )));
                    }
                }
            }
        }
    }
    for (m, s) in metrics.iter().zip(states) {
        if let Some(e) = &s.error {
            return Some(Judgement::Hold(format!(
                "holding: metric {} ({} provider) has no value: {e}",
                m.name,
                m.provider.name()
            )));
        }
        if m.kind == MetricKind::Gauge {
            if s.value.is_none() {
                return Some(Judgement::Hold(format!(
                    "holding: metric {} has no value yet",
                    m.name
                )));
            }
            // A guardrail beyond its limit holds the step at once: no step
            // up while it breaches, whatever `consecutive` allows before
            // the abort.
            if s.breaches > 0 {
                let Some((limit, side)) = limit_of(m) else {
                    continue;
                };
                return Some(Judgement::Hold(format!(
                    "holding: metric {} (gauge) is {} {side} {limit} ({} of {} looks in a row before an abort); no step up while it breaches",
                    m.name,
                    s.value.map_or("?".into(), |v| format!("{v}")),
                    s.breaches,
                    m.consecutive
                )));
            }
            continue;
        }
        let need = m.min_count as f64;
        let mut short = String::new();
        if s.step[1] < need {
            let _ = write!(short, "the canary has {:.0}", s.step[1]);
        } else if compare && s.step[3] < need {
            let _ = write!(short, "the baseline has {:.0}", s.step[3]);
        }
        if !short.is_empty() {
            return Some(Judgement::Hold(format!(
                "holding: metric {}: {short} of {} {} needed this step",
                m.name,
                m.min_count,
                unit(m)
            )));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratio() -> MetricCheck {
        serde_norway::from_str(
            "name: conversion\nprovider: {prometheus: {}}\nkind: ratio\n\
             successes: 'o{{version}}'\ntrials: 't{{version}}'\ndirection: higher\nmin_count: 50\n",
        )
        .unwrap()
    }

    fn gauge() -> MetricCheck {
        serde_norway::from_str(
            "name: queue\nprovider: {prometheus: {}}\nkind: gauge\nquery: q\nmax: 100\nconsecutive: 2\n",
        )
        .unwrap()
    }

    fn reading(at_ms: u64, name: &str, v: Result<Value, String>) -> Reading {
        Reading {
            at_ms,
            values: [(name.to_owned(), v)].into(),
        }
    }

    fn pair(c: [f64; 2], s: [f64; 2]) -> Result<Value, String> {
        Ok(Value::Pair {
            canary: c,
            stable: s,
        })
    }

    #[test]
    fn a_conversion_drop_aborts_with_the_metric_named() {
        let m = ratio();
        let mut s = MetricState::new(&m);
        let (mut c, mut b) = ([0.0, 0.0], [0.0, 0.0]);
        let mut verdict = None;
        for i in 0..400u64 {
            // Canary converts 5 of 100, baseline 10 of 100, every interval.
            c = [c[0] + 5.0, c[1] + 100.0];
            b = [b[0] + 10.0, b[1] + 100.0];
            s.feed(
                &m,
                Some(&reading(i * 1000, "conversion", pair(c, b))),
                i * 1000,
                1000,
                true,
            );
            verdict = judge(
                std::slice::from_ref(&m),
                std::slice::from_ref(&s),
                Some((3000.0, 3)),
                true,
            );
            if matches!(verdict, Some(Judgement::Fail(_))) {
                break;
            }
        }
        let Some(Judgement::Fail(why)) = verdict else {
            panic!("{verdict:?}")
        };
        assert!(
            why.starts_with("metric conversion (ratio, higher is better) is worse"),
            "{why}"
        );
        assert!(
            why.contains("5.00% on the canary vs 10.00%") && why.contains("3/α"),
            "{why}"
        );
    }

    #[test]
    fn no_value_holds_and_names_the_metric_never_passes() {
        let m = ratio();
        let mut s = MetricState::new(&m);
        s.feed(&m, None, 0, 1000, true);
        let hold = |s: &MetricState| {
            judge(
                std::slice::from_ref(&m),
                std::slice::from_ref(s),
                Some((3000.0, 3)),
                true,
            )
        };
        assert!(
            matches!(hold(&s), Some(Judgement::Hold(w)) if w.contains("metric conversion") && w.contains("not read yet"))
        );
        s.feed(
            &m,
            Some(&reading(
                1,
                "conversion",
                Err("query returned no series".into()),
            )),
            1,
            1000,
            true,
        );
        assert!(matches!(hold(&s), Some(Judgement::Hold(w)) if w.contains("no series")));
        // A reading that stopped coming is not used.
        s.feed(
            &m,
            Some(&reading(2, "conversion", pair([1.0, 10.0], [1.0, 10.0]))),
            2,
            1000,
            true,
        );
        s.feed(
            &m,
            Some(&reading(2, "conversion", pair([1.0, 10.0], [1.0, 10.0]))),
            60_000,
            1000,
            true,
        );
        assert!(
            matches!(hold(&s), Some(Judgement::Hold(w)) if w.contains("s old")),
            "{:?}",
            hold(&s)
        );
        // Enough trials in both, and healthy: nothing against stepping up.
        s.feed(
            &m,
            Some(&reading(
                60_000,
                "conversion",
                pair([6.0, 60.0], [6.0, 60.0]),
            )),
            60_000,
            1000,
            true,
        );
        assert_eq!(hold(&s), None);
        // A counter reset is skipped, not read as a drop.
        s.feed(
            &m,
            Some(&reading(
                61_000,
                "conversion",
                pair([0.0, 1.0], [6.0, 70.0]),
            )),
            61_000,
            1000,
            true,
        );
        assert_eq!(s.step, [5.0, 50.0, 5.0, 50.0]);
    }

    #[test]
    fn a_gauge_aborts_after_consecutive_breaches_only() {
        let m = gauge();
        let mut s = MetricState::new(&m);
        let judge1 = |s: &MetricState| {
            judge(
                std::slice::from_ref(&m),
                std::slice::from_ref(s),
                None,
                true,
            )
        };
        for (i, (v, fails, holds)) in [
            (150.0, false, true),
            (50.0, false, false),
            (150.0, false, true),
            (120.0, true, false),
        ]
        .iter()
        .enumerate()
        {
            s.feed(
                &m,
                Some(&reading(i as u64 + 1, "queue", Ok(Value::Gauge(*v)))),
                i as u64 + 1,
                1000,
                true,
            );
            assert_eq!(
                matches!(judge1(&s), Some(Judgement::Fail(_))),
                *fails,
                "look {i}"
            );
            // Beyond the limit, the step holds at once, before the abort.
            assert_eq!(
                matches!(judge1(&s), Some(Judgement::Hold(ref w)) if w.contains("no step up while it breaches")),
                *holds,
                "look {i}: {:?}",
                judge1(&s)
            );
        }
        let Some(Judgement::Fail(why)) = judge1(&s) else {
            unreachable!()
        };
        assert_eq!(
            why,
            "metric queue (gauge) is 120 above its max 100 at 2 looks in a row"
        );
    }

    #[test]
    fn the_threshold_method_compares_the_steps_means() {
        let m = ratio();
        let mut s = MetricState::new(&m);
        s.feed(
            &m,
            Some(&reading(1, "conversion", pair([0.0, 0.0], [0.0, 0.0]))),
            1,
            1000,
            true,
        );
        s.feed(
            &m,
            Some(&reading(2, "conversion", pair([4.0, 100.0], [5.0, 100.0]))),
            2,
            1000,
            true,
        );
        let v = judge(
            std::slice::from_ref(&m),
            std::slice::from_ref(&s),
            None,
            true,
        );
        assert!(
            matches!(v, Some(Judgement::Fail(w)) if w.contains("4.00% on the canary vs 5.00%"))
        );
    }
}
