//! The spec's `analysis` and `slo` sections: how canary is judged against
//! baseline, with every default, and the checks of those sections.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use super::error::{in_range, invalid, SpecError, MAX_PAUSE};
use super::metric::{validate_all, MetricCheck};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// `sequential` (anytime-valid tests, the default) or `threshold`
    /// (fixed limits on each step's counts).
    #[serde(default)]
    pub method: Method,
    /// Sequential: the false-alarm rate of the abort tests together
    /// (errors and latency get α/2 each).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Sequential: the canary's error rate may be up to this many times the
    /// baseline's before it counts as a regression (ρ0 ≥ 1).
    #[serde(default = "default_rho0")]
    pub max_rate_ratio: f64,
    /// Evidence of safety: the canary's error rate may be up to
    /// `max_rate_ratio` times the baseline's plus this many percentage
    /// points. The margin is what makes a baseline without errors
    /// provable at all.
    #[serde(default = "default_rate_increase_pp")]
    pub max_rate_increase_pp: f64,
    /// `evidence` (the default): a step goes up only when every comparative
    /// test's bound on the canary's harm is within its tolerance.
    /// `no_alarm`: when its pause is over and no test has found harm yet.
    #[serde(default)]
    pub promote_on: PromoteOn,
    /// How long a step may wait for evidence before it is inconclusive
    /// (each step may set its own `max_duration`).
    #[serde(
        default = "default_max_duration",
        with = "duration::max_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_duration: Option<Duration>,
    /// What an inconclusive step does: `hold` (the default; it raises
    /// `dimmer_rollout_inconclusive`) or `abort`. It never promotes.
    #[serde(default)]
    pub on_inconclusive: OnInconclusive,
    /// How often the controller reads metrics and decides.
    #[serde(default = "default_interval", with = "duration::interval")]
    pub interval: Duration,
    /// Requests each version needs at a step before it may step up.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    #[serde(default)]
    pub error_rate: ErrorRateCheck,
    #[serde(default)]
    pub latency: LatencyCheck,
    /// What to do while no metrics can be read.
    #[serde(default)]
    pub metrics_loss: MetricsLoss,
    /// The team's own signals, from Prometheus or any HTTP JSON source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricCheck>,
    /// Who the users are (a header, a cookie, the user agent's class): the
    /// canary's mix of each is tested against the baseline's, and a
    /// mismatch holds the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<dimmer_core::config::Dimension>,
}

/// Losing metrics is not a pass: the rollout holds (the default), or aborts
/// once they have been missing for `after`, like Argo's consecutive error
/// limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsLoss {
    #[serde(default)]
    pub policy: MetricsLossPolicy,
    #[serde(default = "default_loss_after", with = "duration::after")]
    pub after: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsLossPolicy {
    #[default]
    Hold,
    Abort,
}

fn default_loss_after() -> Duration {
    Duration::from_secs(120)
}

