//! The proxies that poll for config, and the revision each has applied.
//! Bounded: ids are short, entries are capped, and a proxy not seen for a
//! while is forgotten. A proxy that stops advancing holds a step only for a
//! while, then is reported stale instead of blocking.
//!
//! In a fleet each controller sees the polls that reach it; what its peers
//! saw is absorbed here too (`crate::fleet` fetches it), so every view of
//! the proxies — status, holds, rollback time — is the fleet's, whichever
//! controller a proxy polls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxySeen {
    pub id: String,
    pub revision: u64,
    pub last_seen_ms: u64,
    /// The gap between its last two polls: its poll interval as observed
    /// (0 until it has polled twice). Kept here, not sent to peers: the
    /// fleet's exchange stays as small as it was measured (bench/RESULTS.md),
    /// and a sighting from a peer is given the default interval's time.
    #[serde(default, skip_serializing)]
    pub interval_ms: u64,
}

/// The poll interval assumed for a proxy seen once: the filter's default.
const DEFAULT_INTERVAL_MS: u64 = 1_000;

impl ProxySeen {
    /// How long after a revision is issued this proxy can be expected to
    /// report it: one poll to receive it, the next to say it applied it,
    /// plus the filter's tick (a quarter interval) and a little slack.
    /// Until then it is applying, not lagging.
    pub fn grace_ms(&self) -> u64 {
        let every = if self.interval_ms == 0 {
            DEFAULT_INTERVAL_MS
        } else {
            self.interval_ms
        };
        2 * every + every / 4 + 250
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest proxy id accepted, in bytes.
    pub max_id_len: usize,
    /// Most proxies remembered; past it the least recently seen is dropped.
    pub max_proxies: usize,
    /// A proxy is live if it polled within this long.
    pub live_ms: u64,
    /// A proxy not seen for this long is forgotten.
    pub forget_ms: u64,
    /// A live proxy still behind a revision this long after it was issued is
    /// stale: reported, no longer waited for.
    pub stale_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_id_len: 256,
            max_proxies: 4096,
            live_ms: 10_000,
            forget_ms: 600_000,
            stale_ms: 60_000,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("x-dimmer-proxy-id: at most {0} bytes")]
    IdTooLong(usize),
}

/// Where the live proxies stand against one rollout's revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    pub applied: usize,
    pub live: usize,
    /// Behind, within the time they need to apply and report a revision
    /// ([`ProxySeen::grace_ms`]): waited for, the normal case after a
    /// change.
    pub applying: usize,
    pub applying_named: Vec<String>,
    /// Behind past that time, and still waited for: how many, and the
    /// first [`NAMED`] by id.
    pub lagging: usize,
    pub lagging_named: Vec<String>,
    /// Behind for longer than the limit, reported, not waited for: how
    /// many, and the first [`NAMED`] by id.
    pub stale: usize,
    pub stale_named: Vec<String>,
}

/// Most proxy ids named in a status or a reason; the counts say the rest.
pub const NAMED: usize = 20;

/// `named` (the first of `total` ids) for people, then how many more.
pub fn some_of(named: &[String], total: usize) -> String {
    let shown = named.len().min(NAMED);
    let mut s = named[..shown].join(", ");
    if total > shown {
        s.push_str(&format!(" and {} more", total - shown));
    }
    s
}

/// The first [`NAMED`] of `ids` in order, without sorting them all (a
/// revision just issued leaves every proxy behind).
fn first_named(mut ids: Vec<&str>) -> Vec<String> {
    if ids.len() > NAMED {
        ids.select_nth_unstable(NAMED);
        ids.truncate(NAMED);
    }
    ids.sort_unstable();
    ids.into_iter().map(str::to_owned).collect()
}

pub struct Registry {
    limits: Limits,
    seen: Mutex<HashMap<String, ProxySeen>>,
    /// What each peer controller last said it saw, by peer.
    peers: Mutex<HashMap<String, Vec<ProxySeen>>>,
    /// Bumped when a proxy appears, changes revision, or a peer's list
    /// arrives: what makes the merged view out of date at once.
    generation: AtomicU64,
    view: Mutex<Option<View>>,
}

