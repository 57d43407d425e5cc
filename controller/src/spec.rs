//! The rollout spec: what an operator writes in YAML and `dimmer apply`s.
//! It is the filter's rollout (docs/filter.md, "Configuration") minus the weights, plus the
//! canary, the steps, the analysis and an optional SLO.

use std::time::Duration;

use dimmer_core::config::{
    Anonymous, CookieSettings, IdentitySource, Match, Override, Rollout, Version,
};
use dimmer_core::validate::validate_rollout;
use serde::{Deserialize, Serialize};

pub use crate::flag_spec::Kind;
use crate::flag_spec::{FlagMeta, FlagSpec};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// YAML that does not parse or does not fit the schema; the message
    /// names the field, the line and the column.
    #[error("invalid rollout spec: {0}")]
    Yaml(String),
    #[error("invalid rollout spec: {field}: {reason}{}", line.map_or(String::new(), |l| format!(" (line {l})")))]
    Invalid {
        field: String,
        reason: String,
        /// Where the field is in the YAML, when the spec came from text.
        line: Option<usize>,
    },
}

pub const MAX_STEPS: usize = 100;
pub const MAX_WEBHOOKS: usize = 16;
/// Candidates of an A/B/n rollout: the filter takes 16 versions, stable one.
pub const MAX_ARMS: usize = 15;

/// The rollout name of `arm` of the A/B/n rollout `group`.
pub fn arm_name(group: &str, arm: &str) -> String {
    format!("{group}.{arm}")
}
const MAX_PAUSE: Duration = Duration::from_secs(30 * 24 * 3600);

/// `x` in `[lo, hi]`, written so that NaN is refused too.
pub(crate) fn in_range(x: f64, lo: f64, hi: f64, field: &str, what: &str) -> Result<(), SpecError> {
    if x >= lo && x <= hi {
        Ok(())
    } else {
        Err(invalid(field, format!("must be {what}, not {x}")))
    }
}

/// A rollout's name is a URL path segment and a stats tag: letters, digits,
/// `-`, `_` and `.`, starting with a letter or digit, so that it can never
/// be `.` or `..` or need escaping to mean itself.
pub fn check_name(name: &str) -> Result<(), SpecError> {
    if dimmer_core::validate::is_valid_name(name) {
        Ok(())
    } else {
        Err(invalid(
            "name",
            "must be 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit",
        ))
    }
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
        line: None,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// `rollout` (the default) or `flag`: a flag spec has fields of its own
    /// (`crate::flag_spec::FlagSpec`) and is read by that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    pub name: String,
    #[serde(default, rename = "match")]
    pub matcher: Match,
    #[serde(default)]
    pub identity: Vec<IdentitySource>,
    #[serde(default)]
    pub anonymous: Anonymous,
    #[serde(default)]
    pub anonymous_cookie: CookieSettings,
    /// Defaults to the rollout's name: a new salt reshuffles every user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    pub stable: String,
    /// The new version; or, for A/B/n, `arms`.
    #[serde(default)]
    pub canary: String,
    /// A/B/n: the candidates, each rolled out against `stable` on its own
    /// (its own steps, analysis and abort), each in a lane of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arms: Vec<String>,
    /// Set on each arm's rollout, from the A/B/n spec it is an arm of; never
    /// read from a spec's YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm_of: Option<String>,
    #[serde(default)]
    pub overrides: Vec<Override>,
    /// Written out, or made by `strategy` when it names one.
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub analysis: Analysis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<Slo>,
    /// URLs that receive a JSON POST on every state change.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// Who counts the versions' requests: the filter (the default), or
    /// Envoy's own per-cluster stats.
    #[serde(default, skip_serializing_if = "Counting::is_default")]
    pub counting: Counting,
    /// Set for a flag's rollout, from its flag spec; never read from a
    /// rollout spec's YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<FlagMeta>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Share of users on the canary, in percent (0.01 to 100).
    pub percent: f64,
    /// Minimum time at this step before the next.
    #[serde(default, with = "duration::pause")]
    pub pause: Duration,
    /// Wait for `dimmer promote` before leaving this step.
    #[serde(default)]
    pub approval: bool,
    /// Whose requests the step judges: the users its weight sends to the
    /// canary (the default), or, at 0%, the people `overrides` send there
    /// (`preview`) or the requests Envoy mirrors to it (`shadow`).
    #[serde(default, skip_serializing_if = "StepTraffic::is_users")]
    pub traffic: StepTraffic,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepTraffic {
    #[default]
    Users,
    Preview,
    Shadow,
}

impl StepTraffic {
    pub fn is_users(&self) -> bool {
        *self == StepTraffic::Users
    }
}

/// How the canary reaches users: by steps (the default), or blue/green.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreen>,
}

