//! A/B/n: a spec's `arms`, each a rollout of its own against `stable` in a
//! lane of its own; their checks, and the filter's rollout of all of them.

use std::collections::BTreeMap;

use dimmer_core::config::{Rollout, Version};

use super::counting::CountedBy;
use super::error::{check_name, invalid, SpecError};
use super::rollout::RolloutSpec;
use super::steps::StepTraffic;

/// Candidates of an A/B/n rollout: the filter takes 16 versions, stable one.
pub const MAX_ARMS: usize = 15;

/// The rollout name of `arm` of the A/B/n rollout `group`.
pub fn arm_name(group: &str, arm: &str) -> String {
    format!("{group}.{arm}")
}

impl RolloutSpec {
    /// `canary`, or `arms` for A/B/n: each arm a version of its own, its
    /// steps within its lane, and the strategies that need one canary
    /// refused.
    pub(super) fn validate_arms(&self) -> Result<(), SpecError> {
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
    pub fn arms_rollout_at(&self, weights: &BTreeMap<String, u32>) -> Rollout {
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
}
