//! Every comparative test's bound on the canary's harm, against its
//! tolerance, in the test's own units; and what a step up waits for while
//! any bound is not within. Read by the engine (the gate), and shown
//! wherever a verdict is (status, history, `/metrics`, the page, webhooks).

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::safety::{self, Boundary, Prior, RateCounts, ANY, MAX_MULTIPLE, RARE, SAFETY_ALPHA};
use super::state::AnalysisState;
use crate::spec::metric::{MetricCheck, MetricKind};
use crate::spec::Analysis;

/// One test's evidence of safety.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafetyRow {
    /// `errors`, `latency > 250 ms`, or the metric's name.
    pub test: String,
    /// The bound, in tolerances: the canary is at most this many
    /// tolerances worse (`None`: not even [`MAX_MULTIPLE`] is ruled out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<f64>,
    /// The bound and the tolerance in the test's units, for people.
    pub bound_text: String,
    pub tolerance_text: String,
    pub within: bool,
    /// More canary requests needed at the current rates, when that can be
    /// said (rates only; `None` too when the estimate is beyond the tolerance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_requests: Option<f64>,
    /// Whether the canary's estimate is itself beyond the tolerance.
    #[serde(default)]
    pub estimate_beyond: bool,
}

/// How a bound of `s` tolerances reads for a rate test.
struct Units {
    /// Per tolerance, in the shown unit.
    per: f64,
    suffix: &'static str,
    prefix: &'static str,
}

impl Units {
    fn show(&self, s: f64) -> String {
        let v = s * self.per;
        let digits = if v.abs() >= 10.0 {
            0
        } else if v.abs() >= 1.0 {
            1
        } else {
            2
        };
        format!("{}{v:.digits$}{}", self.prefix, self.suffix)
    }
}

fn rate_row(
    test: String,
    counts: &RateCounts,
    boundary: &Boundary,
    prior: Prior,
    units: &Units,
    trials_per_request: f64,
) -> SafetyRow {
    let bound = safety::rate_bound(counts, boundary, prior, SAFETY_ALPHA);
    let more = safety::more_needed(counts, boundary, prior, SAFETY_ALPHA);
    let estimate_beyond = more.is_none() && counts.canary_n > 0.0 && counts.baseline_n > 0.0;
    SafetyRow {
        test,
        bound,
        bound_text: bound.map_or(format!("more than {}", units.show(MAX_MULTIPLE)), |s| {
            units.show(s)
        }),
        tolerance_text: units.show(1.0),
        within: bound.is_some_and(|s| s <= 1.0),
        more_requests: more.map(|m| m / trials_per_request.max(1e-9)),
        estimate_beyond,
    }
}

fn metric_units(m: &MetricCheck) -> Units {
    match (m.tolerance.relative_percent, m.tolerance.absolute) {
        (Some(r), _) if r > 0.0 => Units {
            per: r,
            suffix: "% worse",
            prefix: "",
        },
        (_, a) => Units {
            per: a.unwrap_or(0.0)
                * if m.kind == MetricKind::Ratio {
                    100.0
                } else {
                    1.0
                },
            suffix: if m.kind == MetricKind::Ratio {
                " pp worse"
            } else {
                " worse"
            },
            prefix: "",
        },
    }
}