/// The canary (green) gets no users until one switch to 100%; before it,
/// only the people `overrides` name reach it, and the analysis judges their
/// requests. After it, the stable (blue) stays the instant switch back
/// (`dimmer abort`, or the analysis) for `keep_previous_for`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlueGreen {
    /// Whether the switch waits for `dimmer promote` (the default), or
    /// happens once the preview's analysis passes.
    #[serde(default = "yes")]
    pub approval: bool,
    /// Minimum time in preview before the switch.
    #[serde(default, with = "duration::preview_for")]
    pub preview_for: Duration,
    #[serde(
        default = "default_keep_previous",
        with = "duration::keep_previous_for"
    )]
    pub keep_previous_for: Duration,
}

fn yes() -> bool {
    true
}

fn default_keep_previous() -> Duration {
    Duration::from_secs(600)
}

impl BlueGreen {
    /// The steps a blue/green rollout walks: the preview, then the switch.
    pub fn steps(&self) -> Vec<Step> {
        vec![
            Step {
                percent: 0.0,
                pause: self.preview_for,
                approval: self.approval,
                traffic: StepTraffic::Preview,
            },
            Step {
                percent: 100.0,
                pause: self.keep_previous_for,
                approval: false,
                traffic: StepTraffic::Users,
            },
        ]
    }
}

impl Step {
    pub fn weight_bp(&self) -> u32 {
        (self.percent * 100.0).round().clamp(0.0, 10_000.0) as u32
    }
}

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
    pub metrics: Vec<crate::metric_spec::MetricCheck>,
    /// Who the users are (a header, a cookie, the user agent's class): the
    /// canary's mix of each is tested against the baseline's, and a
    /// mismatch holds the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<dimmer_core::config::Dimension>,
}

/// Where a rollout's per-version counts come from. `envoy` reads Envoy's
/// own cluster stats (`upstream_rq_<class>xx`, `upstream_rq_time`), so the
/// filter reads no status and no clock per request; each version must have
/// a cluster of its own that carries only this rollout's traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counting {
    #[serde(default)]
    pub by: CountedBy,
    /// The Envoy cluster of each version, with `by: envoy`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub clusters: std::collections::BTreeMap<String, String>,
}

impl Counting {
    pub fn is_default(&self) -> bool {
        *self == Counting::default()
    }

    /// The clusters to read, with `by: envoy`.
    pub fn envoy_clusters(&self) -> Option<&std::collections::BTreeMap<String, String>> {
        (self.by == CountedBy::Envoy).then_some(&self.clusters)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CountedBy {
    #[default]
    Filter,
    Envoy,
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

/// Durations written the human way: `30s`, `2m`, `1h30m`. One module per
/// field, so that a bad value names its field (YAML's error path stops at
/// the enclosing map).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    fn parse<'de, D: Deserializer<'de>>(field: &str, d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{field}: {text:?} is not a duration like 30s, 2m or 1h ({e})"
            ))
        })
    }

    fn write<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    macro_rules! field {
        ($name:ident) => {
            pub mod $name {
                use super::*;

                pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
                    write(d, s)
                }

                pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
                    parse(stringify!($name), d)
                }
            }
        };
    }

    field!(pause);
    field!(interval);
    field!(after);
    field!(keep_previous_for);
    field!(preview_for);
}

