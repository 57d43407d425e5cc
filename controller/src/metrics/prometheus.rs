//! A Prometheus server that scrapes every proxy: the multi-proxy setup. Two
//! queries answer for every rollout, kept apart per proxy (`instance`) so a
//! proxy's restart resets its counts alone:
//! `sum by (rollout, version, class, instance) (dimmer_requests)` and
//! `sum by (rollout, version, le, instance) (dimmer_latency_ms_bucket)`, and
//! a third for the cohort dimensions' `dimmer_mix`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::exposition::parse_le;
use super::http::{client, get_text, Http};
use dimmer_decide::counts::{Batch, Snapshot};

use super::source::{BoxFuture, MetricsError, MetricsSource};

pub struct Prometheus {
    base: String,
    http: Http,
}

impl Prometheus {
    pub fn new(base: &str, timeout: Duration) -> Prometheus {
        Prometheus {
            base: base.trim_end_matches('/').to_owned(),
            http: client(timeout),
        }
    }

    async fn query(&self, query: &str) -> Result<Vec<PromRow>, MetricsError> {
        let url = format!("{}/api/v1/query", self.base);
        let text = get_text(&self.http, &url, &[("query", query)]).await?;
        parse_vector(&url, &text)
    }
}

/// `dimmer_<metric>`, with `dimmer_shadow_<metric>` beside it under the
/// shadow key of its version (`shadow:v2`), in one query.
fn with_shadow(sum_by: &str, metric: &str) -> String {
    format!(
        "{sum_by} (dimmer_{metric} or label_replace(dimmer_shadow_{metric}, \"version\", \"shadow:$1\", \"version\", \"(.+)\"))"
    )
}

impl MetricsSource for Prometheus {
    fn counts<'a>(&'a self, rollouts: &'a [String]) -> BoxFuture<'a, Result<Batch, MetricsError>> {
        Box::pin(async move {
            let req = self
                .query(&with_shadow(
                    "sum by (rollout, version, class, instance)",
                    "requests",
                ))
                .await?;
            let lat = self
                .query(&with_shadow(
                    "sum by (rollout, version, le, instance)",
                    "latency_ms_bucket",
                ))
                .await?;
            let mix = self
                .query("sum by (rollout, version, dimension, value, instance) (dimmer_mix)")
                .await?;
            let mut batch: Batch = rollouts
                .iter()
                .map(|r| (r.clone(), Default::default()))
                .collect();
            for row in mix {
                let (Some(r), Some(v), Some(d), Some(val)) = (
                    row.label("rollout"),
                    row.label("version"),
                    row.label("dimension"),
                    row.label("value"),
                ) else {
                    continue;
                };
                if let Some(snap) = batch.get_mut(r) {
                    let src = row.label("instance").unwrap_or_default();
                    snap.counts_mut(src, v).add_mix(d, val, row.value);
                }
            }
            for row in req {
                let (Some(r), Some(v), Some(c)) = (
                    row.label("rollout"),
                    row.label("version"),
                    row.label("class"),
                ) else {
                    continue;
                };
                if let Some(snap) = batch.get_mut(r) {
                    let src = row.label("instance").unwrap_or_default();
                    *snap
                        .counts_mut(src, v)
                        .by_class
                        .entry(c.to_owned())
                        .or_default() += row.value;
                }
            }
            for row in lat {
                let (Some(r), Some(v), Some(le)) =
                    (row.label("rollout"), row.label("version"), row.label("le"))
                else {
                    continue;
                };
                let Ok(le) = parse_le(le) else { continue };
                if let Some(snap) = batch.get_mut(r) {
                    let src = row.label("instance").unwrap_or_default();
                    snap.counts_mut(src, v).latency.push((le, row.value));
                }
            }
            for snap in batch.values_mut() {
                snap.sort_buckets();
            }
            Ok(batch)
        })
    }

    fn cluster_counts<'a>(
        &'a self,
        clusters: &'a [String],
    ) -> BoxFuture<'a, Result<Snapshot, MetricsError>> {
        Box::pin(async move {
            let req = self
                // `or` the clusters' request totals, which exist from the
                // cluster's start (the classes only from its first
                // response): a cluster at zero is a baseline.
                .query("sum by (envoy_cluster_name, envoy_response_code_class, instance) (envoy_cluster_upstream_rq_xx) or sum by (envoy_cluster_name, instance) (envoy_cluster_upstream_rq_total)")
                .await?;
            let lat = self
                .query("sum by (envoy_cluster_name, le, instance) (envoy_cluster_upstream_rq_time_bucket)")
                .await?;
            let mut snap = Snapshot::default();
            for row in req {
                let Some(c) = row.label("envoy_cluster_name") else {
                    continue;
                };
                if !clusters.iter().any(|k| k == c) {
                    continue;
                }
                let counts = snap.counts_mut(row.label("instance").unwrap_or_default(), c);
                // A total's row only says the cluster is there.
                if let Some(class) = row.label("envoy_response_code_class") {
                    *counts.by_class.entry(format!("{class}xx")).or_default() += row.value;
                }
            }
            for row in lat {
                let (Some(c), Some(le)) = (row.label("envoy_cluster_name"), row.label("le")) else {
                    continue;
                };
                let Ok(le) = parse_le(le) else { continue };
                if clusters.iter().any(|k| k == c) {
                    let src = row.label("instance").unwrap_or_default();
                    snap.counts_mut(src, c).latency.push((le, row.value));
                }
            }
            snap.sort_buckets();
            Ok(snap)
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), MetricsError>> {
        Box::pin(async move {
            get_text(&self.http, &format!("{}/-/ready", self.base), &[])
                .await
                .map(|_| ())
        })
    }

    fn describe(&self) -> String {
        format!("prometheus {}", self.base)
    }
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

/// An instant vector from `/api/v1/query`.
fn parse_vector(url: &str, text: &str) -> Result<Vec<PromRow>, MetricsError> {
    let malformed = |reason: &str| MetricsError::Malformed {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let body: serde_json::Value =
        serde_json::from_str(text).map_err(|e| malformed(&e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_instant_vector_and_refuses_errors() {
        let ok = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"rollout":"a","version":"v1","class":"2xx"},"value":[1,"12"]}]}}"#;
        let rows = parse_vector("u", ok).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].label("version"), Some("v1"));
        assert_eq!(rows[0].value, 12.0);
        assert!(parse_vector("u", r#"{"status":"error"}"#).is_err());
        assert!(parse_vector("u", "<html>").is_err());
    }
}
