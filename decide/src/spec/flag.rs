//! The flag spec (docs/flags.md): what an operator writes for a feature
//! flag, its checks, and the filter's flag it becomes. A flag is rolled
//! out, measured and aborted by the same engine as a canary: the rollout
//! that carries it is made in `flag_rollout`, with the flag's own fields in
//! [`FlagMeta`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use dimmer_core::config::{
    Exclusion, Flag, FlagAnonymous, FlagOverride, FlagState, IdentitySource, Match, Override,
    Prerequisite, Version,
};
use serde::{Deserialize, Serialize};

use super::analysis::{Analysis, Slo};
use super::error::{check_name, invalid, SpecError};
use super::steps::Step;

/// Longest owner, description and value text kept.
const MAX_TEXT: usize = 1024;
const MAX_VALUE_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Rollout,
    Flag,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// A release toggle or experiment: it has an expiry date, and is listed
    /// for removal once rolled out or expired.
    #[default]
    Temporary,
    /// An operational switch meant to stay.
    Permanent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExclusionSpec {
    pub group: String,
    pub from_percent: f64,
    pub to_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagSpec {
    pub kind: Kind,
    pub key: String,
    pub owner: String,
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// `YYYY-MM-DD`; required for temporary flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, rename = "match")]
    pub matcher: Match,
    #[serde(default)]
    pub identity: Vec<IdentitySource>,
    #[serde(default)]
    pub anonymous: FlagAnonymous,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    pub default_variant: String,
    /// The variant the steps roll out.
    pub variant: String,
    /// What OFREP answers for each variant; a variant not listed answers
    /// its name as a string.
    #[serde(default)]
    pub values: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub overrides: Vec<FlagOverride>,
    #[serde(default)]
    pub requires: Vec<Prerequisite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusion: Option<ExclusionSpec>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub analysis: Analysis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<Slo>,
    #[serde(default)]
    pub webhooks: Vec<String>,
}

/// A flag's own fields, kept with its rollout state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagMeta {
    pub owner: String,
    pub lifecycle: Lifecycle,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub anonymous: FlagAnonymous,
    #[serde(default)]
    pub values: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub requires: Vec<Prerequisite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusion: Option<Exclusion>,
}

/// `YYYY-MM-DD` as the instant that day begins (UTC).
pub fn parse_date(text: &str) -> Option<SystemTime> {
    let ok_shape = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !ok_shape {
        return None;
    }
    humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).ok()
}

