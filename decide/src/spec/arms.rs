//! A/B/n: a spec's `arms`, each a rollout of its own against `stable` in a
//! lane of its own; their checks, and the filter's rollout of all of them.

use super::context::Context;
use super::counting::CountedBy;
use super::error::{check_name, invalid, SpecError};
use super::steps::{Step, StepTraffic};

/// Candidates of an A/B/n rollout: the filter takes 16 versions, stable one.
pub const MAX_ARMS: usize = 15;

/// The rollout name of `arm` of the A/B/n rollout `group`.
pub fn arm_name(group: &str, arm: &str) -> String {
    format!("{group}.{arm}")
}

/// What of a spec A/B/n concerns.
pub(super) struct ArmsOf<'a> {
    pub arms: &'a [String],
    pub arm_of: Option<&'a str>,
    pub steps: &'a [Step],
    pub has_strategy: bool,
    pub counted_by: CountedBy,
}

impl ArmsOf<'_> {
    /// `canary`, or `arms` for A/B/n: each arm a version of its own, its
    /// steps within its lane, and the strategies that need one canary
    /// refused.
    pub(super) fn validate(&self, ctx: &Context<'_>) -> Result<(), SpecError> {
        if self.arms.is_empty() {
            if ctx.canary.is_empty() {
                return Err(invalid(
                    "canary",
                    "names the new version (or list A/B/n candidates in `arms`)",
                ));
            }
            return Ok(());
        }
        match self.arm_of {
            None if !ctx.canary.is_empty() => {
                return Err(invalid(
                    "canary",
                    "not with `arms`: an A/B/n rollout's candidates are its arms",
                ))
            }
            Some(group)
                if !self.arms.iter().any(|a| a == ctx.canary)
                    || ctx.name != arm_name(group, ctx.canary) =>
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
            if *arm == ctx.stable {
                return Err(invalid(format!("arms[{i}]"), "must differ from stable"));
            }
            if self.arms[..i].contains(arm) {
                return Err(invalid(
                    format!("arms[{i}]"),
                    format!("{arm:?} is listed twice"),
                ));
            }
            let group = self.arm_of.unwrap_or(ctx.name);
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
        if self.has_strategy {
            return Err(invalid(
                "strategy",
                "not with `arms`: blue/green has one new version",
            ));
        }
        if self.counted_by == CountedBy::Envoy {
            return Err(invalid(
                "counting.by",
                "an A/B/n rollout's arms share one route: the filter counts them",
            ));
        }
        Ok(())
    }
}
