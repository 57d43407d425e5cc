//! Per-version counts of one rollout, read from the filter's own stats
//! (never Envoy's cluster stats, so they cover exactly the cohorts the filter
//! assigned): from one Envoy's admin, or from Prometheus for every proxy.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot reach {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("cannot read the answer of {url}: {reason}")]
    Malformed { url: String, reason: String },
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

/// Counts per version of one rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub versions: BTreeMap<String, VersionCounts>,
}

impl Snapshot {
    pub fn version(&self, name: &str) -> VersionCounts {
        self.versions.get(name).cloned().unwrap_or_default()
    }

    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            versions: self
                .versions
                .iter()
                .map(|(k, v)| (k.clone(), v.since(&earlier.version(k))))
                .collect(),
        }
    }
}

/// Where counts come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// One Envoy's admin endpoint (`http://127.0.0.1:9901`).
    EnvoyAdmin(String),
    /// A Prometheus server that scrapes every proxy.
    Prometheus(String),
}

impl Source {
    pub async fn snapshot(
        &self,
        http: &reqwest::Client,
        rollout: &str,
    ) -> Result<Snapshot, MetricsError> {
        match self {
            Source::EnvoyAdmin(base) => {
                let url = format!("{}/stats/prometheus", base.trim_end_matches('/'));
                let text = get_text(http, &url, &[("filter", "dimmer")]).await?;
                Ok(parse_exposition(&text, rollout))
            }
            Source::Prometheus(base) => {
                let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
                let sel = format!("{{rollout=\"{rollout}\"}}");
                let req = format!("sum by (version, class) (dimmer_requests{sel})");
                let lat = format!("sum by (version, le) (dimmer_latency_ms_bucket{sel})");
                let mut snap = Snapshot::default();
                for row in prom_query(http, &url, &req).await? {
                    let (Some(v), Some(c)) = (row.label("version"), row.label("class")) else {
                        continue;
                    };
                    let counts = snap.versions.entry(v.to_owned()).or_default();
                    counts.by_class.insert(c.to_owned(), row.value);
                }
                for row in prom_query(http, &url, &lat).await? {
                    let (Some(v), Some(le)) = (row.label("version"), row.label("le")) else {
                        continue;
                    };
                    let Ok(le) = parse_le(le) else { continue };
                    snap.versions
                        .entry(v.to_owned())
                        .or_default()
                        .latency
                        .push((le, row.value));
                }
                for counts in snap.versions.values_mut() {
                    counts.latency.sort_by(|a, b| a.0.total_cmp(&b.0));
                }
                Ok(snap)
            }
        }
    }
}

async fn get_text(
    http: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
) -> Result<String, MetricsError> {
    let resp = http
        .get(url)
        .query(query)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|source| MetricsError::Unreachable {
            url: url.to_owned(),
            source,
        })?;
    if !resp.status().is_success() {
        return Err(MetricsError::Status {
            url: url.to_owned(),
            status: resp.status().as_u16(),
        });
    }
    resp.text().await.map_err(|e| MetricsError::Malformed {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

struct PromRow {
    labels: BTreeMap<String, String>,
    value: f64,
}

impl PromRow {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

async fn prom_query(
    http: &reqwest::Client,
    url: &str,
    query: &str,
) -> Result<Vec<PromRow>, MetricsError> {
    let text = get_text(http, url, &[("query", query)]).await?;
    let malformed = |reason: &str| MetricsError::Malformed {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let body: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| malformed(&e.to_string()))?;
    if body["status"] != "success" {
        return Err(malformed(&format!("status {}", body["status"])));
    }
    let rows = body["data"]["result"]
        .as_array()
        .ok_or_else(|| malformed("no data.result"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let labels = r["metric"]
                .as_object()?
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect();
            let value = r["value"].get(1)?.as_str()?.parse().ok()?;
            Some(PromRow { labels, value })
        })
        .collect())
}

fn parse_le(text: &str) -> Result<f64, std::num::ParseFloatError> {
    match text {
        "+Inf" | "Inf" => Ok(INF_BOUND),
        other => other.parse(),
    }
}

/// Reads `dimmer_requests` and `dimmer_latency_ms_bucket` of `rollout` from
/// Prometheus text exposition (Envoy's `/stats/prometheus`).
pub fn parse_exposition(text: &str, rollout: &str) -> Snapshot {
    let mut snap = Snapshot::default();
    for line in text.lines().filter(|l| l.starts_with("dimmer_")) {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let labels: BTreeMap<&str, &str> = labels
            .split(',')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k, v.trim_matches('"')))
            })
            .collect();
        if labels.get("rollout") != Some(&rollout) {
            continue;
        }
        let Some(version) = labels.get("version") else {
            continue;
        };
        let counts = snap.versions.entry((*version).to_owned()).or_default();
        match name {
            "dimmer_requests" => {
                if let Some(class) = labels.get("class") {
                    *counts.by_class.entry((*class).to_owned()).or_default() += value;
                }
            }
            "dimmer_latency_ms_bucket" => {
                if let Some(Ok(le)) = labels.get("le").map(|l| parse_le(l)) {
                    counts.latency.push((le, value));
                }
            }
            _ => {}
        }
    }
    for counts in snap.versions.values_mut() {
        counts.latency.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    snap
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
            .versions
            .get_mut("v1")
            .unwrap()
            .by_class
            .insert("2xx".into(), 1090.0);
        // An Envoy restart: v2 counts start again from zero.
        after
            .versions
            .get_mut("v2")
            .unwrap()
            .by_class
            .insert("2xx".into(), 7.0);
        let d = after.since(&before);
        assert_eq!(d.version("v1").by_class["2xx"], 100.0);
        assert_eq!(d.version("v1").by_class["5xx"], 0.0);
        assert_eq!(d.version("v2").by_class["2xx"], 7.0);
    }
}