impl FlagSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.kind != Kind::Flag {
            return Err(invalid("kind", "must be `flag`"));
        }
        check_name(&self.key).map_err(|_| {
            invalid(
                "key",
                "must be 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit",
            )
        })?;
        if self.variant == self.default_variant {
            return Err(invalid("variant", "must differ from default_variant"));
        }
        if self.owner.trim().is_empty() || self.owner.len() > MAX_TEXT {
            return Err(invalid(
                "owner",
                format!("must name a team or person (1 to {MAX_TEXT} bytes)"),
            ));
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.len() > MAX_TEXT)
        {
            return Err(invalid("description", format!("at most {MAX_TEXT} bytes")));
        }
        match (&self.expires, self.lifecycle) {
            (None, Lifecycle::Temporary) => {
                return Err(invalid(
                    "expires",
                    "a temporary flag needs an expiry date (YYYY-MM-DD), or lifecycle: permanent",
                ))
            }
            (Some(d), _) if parse_date(d).is_none() => {
                return Err(invalid(
                    "expires",
                    format!("{d:?} is not a date like 2027-03-01"),
                ))
            }
            _ => {}
        }
        for (name, value) in &self.values {
            if name != &self.default_variant && name != &self.variant {
                return Err(invalid(
                    format!("values.{name}"),
                    format!(
                        "is not a variant of this flag ({} or {})",
                        self.default_variant, self.variant
                    ),
                ));
            }
            if serde_json::to_vec(value).map_or(true, |b| b.len() > MAX_VALUE_BYTES) {
                return Err(invalid(
                    format!("values.{name}"),
                    format!("at most {MAX_VALUE_BYTES} bytes of JSON"),
                ));
            }
        }
        if let Some(ex) = &self.exclusion {
            let ok = |p: f64| (0.0..=100.0).contains(&p);
            if !ok(ex.from_percent) || !ok(ex.to_percent) || ex.from_percent >= ex.to_percent {
                return Err(invalid(
                    "exclusion",
                    "from_percent and to_percent from 0 to 100, from below to",
                ));
            }
        }
        // Each prerequisite and exclusion on its own, with the filter's rules;
        // what binds flags together is checked at apply against the others.
        let alone = self.flag_at(10_000, FlagState::Enabled);
        let mut alone = alone;
        alone.requires.clear();
        dimmer_core::validate::validate_flag(&alone, "flag").map_err(core_error)?;
        for (i, p) in self.requires.iter().enumerate() {
            if p.flag == self.key {
                return Err(invalid(
                    format!("requires[{i}].flag"),
                    "a flag cannot require itself",
                ));
            }
            if p.variants.is_empty() {
                return Err(invalid(
                    format!("requires[{i}].variants"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }

    pub(super) fn exclusion_bp(&self) -> Option<Exclusion> {
        self.exclusion.as_ref().map(|e| Exclusion {
            group: e.group.clone(),
            from_bp: (e.from_percent * 100.0).round() as u32,
            to_bp: (e.to_percent * 100.0).round() as u32,
        })
    }

    fn flag_at(&self, variant_bp: u32, state: FlagState) -> Flag {
        flag_of(
            &self.key,
            &self.matcher,
            &self.identity,
            self.anonymous,
            self.salt.as_deref().unwrap_or(&self.key),
            &self.default_variant,
            &self.variant,
            &rollout_overrides(&self.overrides),
            variant_bp,
            state,
            &self.requires,
            self.exclusion_bp(),
        )
    }
}

/// A flag's overrides as the rollout that carries it holds them (the
/// variant in `version`), and back.
pub(super) fn rollout_overrides(overrides: &[FlagOverride]) -> Vec<Override> {
    overrides
        .iter()
        .map(|o| Override {
            header: o.header.clone(),
            values: o.values.clone(),
            version: o.variant.clone(),
        })
        .collect()
}

pub(super) fn flag_overrides(overrides: &[Override]) -> Vec<FlagOverride> {
    overrides
        .iter()
        .map(|o| FlagOverride {
            header: o.header.clone(),
            values: o.values.clone(),
            variant: o.version.clone(),
        })
        .collect()
}

fn core_error(e: dimmer_core::ConfigError) -> SpecError {
    match e {
        dimmer_core::ConfigError::Invalid { field, problem } => invalid(
            field.trim_start_matches("flag.").to_owned(),
            problem.to_string(),
        ),
        other => invalid("flag", other.to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn flag_of(
    key: &str,
    matcher: &Match,
    identity: &[IdentitySource],
    anonymous: FlagAnonymous,
    salt: &str,
    default_variant: &str,
    variant: &str,
    overrides: &[Override],
    variant_bp: u32,
    state: FlagState,
    requires: &[Prerequisite],
    exclusion: Option<Exclusion>,
) -> Flag {
    let variant_bp = variant_bp.min(10_000);
    Flag {
        key: key.to_owned(),
        matcher: matcher.clone(),
        identity: identity.to_vec(),
        anonymous,
        salt: Some(salt.to_owned()),
        default_variant: default_variant.to_owned(),
        // The rolled-out variant is listed last, so growing it never moves
        // a user off it.
        variants: vec![
            Version {
                name: default_variant.to_owned(),
                weight: 10_000 - variant_bp,
            },
            Version {
                name: variant.to_owned(),
                weight: variant_bp,
            },
        ],
        overrides: flag_overrides(overrides),
        state,
        requires: requires.to_vec(),
        exclusion,
        record_latency: true,
    }
}

/// How long before a flag that is fully rolled out is listed as ready for
/// removal from the code, by default.
pub const READY_AFTER: Duration = Duration::from_secs(14 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RolloutSpec;

    const EXAMPLE: &str = include_str!("../../../examples/new-cart-flag.yaml");

    fn with(extra: &str) -> String {
        format!("{EXAMPLE}{extra}")
    }

    #[test]
    fn the_example_is_a_flag_whose_rollout_runs_off_to_on() {
        let spec = RolloutSpec::from_yaml(EXAMPLE).unwrap();
        assert!(spec.is_flag());
        assert_eq!((spec.stable.as_str(), spec.canary.as_str()), ("off", "on"));
        let meta = spec.flag.as_ref().unwrap();
        assert_eq!(meta.values["on"], serde_json::json!(true));
        let f = spec.flag_at(1000, FlagState::Enabled).unwrap();
        assert_eq!(f.salt.as_deref(), Some("new-cart"));
        assert_eq!(f.variants[1].weight, 1000);
        assert_eq!(f.overrides[0].variant, "on");
        // A rollout is never a flag.
        let rollout =
            RolloutSpec::from_yaml(include_str!("../../../examples/checkout-rollout.yaml"))
                .unwrap();
        assert!(rollout.flag_at(0, FlagState::Enabled).is_none());
    }

    #[test]
    fn flag_specs_name_the_field_at_fault() {
        let cases = [
            (EXAMPLE.replace("owner: team-checkout\n", ""), "owner"),
            (EXAMPLE.replace("expires: 2027-03-31\n", ""), "expires"),
            (EXAMPLE.replace("2027-03-31", "31/03/2027"), "expires"),
            (
                EXAMPLE.replace("variant: \"on\"\nvalues", "variant: \"off\"\nvalues"),
                "variant: must differ",
            ),
            (
                with("exclusion: {group: g, from_percent: 50, to_percent: 10}\n"),
                "exclusion",
            ),
            (
                with("requires: [{flag: new-cart, variants: [on]}]\n"),
                "requires[0].flag",
            ),
            (
                with("requires: [{flag: other, variants: []}]\n"),
                "requires[0].variants",
            ),
            (
                EXAMPLE.replace("{\"off\": false, \"on\": true}", "{\"maybe\": 1}"),
                "values.maybe",
            ),
            (
                EXAMPLE.replace("header: x-beta-tester", "header: X-Beta"),
                "overrides[0].header",
            ),
            (with("wieght: 3\n"), "unknown field `wieght`"),
        ];
        for (text, field) in cases {
            let err = RolloutSpec::from_yaml(&text).unwrap_err().to_string();
            assert!(err.contains(field), "{err:?} should name {field:?}");
        }
    }

    #[test]
    fn a_rollout_spec_cannot_smuggle_a_flag_section() {
        let text = format!(
            "{}flag: {{owner: x, lifecycle: permanent, anonymous: default}}\n",
            include_str!("../../../examples/checkout-rollout.yaml")
        );
        let err = RolloutSpec::from_yaml(&text).unwrap_err().to_string();
        assert!(err.contains("kind: flag"), "{err}");
    }

    #[test]
    fn a_flag_written_out_reads_back_as_the_same_flag() {
        let text = with("exclusion: {group: g, from_percent: 12.5, to_percent: 40}\n");
        let spec = RolloutSpec::from_yaml(&text).unwrap();
        let yaml = spec.to_yaml().unwrap();
        assert!(
            yaml.contains("kind: flag") && yaml.contains("key: new-cart"),
            "{yaml}"
        );
        assert_eq!(RolloutSpec::from_yaml(&yaml).unwrap(), spec);
        let rollout =
            RolloutSpec::from_yaml(include_str!("../../../examples/checkout-rollout.yaml"))
                .unwrap();
        assert_eq!(
            RolloutSpec::from_yaml(&rollout.to_yaml().unwrap()).unwrap(),
            rollout
        );
    }

    #[test]
    fn permanent_flags_need_no_expiry_and_dates_are_checked() {
        let text = EXAMPLE
            .replace(
                "lifecycle: temporary        # or permanent (no expiry)",
                "lifecycle: permanent",
            )
            .replace("expires: 2027-03-31\n", "");
        assert!(RolloutSpec::from_yaml(&text).is_ok());
        assert!(parse_date("2027-02-30").is_none());
        assert!(parse_date("2027-02-28").is_some());
        assert!(parse_date("2027-2-28").is_none());
    }
}
