//! One Envoy's admin endpoint (`http://127.0.0.1:9901`): the single-proxy
//! setup. One GET of `/stats/prometheus` answers for every rollout.

use std::time::Duration;

use super::exposition::parse_all;
use super::http::{client, get_text};
use super::{Batch, BoxFuture, MetricsError, MetricsSource};

pub struct EnvoyAdmin {
    base: String,
    http: reqwest::Client,
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