impl RolloutSpec {
    /// Parses and validates a YAML spec: a rollout's, or a flag's
    /// (`kind: flag`), which becomes the rollout that carries the flag.
    pub fn from_yaml(text: &str) -> Result<RolloutSpec, SpecError> {
        crate::yaml_guard::check(text).map_err(|e| SpecError::Yaml(e.to_string()))?;
        let with_line = |e: SpecError| match e {
            SpecError::Invalid { field, reason, .. } => {
                let line = crate::yaml_lines::line_of(text, &field);
                SpecError::Invalid {
                    field,
                    reason,
                    line,
                }
            }
            other => other,
        };
        if kind_of(text) == Some(Kind::Flag) {
            let flag: FlagSpec =
                serde_norway::from_str(text).map_err(|e| SpecError::Yaml(e.to_string()))?;
            flag.validate().map_err(with_line)?;
            let spec = flag.into_rollout();
            spec.validate().map_err(with_line)?;
            return Ok(spec);
        }
        let mut spec: RolloutSpec =
            serde_norway::from_str(text).map_err(|e| SpecError::Yaml(e.to_string()))?;
        if let Some(bg) = spec.blue_green() {
            if !spec.steps.is_empty() && spec.steps != bg.steps() {
                return Err(with_line(invalid(
                    "steps",
                    "are made by strategy.blue_green (the preview, then the switch): leave them out",
                )));
            }
            spec.steps = bg.steps();
        }
        if spec.flag.is_some() {
            return Err(invalid(
                "flag",
                "is not a field of a rollout spec; a flag spec starts with `kind: flag`",
            ));
        }
        if spec.arm_of.is_some() {
            return Err(invalid(
                "arm_of",
                "is set by the controller on each arm of an A/B/n rollout; list the candidates in `arms`",
            ));
        }
        spec.validate().map_err(with_line)?;
        Ok(spec)
    }

    pub fn blue_green(&self) -> Option<&BlueGreen> {
        self.strategy.as_ref()?.blue_green.as_ref()
    }

    /// Whether `overrides` send anyone to the canary: a preview needs them.
    fn previews_canary(&self) -> bool {
        self.overrides.iter().any(|o| o.version == self.canary)
    }