/// The merged view, computed once for many readers (every look and every
/// status reads it): rebuilt when the generation moves, or at most
/// [`VIEW_FOR_MS`] old for the last-seen times (liveness is judged over
/// seconds). Readers still judge liveness and forgetting against their own
/// `now`.
struct View {
    at_ms: u64,
    generation: u64,
    proxies: Arc<Vec<ProxySeen>>,
}

const VIEW_FOR_MS: u64 = 250;

impl Registry {
    pub fn new(limits: Limits) -> Registry {
        Registry {
            limits,
            seen: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            view: Mutex::new(None),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn record(&self, id: &str, revision: u64, now_ms: u64) -> Result<(), RegistryError> {
        if id.is_empty() {
            return Ok(());
        }
        if id.len() > self.limits.max_id_len {
            return Err(RegistryError::IdTooLong(self.limits.max_id_len));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains_key(id) && seen.len() >= self.limits.max_proxies {
            let forget = self.limits.forget_ms;
            seen.retain(|_, p| now_ms.saturating_sub(p.last_seen_ms) < forget);
            if seen.len() >= self.limits.max_proxies {
                let oldest = seen
                    .values()
                    .min_by_key(|p| p.last_seen_ms)
                    .map(|p| p.id.clone());
                if let Some(oldest) = oldest {
                    seen.remove(&oldest);
                }
            }
        }
        let interval_ms = seen
            .get(id)
            .map_or(0, |p| now_ms.saturating_sub(p.last_seen_ms));
        let before = seen.insert(
            id.to_owned(),
            ProxySeen {
                id: id.to_owned(),
                revision,
                last_seen_ms: now_ms,
                interval_ms,
            },
        );
        if before.is_none_or(|p| p.revision != revision) {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// The proxies whose polls reached this controller, by id; forgets the
    /// ones not seen for long.
    pub fn local(&self, now_ms: u64) -> Vec<ProxySeen> {
        let mut v = self.local_unsorted(now_ms);
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn local_unsorted(&self, now_ms: u64) -> Vec<ProxySeen> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let forget = self.limits.forget_ms;
        seen.retain(|_, p| now_ms.saturating_sub(p.last_seen_ms) < forget);
        seen.values().cloned().collect()
    }

    /// A peer's sightings, replacing what it said before. Held to this
    /// registry's own limits: a peer cannot grow it past them.
    pub fn absorb(&self, peer: &str, mut seen: Vec<ProxySeen>) {
        seen.retain(|p| !p.id.is_empty() && p.id.len() <= self.limits.max_id_len);
        seen.sort_by_key(|p| std::cmp::Reverse(p.last_seen_ms));
        seen.truncate(self.limits.max_proxies);
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.to_owned(), seen);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Drops what `keep` does not name: peers no longer in the fleet.
    pub fn keep_peers(&self, keep: &[String]) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|peer, _| keep.contains(peer));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Every remembered proxy in the fleet, by id: for each, the latest
    /// sighting by any controller. At most `max_proxies`, the most recent.
    pub fn all(&self, now_ms: u64) -> Vec<ProxySeen> {
        let forget = self.limits.forget_ms;
        let mut v: Vec<ProxySeen> = self
            .merged(now_ms)
            .iter()
            .filter(|p| now_ms.saturating_sub(p.last_seen_ms) < forget)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The merged view, from the cache while it is current.
    fn merged(&self, now_ms: u64) -> Arc<Vec<ProxySeen>> {
        let generation = self.generation.load(Ordering::SeqCst);
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = view.as_ref() {
            let age = now_ms.checked_sub(v.at_ms);
            if v.generation == generation && age.is_some_and(|a| a < VIEW_FOR_MS) {
                return Arc::clone(&v.proxies);
            }
        }
        let proxies = Arc::new(self.merge(now_ms));
        *view = Some(View {
            at_ms: now_ms,
            generation,
            proxies: Arc::clone(&proxies),
        });
        proxies
    }

    fn merge(&self, now_ms: u64) -> Vec<ProxySeen> {
        let mut latest: HashMap<String, ProxySeen> = HashMap::new();
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let theirs = peers.values().flatten().cloned();
        let forget = self.limits.forget_ms;
        for p in self.local_unsorted(now_ms).into_iter().chain(theirs) {
            if now_ms.saturating_sub(p.last_seen_ms) >= forget {
                continue;
            }
            match latest.get(&p.id) {
                Some(known) if known.last_seen_ms >= p.last_seen_ms => {}
                _ => {
                    latest.insert(p.id.clone(), p);
                }
            }
        }
        drop(peers);
        let mut v: Vec<_> = latest.into_values().collect();
        if v.len() > self.limits.max_proxies {
            v.sort_by_key(|p| std::cmp::Reverse(p.last_seen_ms));
            v.truncate(self.limits.max_proxies);
        }
        v
    }

    /// Where the live proxies stand against `revision`, issued at `issued_ms`.
    pub fn standing(&self, revision: u64, issued_ms: u64, now_ms: u64) -> Standing {
        let live_ms = self.limits.live_ms;
        let stale = now_ms.saturating_sub(issued_ms) >= self.limits.stale_ms;
        let merged = self.merged(now_ms);
        let live = merged
            .iter()
            .filter(|p| now_ms.saturating_sub(p.last_seen_ms) < live_ms);
        let since = now_ms.saturating_sub(issued_ms);
        let (mut count, mut applying, mut behind) = (0, Vec::new(), Vec::new());
        for p in live {
            count += 1;
            if p.revision < revision {
                if !stale && since < p.grace_ms() {
                    applying.push(p.id.as_str());
                } else {
                    behind.push(p.id.as_str());
                }
            }
        }
        let (n_applying, n) = (applying.len(), behind.len());
        let named = first_named(behind);
        let (lagging, stale_n, lagging_named, stale_named) = if stale {
            (0, n, Vec::new(), named)
        } else {
            (n, 0, named, Vec::new())
        };
        Standing {
            applied: count - n - n_applying,
            live: count,
            applying: n_applying,
            applying_named: first_named(applying),
            lagging,
            lagging_named,
            stale: stale_n,
            stale_named,
        }
    }

    /// Proxies whose polls reached this controller.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Registry {
        Registry::new(Limits {
            max_proxies: 3,
            ..Limits::default()
        })
    }

    #[test]
    fn a_flood_of_ids_stays_bounded_and_long_ids_are_refused() {
        let r = small();
        for i in 0..300 {
            r.record(&format!("made-up-{i}"), 0, 1000 + i).unwrap();
        }
        assert_eq!(r.len(), 3);
        // The most recent survive.
        let ids: Vec<_> = r.all(2000).into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["made-up-297", "made-up-298", "made-up-299"]);
        assert_eq!(
            r.record(&"x".repeat(16 * 1024), 0, 2000),
            Err(RegistryError::IdTooLong(256))
        );
    }

    #[test]
    fn proxies_not_seen_for_long_are_forgotten() {
        let r = small();
        r.record("edge-1", 5, 0).unwrap();
        assert_eq!(r.all(599_999).len(), 1);
        assert!(r.all(600_000).is_empty());
    }

    #[test]
    fn a_proxy_behind_holds_until_the_limit_then_is_stale() {
        let r = small();
        r.record("edge-1", 7, 100_000).unwrap();
        r.record("stuck", 0, 100_000).unwrap();
        let s = r.standing(7, 50_000, 100_000);
        assert_eq!((s.applied, s.live), (1, 2));
        assert_eq!(
            (s.lagging, s.lagging_named.as_slice()),
            (1, &["stuck".to_string()][..])
        );
        assert_eq!(s.stale, 0);
        let s = r.standing(7, 40_000, 100_000);
        assert_eq!(s.lagging, 0);
        assert_eq!(s.stale_named, ["stuck"]);
        // Not live: neither.
        let s = r.standing(7, 95_000, 111_000);
        assert_eq!(s.live, 0);
    }

    fn seen(id: &str, revision: u64, last_seen_ms: u64) -> ProxySeen {
        ProxySeen {
            id: id.into(),
            revision,
            last_seen_ms,
            interval_ms: 0,
        }
    }

    #[test]
    fn a_proxy_is_applying_for_two_of_its_polls_then_lagging() {
        let r = small();
        // It polls every 500 ms, and was last at revision 6.
        for at in [9_000, 9_500, 10_000] {
            r.record("edge-1", 6, at).unwrap();
        }
        // Revision 7, issued at 10 000: one poll to get it, one to report it.
        let s = r.standing(7, 10_000, 10_400);
        assert_eq!((s.applying, s.lagging, s.applied), (1, 0, 0), "{s:?}");
        assert_eq!(s.applying_named, ["edge-1"]);
        r.record("edge-1", 6, 10_500).unwrap();
        let s = r.standing(7, 10_000, 11_300);
        assert_eq!((s.applying, s.lagging), (1, 0), "{s:?}");
        // Past 2 × 500 + 125 + 250 ms with the old revision: lagging.
        r.record("edge-1", 6, 11_000).unwrap();
        let s = r.standing(7, 10_000, 11_400);
        assert_eq!((s.applying, s.lagging), (0, 1), "{s:?}");
        assert_eq!(s.lagging_named, ["edge-1"]);
        // Reported applied: neither.
        r.record("edge-1", 7, 11_500).unwrap();
        let s = r.standing(7, 10_000, 11_500);
        assert_eq!((s.applying, s.lagging, s.applied), (0, 0, 1), "{s:?}");
    }

    #[test]
    fn a_proxy_that_polls_only_a_peer_counts_with_its_latest_sighting() {
        let r = small();
        // It polled us long ago, at revision 3; a peer saw it just now at 7.
        r.record("edge-1", 3, 90_000).unwrap();
        r.absorb(
            "http://peer",
            vec![seen("edge-1", 7, 99_000), seen("edge-2", 7, 99_500)],
        );
        let s = r.standing(7, 95_000, 100_000);
        assert_eq!((s.applied, s.live), (2, 2), "{s:?}");
        assert_eq!(s.lagging, 0);
        // Ours is newer: ours wins.
        r.record("edge-2", 6, 100_000).unwrap();
        assert_eq!(r.standing(7, 95_000, 100_000).lagging_named, ["edge-2"]);
        // Only ours are served to peers.
        assert_eq!(r.local(100_000).len(), 2);
        // A peer that left the fleet is forgotten.
        r.keep_peers(&[]);
        assert_eq!(r.standing(7, 95_000, 100_000).applied, 0);
    }

    #[test]
    fn many_behind_are_counted_and_the_first_by_id_named() {
        let r = Registry::new(Limits::default());
        for i in (0..500).rev() {
            r.record(&format!("p{i:03}"), 1, 1000).unwrap();
        }
        let s = r.standing(2, 1000, 1000);
        assert_eq!((s.applying, s.applied, s.live), (500, 0, 500));
        let s = r.standing(2, 1000, 5000);
        assert_eq!((s.lagging, s.applied, s.live), (500, 0, 500));
        let first: Vec<String> = (0..NAMED).map(|i| format!("p{i:03}")).collect();
        assert_eq!(s.lagging_named, first);
        assert_eq!(
            some_of(&s.lagging_named, s.lagging),
            format!("{} and 480 more", first.join(", "))
        );
    }

    #[test]
    fn a_peer_cannot_grow_the_registry_past_its_limits() {
        let r = small();
        let flood: Vec<_> = (0..1000)
            .map(|i| seen(&format!("p{i}"), 1, 50_000 + i))
            .chain([seen(&"x".repeat(10_000), 1, 99_999), seen("", 1, 99_999)])
            .collect();
        r.absorb("http://peer", flood.clone());
        r.absorb("http://other", flood);
        let all = r.all(100_000);
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|p| p.id.len() <= 256 && !p.id.is_empty()));
    }
}
