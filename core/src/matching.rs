//! What compiled rollouts and flags share: whether a match fits a
//! request's host and path, weights as bucket boundaries and lanes, and
//! header names as they are compared.

use alloc::string::String;
use alloc::vec::Vec;

use crate::cohort::BUCKETS;
use crate::config::{IdentitySource, Version};

/// Whether a match on `want_host` (lowercase, no port) and `prefix` fits a
/// request for `host` (as sent in `:authority`) and `path`; an absent field
/// fits anything.
pub fn fits(want_host: Option<&str>, prefix: Option<&str>, host: &[u8], path: &[u8]) -> bool {
    want_host.is_none_or(|want| host_without_port(host).eq_ignore_ascii_case(want.as_bytes()))
        && prefix.is_none_or(|p| path.starts_with(p.as_bytes()))
}

/// The prefix a match must test: `/` is every path Envoy routes (an
/// HTTP `:path` starts with one), so it is no prefix at all and the filter
/// need not look at `:path` for it.
pub fn effective_prefix(prefix: Option<&String>) -> Option<String> {
    prefix.filter(|p| p.as_str() != "/").cloned()
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
    fn a_root_prefix_is_no_prefix() {
        assert_eq!(effective_prefix(Some(&"/".into())), None);
        assert_eq!(effective_prefix(Some(&"/api".into())), Some("/api".into()));
        assert_eq!(effective_prefix(None), None);
    }

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