    pub fn salt(&self) -> &str {
        self.salt.as_deref().unwrap_or(&self.name)
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        check_name(&self.name)?;
        self.validate_arms()?;
        if self.stable == self.canary {
            return Err(invalid("canary", "must differ from stable"));
        }
        if let Some(bg) = self.blue_green() {
            if self.steps != bg.steps() {
                return Err(invalid(
                    "steps",
                    "are made by strategy.blue_green (the preview, then the switch): leave them out",
                ));
            }
            if bg.keep_previous_for > MAX_PAUSE {
                return Err(invalid(
                    "strategy.blue_green.keep_previous_for",
                    "must be at most 30 days",
                ));
            }
            if bg.preview_for > MAX_PAUSE {
                return Err(invalid(
                    "strategy.blue_green.preview_for",
                    "must be at most 30 days",
                ));
            }
            if !self.previews_canary() {
                return Err(invalid(
                    "overrides",
                    format!(
                        "blue/green previews {:?} to the people overrides send there: name at least one",
                        self.canary
                    ),
                ));
            }
        }
        if self.steps.is_empty() {
            return Err(invalid("steps", "must not be empty"));
        }
        if self.steps.len() > MAX_STEPS {
            return Err(invalid("steps", format!("at most {MAX_STEPS} steps")));
        }
        let mut last = 0;
        for (i, s) in self.steps.iter().enumerate() {
            let at = |f: &str| format!("steps[{i}].{f}");
            if s.traffic.is_users() {
                // Weights are basis points: a share below 0.01% would be a 0% step.
                in_range(
                    s.percent,
                    0.01,
                    100.0,
                    &at("percent"),
                    "from 0.01 (one basis point) to 100",
                )?;
            } else if s.percent != 0.0 {
                return Err(invalid(
                    at("percent"),
                    format!(
                        "must be 0 in a {} step: its traffic reaches the canary without users",
                        if s.traffic == StepTraffic::Preview {
                            "preview"
                        } else {
                            "shadow"
                        }
                    ),
                ));
            }
            if s.traffic == StepTraffic::Shadow && self.flag.is_some() {
                return Err(invalid(
                    at("traffic"),
                    "a flag has no mirrored requests: Envoy mirrors to clusters, not variants",
                ));
            }
            if s.traffic == StepTraffic::Preview && !self.previews_canary() {
                return Err(invalid(
                    at("traffic"),
                    format!(
                        "a preview step judges the people `overrides` send to {:?}, and none do",
                        self.canary
                    ),
                ));
            }
            if s.weight_bp() < last {
                return Err(invalid(
                    at("percent"),
                    "steps must not go down: a step down would move users back to stable",
                ));
            }
            last = s.weight_bp();
            if s.pause > MAX_PAUSE {
                return Err(invalid(at("pause"), "must be at most 30 days"));
            }
        }
        let a = &self.analysis;
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
        crate::metric_spec::validate_all(&a.metrics)?;
        if a.metrics_loss.after < a.interval || a.metrics_loss.after > MAX_PAUSE {
            return Err(invalid(
                "analysis.metrics_loss.after",
                "must be at least analysis.interval and at most 30 days",
            ));
        }
        if let Some(slo) = &self.slo {
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
        }
        self.validate_counting()?;
        if self.webhooks.len() > MAX_WEBHOOKS {
            return Err(invalid("webhooks", format!("at most {MAX_WEBHOOKS} URLs")));
        }
        for (i, url) in self.webhooks.iter().enumerate() {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.len() <= 2048
                && reqwest::Url::parse(url).is_ok();
            if !ok {
                return Err(invalid(format!("webhooks[{i}]"), "must be an http(s) URL"));
            }
        }
        // Everything the filter will check, checked now with the spec's names.
        let served = if self.arms.is_empty() {
            self.rollout_at(0)
        } else {
            self.arms_rollout_at(&Default::default())
        };
        validate_rollout(&served, "rollout").map_err(|e| match e {
            dimmer_core::ConfigError::Invalid { field, problem } => {
                let field = field.trim_start_matches("rollout.");
                // The spec keeps the filter's dimensions under `analysis`.
                let field = match field.starts_with("dimensions") {
                    true => format!("analysis.{field}"),
                    false => field.to_owned(),
                };
                invalid(field, problem.to_string())
            }
            other => invalid("rollout", other.to_string()),
        })
    }

    /// `canary`, or `arms` for A/B/n: each arm a version of its own, its
    /// steps within its lane, and the strategies that need one canary
    /// refused.
    fn validate_arms(&self) -> Result<(), SpecError> {
        if self.arms.is_empty() {
            if self.canary.is_empty() {
                return Err(invalid(
                    "canary",
                    "names the new version (or list A/B/n candidates in `arms`)",
                ));
            }
            return Ok(());
        }
        match &self.arm_of {
            None if !self.canary.is_empty() => {
                return Err(invalid(
                    "canary",
                    "not with `arms`: an A/B/n rollout's candidates are its arms",
                ))
            }
            Some(group)
                if !self.arms.contains(&self.canary)
                    || self.name != arm_name(group, &self.canary) =>
            {
                return Err(invalid("arm_of", "names an arm that is not one of `arms`"))
            }
            _ => {}
        }
        if self.arms.len() < 2 || self.arms.len() > MAX_ARMS {
            return Err(invalid(
                "arms",
                format!("A/B/n takes 2 to {MAX_ARMS} candidates (one is a canary: use `canary`)"),
            ));
        }
        for (i, arm) in self.arms.iter().enumerate() {
            if *arm == self.stable {
                return Err(invalid(format!("arms[{i}]"), "must differ from stable"));
            }
            if self.arms[..i].contains(arm) {
                return Err(invalid(
                    format!("arms[{i}]"),
                    format!("{arm:?} is listed twice"),
                ));
            }
            let group = self.arm_of.as_deref().unwrap_or(&self.name);
            check_name(&arm_name(group, arm)).map_err(|_| {
                invalid(
                    format!("arms[{i}]"),
                    format!(
                        "each arm is a rollout named {group}.{arm}: at most 63 characters in all"
                    ),
                )
            })?;
        }
        let lane = 100.0 / self.arms.len() as f64;
        let lane = (lane * 100.0).floor() / 100.0;
        for (i, s) in self.steps.iter().enumerate() {
            if s.percent > lane {
                return Err(invalid(
                    format!("steps[{i}].percent"),
                    format!(
                        "each of {} arms has a lane of {lane}% of users: a step may give an arm at most that",
                        self.arms.len()
                    ),
                ));
            }
            if s.traffic != StepTraffic::Users {
                return Err(invalid(
                    format!("steps[{i}].traffic"),
                    "an A/B/n rollout's steps judge users: previews and shadows have one canary",
                ));
            }
        }
        if self.strategy.is_some() {
            return Err(invalid(
                "strategy",
                "not with `arms`: blue/green has one new version",
            ));
        }
        if self.counting.by == CountedBy::Envoy {
            return Err(invalid(
                "counting.by",
                "an A/B/n rollout's arms share one route: the filter counts them",
            ));
        }
        Ok(())
    }

