//! The hot-path form of a validated config: salts pre-hashed, weights turned
//! into bucket boundaries, names resolved to indices. Built once per config
//! change, never per request.

use alloc::string::String;
use alloc::vec::Vec;

use crate::cohort::{Cohort, BUCKETS};
use crate::config::{
    Anonymous, CookieSettings, Flag, IdentitySource, Rollout, Version, DEFAULT_FLAGS_HEADER,
};
use crate::flags::CompiledFlags;

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
            path_prefix: r.matcher.path_prefix.clone(),
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

/// Whether a match on `want_host` (lowercase, no port) and `prefix` fits a
/// request for `host` (as sent in `:authority`) and `path`; an absent field
/// fits anything.
pub fn fits(want_host: Option<&str>, prefix: Option<&str>, host: &[u8], path: &[u8]) -> bool {
    want_host.is_none_or(|want| host_without_port(host).eq_ignore_ascii_case(want.as_bytes()))
        && prefix.is_none_or(|p| path.starts_with(p.as_bytes()))
}

/// Weights in basis points as bucket boundaries: `ends[i]` is one past the
/// last bucket of entry `i`, so an entry listed later keeps its buckets as
/// it grows.
pub fn ends_of(weights: &[Version]) -> Vec<u16> {
    let mut acc: u32 = 0;
    weights
        .iter()
        .map(|v| {
            acc = acc.saturating_add(v.weight);
            acc.min(u32::from(BUCKETS)) as u16
        })
        .collect()
}

/// The width of each of `n` lanes of the buckets, the last taking the
/// remainder: lane `i` is `[lane_start(i, n), lane_start(i + 1, n))`.
pub fn lane_start(i: usize, n: usize) -> u16 {
    (usize::from(BUCKETS) * i / n.max(1)) as u16
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

/// The entry that owns `bucket`; `fallback` past the last boundary.
pub fn owner_of(ends: &[u16], bucket: u16, fallback: usize) -> usize {
    ends.iter()
        .position(|&end| bucket < end)
        .unwrap_or(fallback)
}

/// Header names are matched lowercase.
pub fn lowercase_headers(sources: &[IdentitySource]) -> Vec<IdentitySource> {
    sources
        .iter()
        .map(|s| match s {
            IdentitySource::Header(h) => IdentitySource::Header(h.to_ascii_lowercase()),
            other => other.clone(),
        })
        .collect()
}

/// The host a mirrored request was meant for: Envoy sends a mirror with
/// `-shadow` appended to the host (`app-shadow:8080` for `app:8080`).
/// `None` for a request that is not a mirror.
pub fn shadowed_host(authority: &[u8]) -> Option<&[u8]> {
    const SUFFIX: &[u8] = b"-shadow";
    let host = host_without_port(authority);
    let cut = host.len().checked_sub(SUFFIX.len())?;
    host[cut..]
        .eq_ignore_ascii_case(SUFFIX)
        .then_some(&host[..cut])
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
pub fn host_without_port(authority: &[u8]) -> &[u8] {
    if authority.first() == Some(&b'[') {
        return match authority.iter().position(|&b| b == b']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.iter().rposition(|&b| b == b':') {
        Some(colon) => &authority[..colon],
        None => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports() {
        assert_eq!(host_without_port(b"example.com:8080"), b"example.com");
        assert_eq!(host_without_port(b"example.com"), b"example.com");
        assert_eq!(host_without_port(b"[::1]:80"), b"[::1]");
        assert_eq!(host_without_port(b"[::1"), b"[::1");
        assert_eq!(host_without_port(b""), b"");
    }

    #[test]
    fn knows_a_mirror_by_its_host() {
        assert_eq!(shadowed_host(b"app-shadow:8080"), Some(&b"app"[..]));
        assert_eq!(shadowed_host(b"APP-SHADOW"), Some(&b"APP"[..]));
        assert_eq!(
            shadowed_host(b"localhost-shadow:10000"),
            Some(&b"localhost"[..])
        );
        assert_eq!(shadowed_host(b"-shadow"), Some(&b""[..]));
        assert_eq!(shadowed_host(b"app:8080"), None);
        assert_eq!(shadowed_host(b"shadow"), None);
        assert_eq!(
            shadowed_host(b"app:8080-shadow"),
            None,
            "the port is not the host"
        );
        assert_eq!(shadowed_host(b""), None);
    }
}
