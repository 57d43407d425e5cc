//! Per-version counts of one rollout, read from the filter's own stats
//! (never Envoy's cluster stats, so they cover exactly the cohorts the filter
//! assigned): from one Envoy's admin, or from Prometheus for every proxy,
//! behind [`MetricsSource`].

pub mod envoy_admin;
pub mod exposition;
pub mod fake;
mod http;
pub mod prometheus;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

pub use exposition::parse_exposition;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot reach {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("cannot read the answer of {url}: {reason}")]
    Malformed { url: String, reason: String },
    #[error("{what} did not answer within {secs} s")]
    TimedOut { what: String, secs: u64 },
}

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

    pub(crate) fn sort_buckets(&mut self) {
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

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where counts come from: one module per back-end, and a fake for tests.
/// The runner calls it without holding any lock, under a timeout of its own.
pub trait MetricsSource: Send + Sync {
    /// The cumulative counts of each of `rollouts`, by version, in one call.
    /// A rollout with no counts yet is absent or empty, not an error.
    fn counts<'a>(&'a self, rollouts: &'a [String]) -> BoxFuture<'a, Result<Batch, MetricsError>>;
    /// Envoy's own counts of `clusters` (`upstream_rq_<class>xx` and the
    /// `upstream_rq_time` histogram), for rollouts counted by Envoy: a
    /// snapshot whose "versions" are the cluster names.
    fn cluster_counts<'a>(
        &'a self,
        clusters: &'a [String],
    ) -> BoxFuture<'a, Result<Snapshot, MetricsError>>;
    /// Whether the back-end answers at all.
    fn health(&self) -> BoxFuture<'_, Result<(), MetricsError>>;
    /// For logs and status: `envoy admin http://…`.
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE dimmer_requests counter
dimmer_requests{rollout="checkout",version="v1",class="2xx"} 990
dimmer_requests{rollout="checkout",version="v1",class="5xx"} 10
dimmer_requests{rollout="checkout",version="v2",class="2xx"} 95
dimmer_requests{rollout="checkout",version="v2",class="reset"} 5
dimmer_requests{rollout="search",version="v2",class="5xx"} 1000
# TYPE dimmer_latency_ms histogram
dimmer_latency_ms_bucket{rollout="checkout",version="v2",le="10"} 50
dimmer_latency_ms_bucket{rollout="checkout",version="v2",le="100"} 90
dimmer_latency_ms_bucket{rollout="checkout",version="v2",le="+Inf"} 100
# TYPE dimmer_shadow_requests counter
dimmer_shadow_requests{rollout="checkout",version="v2",class="2xx"} 7
dimmer_shadow_requests{rollout="checkout",version="v2",class="5xx"} 3
# TYPE dimmer_shadow_latency_ms histogram
dimmer_shadow_latency_ms_bucket{rollout="checkout",version="v2",le="10"} 9
dimmer_shadow_latency_ms_bucket{rollout="checkout",version="v2",le="+Inf"} 10
"#;

    #[test]
    fn reads_one_rollout() {
        let s = parse_exposition(TEXT, "checkout");
        assert_eq!(s.version("v1").requests(), 1000.0);
        assert_eq!(s.version("v1").error_rate(), Some(0.01));
        assert_eq!(s.version("v2").errors(), 5.0);
        assert_eq!(s.version("v2").latency.len(), 3);
        assert_eq!(s.version("v2").slower_than(100.0), 10.0);
        assert_eq!(s.version("v2").slower_than(50.0), 50.0);
        let p50 = s.version("v2").latency_quantile(0.5).unwrap();
        assert!((p50 - 10.0).abs() < 1e-9, "{p50}");
        let p70 = s.version("v2").latency_quantile(0.7).unwrap();
        assert!((p70 - 55.0).abs() < 1e-9, "{p70}");
        // Mirrored requests are apart from the users' requests of v2.
        assert_eq!(s.version("v2").requests(), 100.0);
        let shadow = s.version(&shadow_key("v2"));
        assert_eq!((shadow.requests(), shadow.errors()), (10.0, 3.0));
        assert_eq!(shadow.slower_than(10.0), 1.0);
    }

    #[test]
    fn envoys_cluster_stats_become_a_rollouts_versions() {
        let text = r#"# TYPE envoy_cluster_upstream_rq_xx counter
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="app-v1"} 900
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="app-v1"} 9
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="app-v2"} 80
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="app-v2"} 20
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="dimmer-controller"} 50
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="app-v2",le="10"} 70
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="app-v2",le="+Inf"} 100
"#;
        let clusters = exposition::parse_clusters(text);
        let versions = [
            ("v1".to_string(), "app-v1".to_string()),
            ("v2".into(), "app-v2".into()),
        ]
        .into();
        let s = Snapshot::of_clusters(&clusters, &versions);
        assert_eq!(s.version("v1").requests(), 909.0);
        assert_eq!(s.version("v2").error_rate(), Some(0.2));
        assert_eq!(s.version("v2").slower_than(10.0), 30.0);
        assert_eq!(s.sources[""].len(), 2, "only the rollout's clusters");
    }

    #[test]
    fn snapshots_survive_json_with_their_inf_bucket() {
        let s = parse_exposition(TEXT, "checkout");
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back.version("v2").latency.last().map(|b| b.0),
            Some(INF_BOUND)
        );
    }

    #[test]
    fn deltas_survive_counter_resets() {
        let before = parse_exposition(TEXT, "checkout");
        let mut after = before.clone();
        after
            .counts_mut("", "v1")
            .by_class
            .insert("2xx".into(), 1090.0);
        // An Envoy restart: v2 counts start again from zero.
        after
            .counts_mut("", "v2")
            .by_class
            .insert("2xx".into(), 7.0);
        let d = after.since(&before);
        assert_eq!(d.version("v1").by_class["2xx"], 100.0);
        assert_eq!(d.version("v1").by_class["5xx"], 0.0);
        assert_eq!(d.version("v2").by_class["2xx"], 7.0);
    }

    #[test]
    fn one_proxy_restarting_does_not_make_the_others_old_counts_new() {
        let ok = |n: f64| {
            let mut c = VersionCounts::default();
            c.by_class.insert("2xx".into(), n);
            c.latency = vec![(100.0, n), (INF_BOUND, n)];
            c
        };
        let mut before = Snapshot::default();
        *before.counts_mut("edge-a", "v2") = ok(1000.0);
        *before.counts_mut("edge-b", "v2") = ok(1000.0);
        let mut after = Snapshot::default();
        *after.counts_mut("edge-a", "v2") = ok(1010.0);
        // edge-b restarted: its counters start again.
        *after.counts_mut("edge-b", "v2") = ok(5.0);
        let d = after.since(&before).version("v2");
        assert_eq!(d.requests(), 15.0);
        assert_eq!(d.latency, vec![(100.0, 15.0), (INF_BOUND, 15.0)]);
        // Summed first, the restart would have counted edge-a's old 1000 again.
        assert_eq!(after.version("v2").requests(), 1015.0);
        assert!(!after.is_empty());
        assert!(Snapshot::default().is_empty());
    }
}