    /// The rollout of each arm of an A/B/n spec: named `NAME.ARM`, the arm
    /// as its canary, the group's salt, so that all arms share one cohort
    /// function and one route.
    pub fn arm_specs(&self) -> Vec<RolloutSpec> {
        self.arms
            .iter()
            .map(|arm| RolloutSpec {
                name: arm_name(&self.name, arm),
                canary: arm.clone(),
                salt: Some(self.salt().to_owned()),
                arm_of: Some(self.name.clone()),
                ..self.clone()
            })
            .collect()
    }

    /// The name the filter routes and counts this rollout by: an arm's is
    /// its A/B/n rollout's.
    pub fn routed_name(&self) -> &str {
        self.arm_of.as_deref().unwrap_or(&self.name)
    }

    /// The filter's rollout of an A/B/n spec (any arm's) with each arm at
    /// its weight in `weights` (basis points; a missing arm at 0), in
    /// lanes. An arm at 100% has won: everyone gets it, lanes or not.
    pub fn arms_rollout_at(&self, weights: &std::collections::BTreeMap<String, u32>) -> Rollout {
        let weight = |arm: &String| weights.get(arm).copied().unwrap_or(0);
        let winner = self.arms.iter().find(|a| weight(a) >= 10_000);
        let lanes = winner.is_none();
        let arms: Vec<Version> = self
            .arms
            .iter()
            .map(|a| Version {
                name: a.clone(),
                weight: match winner {
                    Some(w) if w == a => 10_000,
                    Some(_) => 0,
                    None => weight(a),
                },
            })
            .collect();
        let taken: u32 = arms.iter().map(|v| v.weight).sum();
        let mut r = self.rollout_at(0);
        r.name = self.routed_name().to_owned();
        r.versions = std::iter::once(Version {
            name: self.stable.clone(),
            weight: 10_000u32.saturating_sub(taken),
        })
        .chain(arms)
        .collect();
        r.lanes = lanes;
        r.shadow = None;
        r
    }

