//! Per-version counts as the analysis reads them: cumulative requests by
//! status class, a latency histogram and cohort mix, per source of counts.
//! The metrics sources (in the controller) fill them; everything here is
//! arithmetic on them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `+Inf` bucket's bound. JSON has no infinity, and the state is JSON.
pub const INF_BOUND: f64 = f64::MAX;

/// Cumulative counts of one version, as the stats report them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionCounts {
    /// Requests by status class (`2xx`, `5xx`, `reset`, ...).
    pub by_class: BTreeMap<String, f64>,
    /// Latency histogram: `(upper bound in ms, cumulative count)`, ascending,
    /// the last bound being `+Inf`, kept as [`INF_BOUND`] so it survives JSON.
    pub latency: Vec<(f64, f64)>,
    /// Requests by cohort dimension and value (`dimmer_mix`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mix: BTreeMap<String, BTreeMap<String, f64>>,
}

impl VersionCounts {
    pub fn requests(&self) -> f64 {
        self.by_class.values().sum()
    }

    /// Server errors and resets: what the user saw as a failure.
    pub fn errors(&self) -> f64 {
        self.by_class.get("5xx").copied().unwrap_or(0.0)
            + self.by_class.get("reset").copied().unwrap_or(0.0)
    }

    pub fn error_rate(&self) -> Option<f64> {
        let n = self.requests();
        (n > 0.0).then(|| self.errors() / n)
    }

    pub fn add_mix(&mut self, dimension: &str, value: &str, n: f64) {
        *self
            .mix
            .entry(dimension.to_owned())
            .or_default()
            .entry(value.to_owned())
            .or_default() += n;
    }

    /// Adds `other`'s counts: class by class, and bucket by bucket bound.
    pub fn add(&mut self, other: &VersionCounts) {
        for (k, v) in &other.by_class {
            *self.by_class.entry(k.clone()).or_default() += v;
        }
        for (d, values) in &other.mix {
            for (v, n) in values {
                self.add_mix(d, v, *n);
            }
        }
        for &(le, c) in &other.latency {
            match self.latency.iter_mut().find(|(l, _)| *l == le) {
                Some(b) => b.1 += c,
                None => self.latency.push((le, c)),
            }
        }
        self.latency.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    /// Counts since `earlier`. A counter that went down was reset (an Envoy
    /// restarted): its whole current value is new.
    pub fn since(&self, earlier: &VersionCounts) -> VersionCounts {
        let delta = |now: f64, then: Option<f64>| match then {
            Some(then) if now >= then => now - then,
            _ => now,
        };
        VersionCounts {
            by_class: self
                .by_class
                .iter()
                .map(|(k, &v)| (k.clone(), delta(v, earlier.by_class.get(k).copied())))
                .collect(),
            latency: self
                .latency
                .iter()
                .map(|&(le, v)| {
                    let then = earlier
                        .latency
                        .iter()
                        .find(|(l, _)| *l == le)
                        .map(|(_, c)| *c);
                    (le, delta(v, then))
                })
                .collect(),
            mix: self
                .mix
                .iter()
                .map(|(d, values)| {
                    let then = earlier.mix.get(d);
                    let deltas = values
                        .iter()
                        .map(|(v, &n)| (v.clone(), delta(n, then.and_then(|t| t.get(v).copied()))))
                        .collect();
                    (d.clone(), deltas)
                })
                .collect(),
        }
    }

    /// Requests slower than `bound_ms`, counted from the histogram bucket
    /// whose upper bound is the largest one at or below `bound_ms`.
    pub fn slower_than(&self, bound_ms: f64) -> f64 {
        let total = self.latency.last().map_or(0.0, |(_, c)| *c);
        let within = self
            .latency
            .iter()
            .filter(|(le, _)| *le <= bound_ms)
            .map(|(_, c)| *c)
            .fold(0.0, f64::max);
        (total - within).max(0.0)
    }

    /// The `q`-quantile (0..1) of latency in ms, interpolated inside its bucket.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let total = self.latency.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut prev = (0.0, 0.0);
        for &(le, c) in &self.latency {
            if c >= rank {
                if le >= INF_BOUND {
                    return Some(prev.0);
                }
                let in_bucket = c - prev.1;
                let frac = if in_bucket > 0.0 {
                    (rank - prev.1) / in_bucket
                } else {
                    1.0
                };
                return Some(prev.0 + (le - prev.0) * frac);
            }
            prev = (le, c);
        }
        Some(prev.0)
    }
}

/// Counts per version of one rollout, kept apart per source of counts (a
/// proxy, as Prometheus names it by `instance`; one unnamed source for one
/// Envoy's admin). Deltas are taken per source: one proxy restarting resets
/// its own counters only, and must not make the others' counts from before
/// a step look new.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub sources: BTreeMap<String, BTreeMap<String, VersionCounts>>,
}

impl Snapshot {
    /// One unnamed source with these versions.
    pub fn from_versions(versions: BTreeMap<String, VersionCounts>) -> Snapshot {
        Snapshot {
            sources: [(String::new(), versions)].into(),
        }
    }

    pub fn counts_mut(&mut self, source: &str, version: &str) -> &mut VersionCounts {
        self.sources
            .entry(source.to_owned())
            .or_default()
            .entry(version.to_owned())
            .or_default()
    }

    /// No series at all: nothing has reported this rollout yet.
    pub fn is_empty(&self) -> bool {
        self.sources.values().all(BTreeMap::is_empty)
    }

    /// A version's counts, summed over the sources.
    pub fn version(&self, name: &str) -> VersionCounts {
        let mut total = VersionCounts::default();
        for versions in self.sources.values() {
            if let Some(v) = versions.get(name) {
                total.add(v);
            }
        }
        total
    }

    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            sources: self
                .sources
                .iter()
                .map(|(src, versions)| {
                    let then = earlier.sources.get(src);
                    let deltas = versions
                        .iter()
                        .map(|(k, v)| {
                            let before = then.and_then(|t| t.get(k)).cloned().unwrap_or_default();
                            (k.clone(), v.since(&before))
                        })
                        .collect();
                    (src.clone(), deltas)
                })
                .collect(),
        }
    }

    /// The rollout's snapshot out of a snapshot of clusters: each version
    /// takes its cluster's counts, source by source.
    pub fn of_clusters(clusters: &Snapshot, versions: &BTreeMap<String, String>) -> Snapshot {
        Snapshot {
            sources: clusters
                .sources
                .iter()
                .map(|(src, by_cluster)| {
                    let mapped = versions
                        .iter()
                        .filter_map(|(v, c)| Some((v.clone(), by_cluster.get(c)?.clone())))
                        .collect();
                    (src.clone(), mapped)
                })
                .collect(),
        }
    }

    pub fn sort_buckets(&mut self) {
        for versions in self.sources.values_mut() {
            for counts in versions.values_mut() {
                counts.latency.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }
}

/// The snapshot's key for the requests Envoy mirrored to `version`: the
/// filter counts them apart (`dimmer_shadow_requests`), and `:` is not in
/// any version's name.
pub fn shadow_key(version: &str) -> String {
    format!("shadow:{version}")
}

/// Cumulative counts of several rollouts, by name.
pub type Batch = BTreeMap<String, Snapshot>;
