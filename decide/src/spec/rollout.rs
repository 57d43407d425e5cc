//! The rollout spec: what an operator writes in YAML and `dimmer apply`s.
//! It is the filter's rollout (docs/filter.md, "Configuration") minus the weights, plus the
//! canary, the steps, the analysis and an optional SLO. Each section's type
//! and checks are in a module of their own; this one holds the whole, checks
//! it section by section, and makes the filter's rollout of it.

use dimmer_core::config::{
    Anonymous, CookieSettings, IdentitySource, Match, Override, Rollout, Version,
};
use dimmer_core::validate::validate_rollout;
use serde::{Deserialize, Serialize};

use super::analysis::{Analysis, Slo};
use super::arms::{arm_name, ArmsOf};
use super::context::Context;
use super::counting::{CountedBy, Counting};
use super::error::{check_name, invalid, SpecError};
use super::flag::{FlagMeta, Kind};
use super::hooks::{validate_hooks, Hook, PinToCanary};
use super::http_syntax::parses_as_url;
use super::steps::{validate_steps, BlueGreen, Step, StepTraffic, Strategy};

pub const MAX_WEBHOOKS: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// `rollout` (the default) or `flag`: a flag spec has fields of its own
    /// ([`FlagSpec`]) and is read by that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    pub name: String,
    /// The team it belongs to: a token scoped to teams may change only
    /// theirs (a flag's team is its `owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
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
    /// The team's checks in the rollout's path (gates, checks, tellers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<Hook>,
    /// Who counts the versions' requests: the filter (the default), or
    /// Envoy's own per-cluster stats.
    #[serde(default, skip_serializing_if = "Counting::is_default")]
    pub counting: Counting,
    /// Set for a flag's rollout, from its flag spec; never read from a
    /// rollout spec's YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<FlagMeta>,
}

impl RolloutSpec {
    pub fn blue_green(&self) -> Option<&BlueGreen> {
        self.strategy.as_ref()?.blue_green.as_ref()
    }

    /// Whether `overrides` send anyone to the canary: a preview needs them.
    fn previews_canary(&self) -> bool {
        self.overrides.iter().any(|o| o.version == self.canary)
    }

    /// The team it belongs to, for scoped tokens: a flag's owner, else
    /// `team`.
    pub fn team(&self) -> Option<&str> {
        self.flag
            .as_ref()
            .map(|f| f.owner.as_str())
            .or(self.team.as_deref())
    }

    /// How a hook's probe reaches the canary: the first override value
    /// that sends people there.
    pub fn pin_to_canary(&self) -> Option<PinToCanary> {
        let o = self
            .overrides
            .iter()
            .find(|o| o.version == self.canary && !o.values.is_empty())?;
        Some(PinToCanary {
            header: o.header.clone(),
            value: o.values[0].clone(),
        })
    }

    pub fn salt(&self) -> &str {
        self.salt.as_deref().unwrap_or(&self.name)
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        check_name(&self.name)?;
        // A flag's team is its `owner`, checked as the flag's.
        if let (Some(team), None) = (&self.team, &self.flag) {
            check_name(team).map_err(|e| invalid("team", e.to_string()))?;
        }
        let ctx = Context {
            name: &self.name,
            stable: &self.stable,
            canary: &self.canary,
            is_flag: self.flag.is_some(),
            previews_canary: self.previews_canary(),
        };
        ArmsOf {
            arms: &self.arms,
            arm_of: self.arm_of.as_deref(),
            steps: &self.steps,
            has_strategy: self.strategy.is_some(),
            counted_by: self.counting.by,
        }
        .validate(&ctx)?;
        if self.stable == self.canary {
            return Err(invalid("canary", "must differ from stable"));
        }
        validate_steps(&self.steps, self.strategy.as_ref(), &ctx)?;
        self.analysis.validate()?;
        if let Some(slo) = &self.slo {
            slo.validate()?;
        }
        self.counting.validate(&ctx)?;
        if self.webhooks.len() > MAX_WEBHOOKS {
            return Err(invalid("webhooks", format!("at most {MAX_WEBHOOKS} URLs")));
        }
        for (i, url) in self.webhooks.iter().enumerate() {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.len() <= 2048
                && parses_as_url(url);
            if !ok {
                return Err(invalid(format!("webhooks[{i}]"), "must be an http(s) URL"));
            }
        }
        validate_hooks(&self.hooks, self.pin_to_canary().as_ref())?;
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