    fn validate_counting(&self) -> Result<(), SpecError> {
        let c = &self.counting;
        if c.by == CountedBy::Filter {
            if !c.clusters.is_empty() {
                return Err(invalid(
                    "counting.clusters",
                    "only with `by: envoy`: the filter counts by version",
                ));
            }
            return Ok(());
        }
        if self.flag.is_some() {
            return Err(invalid(
                "counting.by",
                "a flag's variants share clusters: the filter counts them",
            ));
        }
        for version in [&self.stable, &self.canary] {
            let Some(cluster) = c.clusters.get(version) else {
                return Err(invalid(
                    "counting.clusters",
                    format!("names no cluster for version {version:?}"),
                ));
            };
            let ok = (1..=255).contains(&cluster.len())
                && cluster.bytes().all(|b| {
                    b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b',' | b'{' | b'}')
                });
            if !ok {
                return Err(invalid(
                    format!("counting.clusters.{version}"),
                    "must be an Envoy cluster name: 1 to 255 visible characters, no quotes, commas or braces",
                ));
            }
        }
        if c.clusters.len() != 2 {
            return Err(invalid(
                "counting.clusters",
                format!(
                    "names exactly the versions {} and {}",
                    self.stable, self.canary
                ),
            ));
        }
        if c.clusters.get(&self.stable) == c.clusters.get(&self.canary) {
            return Err(invalid(
                "counting.clusters",
                "each version needs a cluster of its own",
            ));
        }
        Ok(())
    }

    /// The filter's rollout with the canary at `canary_bp` basis points. The
    /// canary is listed last, so growing its weight never moves a user back.
    pub fn rollout_at(&self, canary_bp: u32) -> Rollout {
        let canary_bp = canary_bp.min(10_000);
        Rollout {
            name: self.name.clone(),
            matcher: self.matcher.clone(),
            identity: self.identity.clone(),
            anonymous: self.anonymous,
            anonymous_cookie: self.anonymous_cookie.clone(),
            salt: self.salt().to_owned(),
            stable: self.stable.clone(),
            versions: vec![
                Version {
                    name: self.stable.clone(),
                    weight: 10_000 - canary_bp,
                },
                Version {
                    name: self.canary.clone(),
                    weight: canary_bp,
                },
            ],
            overrides: self.overrides.clone(),
            count: self.counting.by == CountedBy::Filter,
            // With a shadow step, mirrors go to the canary: the filter keeps
            // them out of every cohort and counts them apart, for the step
            // to judge. Only then: knowing a mirror means reading the host
            // of every request (about 10k instructions, bench/RESULTS.md).
            shadow: self
                .steps
                .iter()
                .any(|s| s.traffic == StepTraffic::Shadow)
                .then(|| self.canary.clone()),
            lanes: false,
            dimensions: self.analysis.dimensions.clone(),
        }
    }
}

/// The `kind` a YAML document declares at its top level, if any.
fn kind_of(text: &str) -> Option<Kind> {
    let value: serde_norway::Value = serde_norway::from_str(text).ok()?;
    serde_norway::from_value(value.get("kind")?.clone()).ok()
}

#[cfg(test)]
mod strategy_tests {
    use super::*;

    const BASE: &str =
        "name: checkout\nstable: blue\ncanary: green\nidentity: [{header: x-user-id}]\n";
    const PREVIEW: &str = "overrides: [{header: x-preview, values: [qa], version: green}]\n";