/// Every comparative test's row, errors first.
pub fn rows(a: &Analysis, state: &AnalysisState) -> Vec<SafetyRow> {
    let pp = |per: f64| Units {
        per,
        suffix: " pp",
        prefix: "+",
    };
    let mut rows = vec![rate_row(
        "errors".into(),
        &state.safe_errors,
        &Boundary::excess(a.max_rate_ratio, a.max_rate_increase_pp / 100.0),
        RARE,
        &pp(a.max_rate_increase_pp),
        1.0,
    )];
    for ((bound, _), counts) in state.latency.iter().zip(&state.safe_slow) {
        rows.push(rate_row(
            format!("latency > {bound} ms"),
            counts,
            &Boundary::excess(1.0, a.latency.max_slow_increase_pp / 100.0),
            RARE,
            &pp(a.latency.max_slow_increase_pp),
            1.0,
        ));
    }
    let requests = state.safe_errors.canary_n;
    for (m, s) in a.metrics.iter().zip(&state.metrics) {
        if !m.is_comparison() {
            continue;
        }
        let r = m.tolerance.relative_percent.unwrap_or(0.0) / 100.0;
        let abs = m.tolerance.absolute.unwrap_or(0.0);
        let units = metric_units(m);
        if m.kind == MetricKind::Ratio {
            let per_request = if requests > 0.0 {
                s.safety.canary_n / requests
            } else {
                1.0
            };
            rows.push(rate_row(
                m.name.clone(),
                &s.safety,
                &Boundary::of_contrast(m.higher_is_better(), r, abs),
                ANY,
                &units,
                per_request,
            ));
        } else {
            let bound = s.ladder.as_ref().and_then(|l| l.bound(SAFETY_ALPHA));
            rows.push(SafetyRow {
                test: m.name.clone(),
                bound,
                bound_text: bound.map_or(
                    format!("more than {}", units.show(safety::MEAN_LEVELS[9])),
                    |b| units.show(b),
                ),
                tolerance_text: units.show(1.0),
                within: bound.is_some_and(|b| b <= 1.0),
                more_requests: None,
                estimate_beyond: false,
            });
        }
    }
    rows
}

/// The canary's requests per second over the last minute of looks.
fn canary_rate(state: &AnalysisState) -> Option<f64> {
    let last = state.canary_history.last()?.0;
    let from = last.saturating_sub(60_000);
    let window: Vec<_> = state
        .canary_history
        .iter()
        .filter(|(t, _, _)| *t > from)
        .collect();
    let first = window.first()?.0;
    let before = state
        .canary_history
        .iter()
        .rev()
        .find(|(t, _, _)| *t < first)
        .map_or(first, |x| x.0);
    let secs = last.saturating_sub(before) as f64 / 1000.0;
    let n: f64 = window.iter().map(|x| x.1).sum();
    (secs > 0.0 && n > 0.0).then(|| n / secs)
}

fn round(n: f64) -> String {
    let n = n.ceil();
    if n >= 10_000.0 {
        let k = (n / 1000.0).round() * 1000.0;
        let s = format!("{k:.0}");
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else {
        format!("{n:.0}")
    }
}

/// What a step up waits for, in words and numbers; `None` when every
/// bound is within its tolerance.
pub fn waiting_for(rows: &[SafetyRow], state: &AnalysisState) -> Option<String> {
    let waiting: Vec<&SafetyRow> = rows.iter().filter(|r| !r.within).collect();
    if waiting.is_empty() {
        return None;
    }
    let rate = canary_rate(state);
    let mut s = String::from("waiting for evidence of safety: ");
    for (i, r) in waiting.iter().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        let over = if r.bound_text.starts_with('+') || r.bound_text.starts_with("more than +") {
            " over the baseline"
        } else {
            ""
        };
        let _ = write!(
            s,
            "{}: canary at most {}{over} (bound), tolerance {}",
            r.test, r.bound_text, r.tolerance_text
        );
        if r.estimate_beyond {
            s.push_str(" — the canary's own estimate is beyond the tolerance, so more traffic like this will not show it within");
        } else if let Some(more) = r.more_requests.filter(|m| *m > 0.0) {
            let _ = write!(s, " — about {} more canary requests", round(more));
            if let Some(rate) = rate {
                let secs = (more / rate).ceil() as u64;
                let _ = write!(
                    s,
                    ", ~{} at the current traffic",
                    humantime::format_duration(std::time::Duration::from_secs(if secs > 120 {
                        secs / 60 * 60
                    } else {
                        secs
                    }))
                );
            }
        }
    }
    Some(s)
}

/// The rows in one line, for the step up's reason: "errors +0.21 pp ≤ +0.50 pp, …".
pub fn all_within(rows: &[SafetyRow]) -> String {
    rows.iter()
        .map(|r| format!("{} {} ≤ {}", r.test, r.bound_text, r.tolerance_text))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_counts_read_with_thousands() {
        assert_eq!(round(41_234.0), "41,000");
        assert_eq!(round(1_234_567.0), "1,235,000");
        assert_eq!(round(812.2), "813");
    }
}
