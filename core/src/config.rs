//! The config schema of docs/filter.md ("Configuration"), as serde types.
//! Unknown fields are refused: a misspelt `wieght` must be an error, not a
//! silent default.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

pub const DEFAULT_ROUTE_HEADER: &str = "x-dimmer-version";
pub const DEFAULT_FLAGS_HEADER: &str = "x-dimmer-flags";

/// The Envoy wasm filter's `configuration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    #[serde(default = "default_route_header")]
    pub route_header: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerConfig>,
    #[serde(default)]
    pub rollouts: Vec<Rollout>,
    /// The request header that carries every flag's variant upstream.
    #[serde(default = "default_flags_header")]
    pub flags_header: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
}

fn default_route_header() -> String {
    String::from(DEFAULT_ROUTE_HEADER)
}

fn default_flags_header() -> String {
    String::from(DEFAULT_FLAGS_HEADER)
}

/// Where the filter polls for weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// The Envoy cluster that reaches the controller.
    pub cluster: String,
    /// `:authority` of the poll; defaults to the cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default = "default_config_path")]
    pub path: String,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn default_config_path() -> String {
    String::from("/v1/config")
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    500
}

/// The body of the controller's `GET /v1/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigDoc {
    pub revision: u64,
    #[serde(default)]
    pub rollouts: Vec<Rollout>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matcher: Match,
    #[serde(default)]
    pub identity: Vec<IdentitySource>,
    #[serde(default)]
    pub anonymous: Anonymous,
    /// The cookie the filter sets when `anonymous` is `cookie`.
    #[serde(default)]
    pub anonymous_cookie: CookieSettings,
    pub salt: String,
    pub stable: String,
    pub versions: Vec<Version>,
    #[serde(default)]
    pub overrides: Vec<Override>,
    /// Whether the filter counts this rollout's requests (status class and
    /// latency per version). `false` where Envoy's own per-cluster stats
    /// count them (one cluster per version): the filter then reads no
    /// status and no clock, and records nothing.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub count: bool,
    /// The version that requests Envoy mirrors (`request_mirror_policies`,
    /// its host suffixed `-shadow`) are sent to. The filter recognises them
    /// whether or not this is set: they never join a cohort; with it, they
    /// are routed to this version and counted apart as `shadow_requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    /// A/B/n: the versions other than stable, in listed order, each own one
    /// of as many equal lanes of the buckets and fill it from its start;
    /// stable owns the rest of every lane. A version's weight then moves
    /// users between it and stable only, never between two candidates
    /// (docs/cohort.md, "Lanes").
    #[serde(default, skip_serializing_if = "is_false")]
    pub lanes: bool,
    /// Who the requests are from, counted per version and value
    /// (`dimmer_mix`), so the controller can check the canary's users look
    /// like everyone's (docs/analysis.md, "Cohorts that represent the users").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<Dimension>,
}