    fn refused(yaml: &str) -> String {
        RolloutSpec::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn dimensions_and_metrics_are_checked_naming_their_field() {
        let steps = "steps: [{percent: 10}]\n";
        for (extra, want) in [
            ("analysis: {dimensions: [{header: 'x country'}]}\n", "analysis.dimensions[0]: the header or cookie name"),
            ("analysis: {dimensions: [{header: x-country, max_values: 40}]}\n", "analysis.dimensions[0].max_values: must be between 1 and 32"),
            ("analysis: {dimensions: [{user_agent: class}, {user_agent: class}]}\n", "analysis.dimensions[1]: duplicate name"),
            ("analysis: {dimensions: [{user_agent: family}]}\n", "`user_agent` takes one value: class"),
            ("analysis: {metrics: [{name: m, provider: {prometheus: {}}, kind: ratio, successes: 'a{{version}}', trials: 'b{{version}}'}]}\n", "analysis.metrics[0].direction: is required"),
        ] {
            let err = refused(&format!("{BASE}{steps}{extra}"));
            assert!(err.contains(want), "{extra}→ {err}");
        }
        let ok = RolloutSpec::from_yaml(&format!(
            "{BASE}{steps}analysis: {{dimensions: [{{header: x-country}}, {{cookie: plan, max_values: 4}}, {{user_agent: class}}]}}\n"
        ))
        .unwrap();
        let served = ok.rollout_at(1000);
        let names: Vec<String> = served.dimensions.iter().map(|d| d.name()).collect();
        assert_eq!(names, ["x-country", "cookie.plan", "user_agent"]);
        // The filter's config reads back as itself.
        let json = serde_json::to_string(&served).unwrap();
        assert!(
            json.contains(r#"{"cookie":"plan","max_values":4}"#),
            "{json}"
        );
        let back: Rollout = serde_json::from_str(&json).unwrap();
        assert_eq!(back, served);
    }

    #[test]
    fn blue_green_makes_its_two_steps() {
        let spec = RolloutSpec::from_yaml(&format!(
            "{BASE}{PREVIEW}strategy: {{blue_green: {{keep_previous_for: 5m, preview_for: 1m}}}}\n"
        ))
        .unwrap();
        assert_eq!(spec.steps.len(), 2);
        assert_eq!(
            (
                spec.steps[0].percent,
                spec.steps[0].traffic,
                spec.steps[0].approval
            ),
            (0.0, StepTraffic::Preview, true)
        );
        assert_eq!(spec.steps[0].pause, Duration::from_secs(60));
        assert_eq!(
            (spec.steps[1].percent, spec.steps[1].pause),
            (100.0, Duration::from_secs(300))
        );
        // What the store keeps reads back as itself.
        let json = serde_json::to_string(&spec).unwrap();
        let back: RolloutSpec = serde_json::from_str(&json).unwrap();
        back.validate().unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn blue_green_and_zero_percent_steps_are_checked_naming_the_field() {
        let bg = "strategy: {blue_green: {}}\n";
        assert!(
            refused(&format!("{BASE}{bg}")).contains("overrides: blue/green previews \"green\""),
            "{}",
            refused(&format!("{BASE}{bg}"))
        );
        let e = refused(&format!("{BASE}{PREVIEW}{bg}steps: [{{percent: 10}}]\n"));
        assert!(e.contains("steps: are made by strategy.blue_green"), "{e}");
        let e = refused(&format!(
            "{BASE}{PREVIEW}strategy: {{blue_green: {{keep_previous_for: 400d}}}}\n"
        ));
        assert!(e.contains("strategy.blue_green.keep_previous_for"), "{e}");
        let e = refused(&format!(
            "{BASE}{PREVIEW}strategy: {{blue_green: {{keep_previous_for: soon}}}}\n"
        ));
        assert!(e.contains("keep_previous_for: \"soon\""), "{e}");
        let e = refused(&format!("{BASE}steps: [{{percent: 0}}]\n"));
        assert!(e.contains("steps[0].percent: must be from 0.01"), "{e}");
        let e = refused(&format!("{BASE}steps: [{{percent: 5, traffic: shadow}}]\n"));
        assert!(
            e.contains("steps[0].percent: must be 0 in a shadow step"),
            "{e}"
        );
        let e = refused(&format!(
            "{BASE}steps: [{{percent: 0, traffic: preview}}]\n"
        ));
        assert!(e.contains("steps[0].traffic: a preview step judges"), "{e}");
        let e = refused(&format!(
            "{BASE}steps: [{{percent: 0, traffic: mirrored}}]\n"
        ));
        assert!(e.contains("unknown variant `mirrored`"), "{e}");
        // A 0% step cannot follow users: steps never go down.
        let e = refused(&format!(
            "{BASE}steps: [{{percent: 1}}, {{percent: 0, traffic: shadow}}]\n"
        ));
        assert!(
            e.contains("steps[1].percent: steps must not go down"),
            "{e}"
        );
        let shadowed = RolloutSpec::from_yaml(&format!(
            "{BASE}steps: [{{percent: 0, traffic: shadow}}, {{percent: 10}}, {{percent: 100}}]\n"
        ))
        .unwrap();
        // Only a rollout with a shadow step makes the filter read every host.
        assert_eq!(shadowed.rollout_at(1000).shadow.as_deref(), Some("green"));
        let plain = RolloutSpec::from_yaml(&format!("{BASE}steps: [{{percent: 10}}]\n")).unwrap();
        assert_eq!(plain.rollout_at(1000).shadow, None);
    }
}
