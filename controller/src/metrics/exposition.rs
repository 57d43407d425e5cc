//! Prometheus text exposition (Envoy's `/stats/prometheus`): the filter's
//! `dimmer_requests` and `dimmer_latency_ms_bucket`, by rollout (and their
//! `dimmer_shadow_` twins for mirrored requests); and
//! Envoy's own per-cluster `envoy_cluster_upstream_rq_xx` and
//! `envoy_cluster_upstream_rq_time_bucket`, by cluster.

use std::collections::BTreeMap;

use dimmer_decide::counts::{Batch, Snapshot, INF_BOUND};

pub fn parse_le(text: &str) -> Result<f64, std::num::ParseFloatError> {
    match text {
        "+Inf" | "Inf" => Ok(INF_BOUND),
        other => other.parse(),
    }
}

/// `name{k="v",…} value` as its parts.
fn sample(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    let (name, rest) = line.split_once('{')?;
    let (labels, value) = rest.rsplit_once('}')?;
    let value = value.trim().parse::<f64>().ok()?;
    let labels = labels
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k, v.trim_matches('"')))
        })
        .collect();
    Some((name, labels, value))
}

/// Every cluster's counts in `text`, as a snapshot whose versions are the
/// clusters: status classes from `upstream_rq_xx`, latency from
/// `upstream_rq_time`.
pub fn parse_clusters(text: &str) -> Snapshot {
    let mut snap = Snapshot::default();
    for line in text
        .lines()
        .filter(|l| l.starts_with("envoy_cluster_upstream_rq_"))
    {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        let Some(cluster) = labels.get("envoy_cluster_name") else {
            continue;
        };
        match name {
            "envoy_cluster_upstream_rq_xx" => {
                if let Some(class) = labels.get("envoy_response_code_class") {
                    let counts = snap.counts_mut("", cluster);
                    *counts.by_class.entry(format!("{class}xx")).or_default() += value;
                }
            }
            "envoy_cluster_upstream_rq_time_bucket" => {
                if let Some(Ok(le)) = labels.get("le").map(|l| parse_le(l)) {
                    snap.counts_mut("", cluster).latency.push((le, value));
                }
            }
            // Envoy creates `upstream_rq_<class>xx` and the time histogram
            // at a cluster's first response, but `upstream_rq_total` with
            // the cluster: seeing it, the cluster is there at zero, so the
            // step's baseline is taken before its first requests, not
            // after them (which would lose them from the step).
            "envoy_cluster_upstream_rq_total" => {
                snap.counts_mut("", cluster);
            }
            _ => {}
        }
    }
    snap.sort_buckets();
    snap
}

/// Every rollout's counts in `text`.
pub fn parse_all(text: &str) -> Batch {
    let mut batch = Batch::new();
    for line in text.lines().filter(|l| l.starts_with("dimmer_")) {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        let (Some(rollout), Some(version)) = (labels.get("rollout"), labels.get("version")) else {
            continue;
        };
        // Mirrored requests are kept under a key of their own.
        let (name, key) = match name.strip_prefix("dimmer_shadow_") {
            Some(rest) => (rest, dimmer_decide::counts::shadow_key(version)),
            None => (
                name.strip_prefix("dimmer_").unwrap_or(name),
                (*version).to_owned(),
            ),
        };
        let counts = batch
            .entry((*rollout).to_owned())
            .or_default()
            .counts_mut("", &key);
        match name {
            "requests" => {
                if let Some(class) = labels.get("class") {
                    *counts.by_class.entry((*class).to_owned()).or_default() += value;
                }
            }
            "latency_ms_bucket" => {
                if let Some(Ok(le)) = labels.get("le").map(|l| parse_le(l)) {
                    counts.latency.push((le, value));
                }
            }
            "mix" => {
                if let (Some(d), Some(v)) = (labels.get("dimension"), labels.get("value")) {
                    counts.add_mix(d, v, value);
                }
            }
            _ => {}
        }
    }
    for snap in batch.values_mut() {
        snap.sort_buckets();
    }
    batch
}

/// One rollout's counts in `text`.
pub fn parse_exposition(text: &str, rollout: &str) -> Snapshot {
    parse_all(text).remove(rollout).unwrap_or_default()
}
