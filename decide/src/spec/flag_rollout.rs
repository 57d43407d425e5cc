//! A flag as the rollout that carries it, and back: a flag spec becomes a
//! [`RolloutSpec`] whose stable is the default variant and whose canary is
//! the variant being rolled out, with the flag's own fields in
//! [`FlagMeta`]; written out, it reads back as the same flag.

use dimmer_core::config::{Flag, FlagState};
use serde::Serialize;

use super::error::SpecError;
use super::flag::{
    flag_of, flag_overrides, rollout_overrides, ExclusionSpec, FlagMeta, FlagSpec, Kind,
};
use super::rollout::RolloutSpec;

impl FlagSpec {
    /// The rollout the engine runs for this flag.
    pub fn into_rollout(self) -> RolloutSpec {
        let exclusion = self.exclusion_bp();
        RolloutSpec {
            kind: Some(Kind::Flag),
            salt: Some(self.salt.unwrap_or_else(|| self.key.clone())),
            name: self.key,
            team: Some(self.owner.clone()),
            matcher: self.matcher,
            identity: self.identity,
            anonymous: Default::default(),
            anonymous_cookie: Default::default(),
            stable: self.default_variant,
            canary: self.variant,
            overrides: rollout_overrides(&self.overrides),
            steps: self.steps,
            strategy: None,
            arms: Vec::new(),
            arm_of: None,
            analysis: self.analysis,
            slo: self.slo,
            webhooks: self.webhooks,
            hooks: Vec::new(),
            counting: Default::default(),
            flag: Some(FlagMeta {
                owner: self.owner,
                lifecycle: self.lifecycle,
                expires: self.expires,
                description: self.description,
                anonymous: self.anonymous,
                values: self.values,
                requires: self.requires,
                exclusion,
            }),
        }
    }
}

impl FlagSpec {
    /// The flag spec a flag's rollout was made from: `into_rollout`
    /// undone, so that what is written out reads back as the same flag.
    pub fn from_rollout(spec: &RolloutSpec) -> Option<FlagSpec> {
        let meta = spec.flag.clone()?;
        Some(FlagSpec {
            kind: Kind::Flag,
            key: spec.name.clone(),
            owner: meta.owner,
            lifecycle: meta.lifecycle,
            expires: meta.expires,
            description: meta.description,
            matcher: spec.matcher.clone(),
            identity: spec.identity.clone(),
            anonymous: meta.anonymous,
            salt: spec.salt.clone(),
            default_variant: spec.stable.clone(),
            variant: spec.canary.clone(),
            values: meta.values,
            overrides: flag_overrides(&spec.overrides),
            requires: meta.requires,
            exclusion: meta.exclusion.map(|e| ExclusionSpec {
                group: e.group,
                from_percent: f64::from(e.from_bp) / 100.0,
                to_percent: f64::from(e.to_bp) / 100.0,
            }),
            steps: spec.steps.clone(),
            analysis: spec.analysis.clone(),
            slo: spec.slo.clone(),
            webhooks: spec.webhooks.clone(),
        })
    }
}

/// A spec as its author writes it: a rollout's as it is, a flag's in the
/// flag spec's own fields.
#[derive(Serialize)]
#[serde(untagged)]
pub enum AuthoredSpec<'a> {
    Rollout(&'a RolloutSpec),
    Flag(Box<FlagSpec>),
}

impl RolloutSpec {
    pub fn authored(&self) -> AuthoredSpec<'_> {
        match FlagSpec::from_rollout(self) {
            Some(f) => AuthoredSpec::Flag(Box::new(f)),
            None => AuthoredSpec::Rollout(self),
        }
    }

    /// YAML that `from_yaml` reads back as this spec.
    pub fn to_yaml(&self) -> Result<String, SpecError> {
        serde_norway::to_string(&self.authored()).map_err(|e| SpecError::Yaml(e.to_string()))
    }
}

impl RolloutSpec {
    /// The filter's flag for a flag's rollout with the variant at
    /// `variant_bp`; `None` for a rollout that is not a flag.
    pub fn flag_at(&self, variant_bp: u32, state: FlagState) -> Option<Flag> {
        let meta = self.flag.as_ref()?;
        Some(flag_of(
            &self.name,
            &self.matcher,
            &self.identity,
            meta.anonymous,
            self.salt(),
            &self.stable,
            &self.canary,
            &self.overrides,
            variant_bp,
            state,
            &meta.requires,
            meta.exclusion.clone(),
        ))
    }

    pub fn is_flag(&self) -> bool {
        self.flag.is_some()
    }
}