/// One cohort dimension: `{"header": "x-country"}`, `{"cookie": "plan"}` or
/// `{"user_agent": "class"}`, with at most `max_values` values counted apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DimensionFields", into = "DimensionFields")]
pub struct Dimension {
    pub source: DimensionSource,
    pub max_values: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DimensionSource {
    Header(String),
    Cookie(String),
    /// `bot`, `mobile` or `desktop`, from `user-agent`.
    UserAgentClass,
}

pub const DEFAULT_MAX_VALUES: u8 = 8;

impl Dimension {
    /// Its name in the `dimension` tag: the header's name, `cookie.NAME`,
    /// or `user_agent`.
    pub fn name(&self) -> String {
        match &self.source {
            DimensionSource::Header(h) => h.to_ascii_lowercase(),
            DimensionSource::Cookie(c) => alloc::format!("cookie.{c}"),
            DimensionSource::UserAgentClass => String::from("user_agent"),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DimensionFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_values: Option<u8>,
}

impl TryFrom<DimensionFields> for Dimension {
    type Error = &'static str;

    fn try_from(f: DimensionFields) -> Result<Self, Self::Error> {
        let source = match (f.header, f.cookie, f.user_agent.as_deref()) {
            (Some(h), None, None) => DimensionSource::Header(h),
            (None, Some(c), None) => DimensionSource::Cookie(c),
            (None, None, Some("class")) => DimensionSource::UserAgentClass,
            (None, None, Some(_)) => return Err("`user_agent` takes one value: class"),
            _ => return Err("a dimension has exactly one of `header`, `cookie` or `user_agent`"),
        };
        Ok(Dimension {
            source,
            max_values: f.max_values.unwrap_or(DEFAULT_MAX_VALUES),
        })
    }
}

impl From<Dimension> for DimensionFields {
    fn from(d: Dimension) -> Self {
        let (header, cookie, user_agent) = match d.source {
            DimensionSource::Header(h) => (Some(h), None, None),
            DimensionSource::Cookie(c) => (None, Some(c), None),
            DimensionSource::UserAgentClass => (None, None, Some(String::from("class"))),
        };
        DimensionFields {
            header,
            cookie,
            user_agent,
            max_values: (d.max_values != DEFAULT_MAX_VALUES).then_some(d.max_values),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

/// One place an identity may come from: `{"header": "x-user-id"}` or
/// `{"cookie": "session_id"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SourceFields", into = "SourceFields")]
pub enum IdentitySource {
    Header(String),
    Cookie(String),
}

/// The wire form of [`IdentitySource`]: a map with one key. Spelt out rather
/// than left to serde's enum tagging, which YAML writes as `!header` tags.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cookie: Option<String>,
}

impl TryFrom<SourceFields> for IdentitySource {
    type Error = &'static str;

    fn try_from(f: SourceFields) -> Result<Self, Self::Error> {
        match (f.header, f.cookie) {
            (Some(h), None) => Ok(IdentitySource::Header(h)),
            (None, Some(c)) => Ok(IdentitySource::Cookie(c)),
            _ => Err("an identity source has exactly one of `header` or `cookie`"),
        }
    }
}

impl From<IdentitySource> for SourceFields {
    fn from(s: IdentitySource) -> Self {
        match s {
            IdentitySource::Header(h) => SourceFields {
                header: Some(h),
                cookie: None,
            },
            IdentitySource::Cookie(c) => SourceFields {
                header: None,
                cookie: Some(c),
            },
        }
    }
}

/// What to do with a request that carries no identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    /// Send it to the stable version.
    #[default]
    Stable,
    /// Pick a version by weight, per request (not sticky).
    Random,
    /// Make a random id, set it as a cookie, and hash it: sticky from then on.
    Cookie,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieSettings {
    #[serde(default = "default_cookie_name")]
    pub name: String,
    #[serde(default = "default_cookie_max_age")]
    pub max_age_s: u64,
    #[serde(default)]
    pub secure: bool,
}

fn default_cookie_name() -> String {
    String::from("dimmer_uid")
}
fn default_cookie_max_age() -> u64 {
    30 * 24 * 3600
}

impl Default for CookieSettings {
    fn default() -> Self {
        CookieSettings {
            name: default_cookie_name(),
            max_age_s: default_cookie_max_age(),
            secure: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    pub name: String,
    /// Basis points; a rollout's weights add up to 10000.
    pub weight: u32,
}

/// Requests whose `header` has one of `values` go to `version`, whatever the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub header: String,
    pub values: Vec<String>,
    pub version: String,
}

/// A feature flag (docs/flags.md): evaluated on every request it matches,
/// whatever rollout routes it, and passed upstream in the flags header.
/// Its variants are cohorts exactly as a rollout's versions are, so a
/// flag's key shares the rollouts' name space (and their stats).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flag {
    pub key: String,
    #[serde(default, rename = "match")]
    pub matcher: Match,
    #[serde(default)]
    pub identity: Vec<IdentitySource>,
    #[serde(default)]
    pub anonymous: FlagAnonymous,
    /// Defaults to the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// What everyone gets while the flag is disabled, and what a request
    /// gets when a prerequisite or its exclusion group keeps it out.
    pub default_variant: String,
    /// Weights in basis points, adding up to 10000; listed so that growing
    /// a later variant never moves a user off it.
    pub variants: Vec<Version>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<FlagOverride>,
    #[serde(default)]
    pub state: FlagState,
    /// Other flags whose variant this one needs: unmet, it serves its default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Prerequisite>,
    /// Experiments of one group take disjoint slices of the group's buckets,
    /// so no identity is in two of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusion: Option<Exclusion>,
    /// Whether the filter records each request's latency per variant: a
    /// histogram call per flag per request, so the controller asks for it
    /// only while a flag is being rolled out and judged.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub record_latency: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Flag {
    pub fn salt(&self) -> &str {
        self.salt.as_deref().unwrap_or(&self.key)
    }
}

/// What a flag does with a request that carries no identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlagAnonymous {
    /// The default variant.
    #[default]
    Default,
    /// A variant by weight, per request (not sticky).
    Random,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlagState {
    #[default]
    Enabled,
    /// Everyone gets the default variant: the kill switch.
    Disabled,
}

/// Requests whose `header` has one of `values` get `variant`, before any hashing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagOverride {
    pub header: String,
    pub values: Vec<String>,
    pub variant: String,
}

/// This flag applies only where flag `flag` evaluated to one of `variants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prerequisite {
    pub flag: String,
    pub variants: Vec<String>,
}

/// The slice `[from_bp, to_bp)` of the group's 10000 buckets; the group's
/// name is the salt of the group's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    pub group: String,
    pub from_bp: u32,
    pub to_bp: u32,
}
