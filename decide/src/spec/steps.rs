//! The spec's steps: how far the canary goes at each step, how long it
//! stays, whose requests the step judges; blue/green, which makes its own two
//! steps; and the checks of that section.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::context::Context;
use super::duration;
use super::error::{in_range, invalid, SpecError, MAX_PAUSE};

pub const MAX_STEPS: usize = 100;

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
    /// How long this step may wait for evidence of safety before it is
    /// inconclusive (default: `analysis.max_duration`).
    #[serde(
        default,
        with = "duration::max_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_duration: Option<Duration>,
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
                max_duration: None,
            },
            Step {
                percent: 100.0,
                pause: self.keep_previous_for,
                approval: false,
                traffic: StepTraffic::Users,
                max_duration: None,
            },
        ]
    }
}

impl Step {
    pub fn weight_bp(&self) -> u32 {
        (self.percent * 100.0).round().clamp(0.0, 10_000.0) as u32
    }
}

/// `steps` and `strategy.blue_green`.
pub(super) fn validate_steps(
    steps: &[Step],
    strategy: Option<&Strategy>,
    ctx: &Context<'_>,
) -> Result<(), SpecError> {
    {
        if let Some(bg) = strategy.and_then(|s| s.blue_green.as_ref()) {
            if steps != bg.steps() {
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
            if !ctx.previews_canary {
                return Err(invalid(
                    "overrides",
                    format!(
                        "blue/green previews {:?} to the people overrides send there: name at least one",
                        ctx.canary
                    ),
                ));
            }
        }
        if steps.is_empty() {
            return Err(invalid("steps", "must not be empty"));
        }
        if steps.len() > MAX_STEPS {
            return Err(invalid("steps", format!("at most {MAX_STEPS} steps")));
        }
        let mut last = 0;
        for (i, s) in steps.iter().enumerate() {
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
            if s.traffic == StepTraffic::Shadow && ctx.is_flag {
                return Err(invalid(
                    at("traffic"),
                    "a flag has no mirrored requests: Envoy mirrors to clusters, not variants",
                ));
            }
            if s.traffic == StepTraffic::Preview && !ctx.previews_canary {
                return Err(invalid(
                    at("traffic"),
                    format!(
                        "a preview step judges the people `overrides` send to {:?}, and none do",
                        ctx.canary
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
            if let Some(max) = s.max_duration {
                if max < s.pause || max > MAX_PAUSE {
                    return Err(invalid(
                        at("max_duration"),
                        format!(
                            "must be at least the step's pause ({}) and at most 30 days",
                            humantime::format_duration(s.pause)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
