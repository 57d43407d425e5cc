//! One Envoy's admin endpoint (`http://127.0.0.1:9901`): the single-proxy
//! setup. One GET of `/stats/prometheus` answers for every rollout.

use std::time::Duration;

use super::exposition::{parse_all, parse_clusters};
use super::http::{client, get_text, Http};
use dimmer_decide::counts::{Batch, Snapshot};

use super::source::{BoxFuture, MetricsError, MetricsSource};

pub struct EnvoyAdmin {
    base: String,
    http: Http,
}

impl EnvoyAdmin {
    pub fn new(base: &str, timeout: Duration) -> EnvoyAdmin {
        EnvoyAdmin {
            base: base.trim_end_matches('/').to_owned(),
            http: client(timeout),
        }
    }
}

impl MetricsSource for EnvoyAdmin {
    fn counts<'a>(&'a self, rollouts: &'a [String]) -> BoxFuture<'a, Result<Batch, MetricsError>> {
        Box::pin(async move {
            let url = format!("{}/stats/prometheus", self.base);
            let text = get_text(&self.http, &url, &[("filter", "dimmer")]).await?;
            let mut all = parse_all(&text);
            Ok(rollouts
                .iter()
                .map(|r| (r.clone(), all.remove(r).unwrap_or_default()))
                .collect())
        })
    }

    fn cluster_counts<'a>(
        &'a self,
        clusters: &'a [String],
    ) -> BoxFuture<'a, Result<Snapshot, MetricsError>> {
        Box::pin(async move {
            let url = format!("{}/stats/prometheus", self.base);
            let filter = r"^cluster\..*\.upstream_rq_([1-5]xx|time|total)$";
            let text = get_text(&self.http, &url, &[("filter", filter)]).await?;
            let mut snap = parse_clusters(&text);
            for versions in snap.sources.values_mut() {
                versions.retain(|c, _| clusters.contains(c));
            }
            Ok(snap)
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), MetricsError>> {
        Box::pin(async move {
            get_text(&self.http, &format!("{}/ready", self.base), &[])
                .await
                .map(|_| ())
        })
    }

    fn describe(&self) -> String {
        format!("envoy admin {}", self.base)
    }
}
