//! The hot-path form of a validated config: salts pre-hashed, weights turned
//! into bucket boundaries, names resolved to indices. Built once per config
//! change, never per request.

use alloc::string::String;
use alloc::vec::Vec;

use crate::cohort::Cohort;
use crate::config::{
    Anonymous, CookieSettings, Flag, IdentitySource, Rollout, Version, DEFAULT_FLAGS_HEADER,
};
use crate::flags::CompiledFlags;
use crate::matching::{effective_prefix, ends_of, fits, lane_start, lowercase_headers};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub revision: u64,
    pub route_header: String,
    pub rollouts: Vec<CompiledRollout>,
    /// Whether any rollout matches on host / path: if not, the filter skips
    /// reading `:authority` / `:path`. A rollout that names a shadow version
    /// needs the host too, to know a mirrored request by its `-shadow`.
    pub needs_host: bool,
    pub needs_path: bool,
    /// The header that carries flag variants upstream, and the flags.
    pub flags_header: String,
    pub flags: CompiledFlags,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRollout {
    pub name: String,
    /// Lowercase, without port.
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub identity: Vec<IdentitySource>,
    pub anonymous: Anonymous,
    pub cookie: CookieSettings,
    pub cohort: Cohort,
    pub stable: usize,
    pub versions: Vec<String>,
    /// The bucket ranges in order: `ends[i]` is one past the last bucket of
    /// range `i`, which `owners[i]` (an index into `versions`) owns.
    pub ends: Vec<u16>,
    pub owners: Vec<usize>,
    pub overrides: Vec<CompiledOverride>,
    /// Whether the filter counts this rollout's requests.
    pub count: bool,
    /// The version mirrored requests go to, if named.
    pub shadow: Option<usize>,
    /// Cohort dimensions counted per version.
    pub dimensions: Vec<crate::config::Dimension>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledOverride {
    pub header: String,
    pub values: Vec<Vec<u8>>,
    pub version: usize,
}

impl Compiled {
    /// Compiles rollouts that have passed [`crate::validate::validate_rollouts`].
    /// Names that do not resolve fall back to index 0 rather than panicking;
    /// validation has already refused such configs.
    pub fn new(revision: u64, route_header: &str, rollouts: &[Rollout]) -> Self {
        let rollouts: Vec<CompiledRollout> = rollouts.iter().map(CompiledRollout::new).collect();
        Compiled {
            revision,
            route_header: String::from(route_header),
            needs_host: rollouts
                .iter()
                .any(|r| r.host.is_some() || r.shadow.is_some()),
            needs_path: rollouts.iter().any(|r| r.path_prefix.is_some()),
            rollouts,
            flags_header: String::from(DEFAULT_FLAGS_HEADER),
            flags: CompiledFlags::new(&[]),
        }
    }

    /// The same, with flags that have passed [`crate::validate::validate_flags`].
    pub fn with_flags(mut self, flags_header: &str, flags: &[Flag]) -> Self {
        self.flags_header = String::from(flags_header);
        self.flags = CompiledFlags::new(flags);
        self
    }
}

impl CompiledRollout {
    fn new(r: &Rollout) -> Self {
        let index = |name: &str| r.versions.iter().position(|v| v.name == name).unwrap_or(0);
        let stable = index(&r.stable);
        let (ends, owners) = if r.lanes {
            lanes_of(&r.versions, stable)
        } else {
            (ends_of(&r.versions), (0..r.versions.len()).collect())
        };
        CompiledRollout {
            name: r.name.clone(),
            host: r.matcher.host.as_ref().map(|h| h.to_ascii_lowercase()),
            path_prefix: effective_prefix(r.matcher.path_prefix.as_ref()),
            identity: lowercase_headers(&r.identity),
            anonymous: r.anonymous,
            cookie: r.anonymous_cookie.clone(),
            cohort: Cohort::new(&r.salt),
            stable,
            versions: r.versions.iter().map(|v| v.name.clone()).collect(),
            ends,
            owners,
            overrides: r
                .overrides
                .iter()
                .map(|o| CompiledOverride {
                    header: o.header.to_ascii_lowercase(),
                    values: o.values.iter().map(|v| v.as_bytes().to_vec()).collect(),
                    version: index(&o.version),
                })
                .collect(),
            count: r.count,
            shadow: r.shadow.as_deref().map(index),
            dimensions: r.dimensions.clone(),
        }
    }

    /// The version that owns `bucket`.
    pub fn version_of_bucket(&self, bucket: u16) -> usize {
        self.ends
            .iter()
            .position(|&end| bucket < end)
            .and_then(|range| self.owners.get(range).copied())
            .unwrap_or(self.stable)
    }

    /// The version an identity gets by hash alone (no overrides).
    pub fn version_of_identity(&self, identity: &[u8]) -> usize {
        self.version_of_bucket(self.cohort.bucket(identity))
    }

    /// Whether this rollout applies to a request for `host` (as sent in
    /// `:authority`, port and case as they come) and `path`.
    pub fn matches(&self, host: &[u8], path: &[u8]) -> bool {
        fits(
            self.host.as_deref(),
            self.path_prefix.as_deref(),
            host,
            path,
        )
    }
}

/// Ranges for lanes: the `i`-th version other than `stable` fills lane `i`
/// from its start (at most the lane's width), stable the rest of the lane.
fn lanes_of(versions: &[Version], stable: usize) -> (Vec<u16>, Vec<usize>) {
    let arms: Vec<usize> = (0..versions.len()).filter(|&i| i != stable).collect();
    let n = arms.len();
    let (mut ends, mut owners) = (Vec::with_capacity(2 * n), Vec::with_capacity(2 * n));
    for (lane, &v) in arms.iter().enumerate() {
        let (start, end) = (lane_start(lane, n), lane_start(lane + 1, n));
        let width = u32::from(end - start);
        let fill = versions[v].weight.min(width) as u16;
        ends.extend([start + fill, end]);
        owners.extend([v, stable]);
    }
    (ends, owners)
}
