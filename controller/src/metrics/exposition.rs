//! Prometheus text exposition (Envoy's `/stats/prometheus`): the filter's
//! `dimmer_requests` and `dimmer_latency_ms_bucket`, by rollout.

use std::collections::BTreeMap;

use super::{Batch, Snapshot, INF_BOUND};

pub fn parse_le(text: &str) -> Result<f64, std::num::ParseFloatError> {
    match text {
        "+Inf" | "Inf" => Ok(INF_BOUND),
        other => other.parse(),
    }
}

/// Every rollout's counts in `text`.
pub fn parse_all(text: &str) -> Batch {
    let mut batch = Batch::new();
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
        let (Some(rollout), Some(version)) = (labels.get("rollout"), labels.get("version")) else {
            continue;
        };
        let counts = batch
            .entry((*rollout).to_owned())
            .or_default()
            .counts_mut("", version);
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
    for snap in batch.values_mut() {
        snap.sort_buckets();
    }
    batch
}

/// One rollout's counts in `text`.
pub fn parse_exposition(text: &str, rollout: &str) -> Snapshot {
    parse_all(text).remove(rollout).unwrap_or_default()
}