impl Default for MetricsLoss {
    fn default() -> Self {
        MetricsLoss {
            policy: MetricsLossPolicy::default(),
            after: default_loss_after(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromoteOn {
    #[default]
    Evidence,
    NoAlarm,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInconclusive {
    #[default]
    Hold,
    Abort,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    Sequential,
    Threshold,
}

fn default_alpha() -> f64 {
    0.001
}
fn default_rho0() -> f64 {
    1.0
}
fn default_rate_increase_pp() -> f64 {
    0.5
}
fn default_max_duration() -> Option<Duration> {
    Some(Duration::from_secs(3600))
}
fn default_slow_increase_pp() -> f64 {
    1.0
}

fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_min_requests() -> u64 {
    200
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            method: Method::default(),
            alpha: default_alpha(),
            max_rate_ratio: default_rho0(),
            max_rate_increase_pp: default_rate_increase_pp(),
            promote_on: PromoteOn::default(),
            max_duration: default_max_duration(),
            on_inconclusive: OnInconclusive::default(),
            interval: default_interval(),
            min_requests: default_min_requests(),
            error_rate: ErrorRateCheck::default(),
            latency: LatencyCheck::default(),
            metrics_loss: MetricsLoss::default(),
            metrics: Vec::new(),
            dimensions: Vec::new(),
        }
    }
}

/// 5xx and resets, canary against baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRateCheck {
    /// Abort when the canary's error rate exceeds the baseline's by more
    /// than this many percentage points...
    #[serde(default = "default_max_increase_pp")]
    pub max_increase_pp: f64,
    /// ...or is more than this many times the baseline's...
    #[serde(default = "default_max_ratio")]
    pub max_ratio: f64,
    /// ...or exceeds this absolute ceiling, in percent, whatever the baseline.
    #[serde(default = "default_max_percent")]
    pub max_percent: f64,
}

fn default_max_increase_pp() -> f64 {
    1.0
}
fn default_max_ratio() -> f64 {
    2.0
}
fn default_max_percent() -> f64 {
    5.0
}

impl Default for ErrorRateCheck {
    fn default() -> Self {
        ErrorRateCheck {
            max_increase_pp: default_max_increase_pp(),
            max_ratio: default_max_ratio(),
            max_percent: default_max_percent(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyCheck {
    /// Sequential: compare the share of requests slower than each bound (ms;
    /// best chosen among the histogram's bucket bounds).
    #[serde(default = "default_bounds")]
    pub bounds_ms: Vec<f64>,
    /// Threshold: which percentile to compare (e.g. 95 or 99).
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    /// Abort when the canary's percentile exceeds the baseline's times this...
    #[serde(default = "default_latency_ratio")]
    pub max_ratio: f64,
    /// ...by more than this many milliseconds (histogram buckets are coarse)...
    #[serde(default = "default_latency_slack")]
    pub min_increase_ms: f64,
    /// ...or exceeds this ceiling in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    /// Evidence of safety: the share of the canary's requests slower than
    /// each bound may exceed the baseline's by this many percentage points.
    #[serde(default = "default_slow_increase_pp")]
    pub max_slow_increase_pp: f64,
}

fn default_bounds() -> Vec<f64> {
    vec![250.0, 1000.0]
}

fn default_percentile() -> f64 {
    99.0
}
fn default_latency_ratio() -> f64 {
    1.5
}
fn default_latency_slack() -> f64 {
    25.0
}

impl Default for LatencyCheck {
    fn default() -> Self {
        LatencyCheck {
            bounds_ms: default_bounds(),
            percentile: default_percentile(),
            max_ratio: default_latency_ratio(),
            min_increase_ms: default_latency_slack(),
            max_ms: None,
            max_slow_increase_pp: default_slow_increase_pp(),
        }
    }
}

/// An availability objective: the canary must not burn the error budget
/// faster than `max_burn_rate` times the sustainable pace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Percent of requests that must not fail, e.g. 99.9.
    pub objective_percent: f64,
    #[serde(default = "default_burn_rate")]
    pub max_burn_rate: f64,
}

fn default_burn_rate() -> f64 {
    14.4
}

impl Analysis {
    pub(super) fn validate(&self) -> Result<(), SpecError> {
        let a = self;
        if a.interval < Duration::from_millis(200) || a.interval > Duration::from_secs(3600) {
            return Err(invalid("analysis.interval", "must be between 200ms and 1h"));
        }
        if a.min_requests == 0 || a.min_requests > 1_000_000_000 {
            return Err(invalid(
                "analysis.min_requests",
                "must be from 1 (never promote on no data) to 1e9",
            ));
        }
        in_range(
            a.alpha,
            1e-9,
            0.5,
            "analysis.alpha",
            "above 0 and below 0.5",
        )?;
        if a.alpha >= 0.5 {
            return Err(invalid("analysis.alpha", "must be above 0 and below 0.5"));
        }
        in_range(
            a.max_rate_ratio,
            1.0,
            1000.0,
            "analysis.max_rate_ratio",
            "from 1 to 1000",
        )?;
        in_range(
            a.max_rate_increase_pp,
            0.001,
            100.0,
            "analysis.max_rate_increase_pp",
            "above 0 (a baseline without errors could never be matched) and at most 100",
        )?;
        in_range(
            a.latency.max_slow_increase_pp,
            0.001,
            100.0,
            "analysis.latency.max_slow_increase_pp",
            "above 0 and at most 100",
        )?;
        if let Some(d) = a.max_duration {
            if d < a.interval || d > MAX_PAUSE {
                return Err(invalid(
                    "analysis.max_duration",
                    "must be at least analysis.interval and at most 30 days",
                ));
            }
        }
        let e = &a.error_rate;
        in_range(
            e.max_increase_pp,
            0.0,
            100.0,
            "analysis.error_rate.max_increase_pp",
            "from 0 to 100",
        )?;
        in_range(
            e.max_ratio,
            1.0,
            1e6,
            "analysis.error_rate.max_ratio",
            "at least 1",
        )?;
        // A ceiling of 0% would abort on the first error; 100% never.
        in_range(
            e.max_percent,
            0.001,
            100.0,
            "analysis.error_rate.max_percent",
            "above 0 and at most 100",
        )?;
        let l = &a.latency;
        in_range(
            l.percentile,
            0.1,
            99.99,
            "analysis.latency.percentile",
            "between 0 and 100 (0.1 to 99.99)",
        )?;
        in_range(
            l.max_ratio,
            1.0,
            1e6,
            "analysis.latency.max_ratio",
            "at least 1",
        )?;
        in_range(
            l.min_increase_ms,
            0.0,
            3.6e6,
            "analysis.latency.min_increase_ms",
            "from 0 to 3600000",
        )?;
        if let Some(max) = l.max_ms {
            in_range(
                max,
                0.001,
                3.6e6,
                "analysis.latency.max_ms",
                "above 0 and at most 3600000",
            )?;
        }
        if l.bounds_ms.len() > 16 {
            return Err(invalid("analysis.latency.bounds_ms", "at most 16 bounds"));
        }
        for (i, b) in l.bounds_ms.iter().enumerate() {
            in_range(
                *b,
                0.001,
                3.6e6,
                &format!("analysis.latency.bounds_ms[{i}]"),
                "positive milliseconds, at most 3600000",
            )?;
        }
        validate_all(&a.metrics)?;
        if a.promote_on == PromoteOn::Evidence {
            for (i, m) in a.metrics.iter().enumerate() {
                if m.is_comparison() && m.tolerance.is_zero() {
                    return Err(invalid(
                        format!("analysis.metrics[{i}].tolerance"),
                        format!(
                            "{:?} needs a tolerance (relative_percent or absolute): a step goes up on evidence that the canary is at most that much worse, and no data can show it is not worse at all (or set analysis.promote_on: no_alarm)",
                            m.name
                        ),
                    ));
                }
            }
        }
        if a.metrics_loss.after < a.interval || a.metrics_loss.after > MAX_PAUSE {
            return Err(invalid(
                "analysis.metrics_loss.after",
                "must be at least analysis.interval and at most 30 days",
            ));
        }
        Ok(())
    }
}

impl Slo {
    pub(super) fn validate(&self) -> Result<(), SpecError> {
        let slo = self;
        in_range(
            slo.objective_percent,
            0.001,
            99.9999,
            "slo.objective_percent",
            "between 0 and 100",
        )?;
        if slo.objective_percent >= 100.0 {
            return Err(invalid(
                "slo.objective_percent",
                "must be between 0 and 100",
            ));
        }
        in_range(
            slo.max_burn_rate,
            0.001,
            1e6,
            "slo.max_burn_rate",
            "above 0",
        )?;
        Ok(())
    }
}
