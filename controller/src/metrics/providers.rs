//! Where the team's own metrics (`analysis.metrics`) are read: Prometheus
//! (PromQL instant queries) and any HTTP endpoint answering JSON (a URL
//! template and a JSONPath, like Argo Rollouts' web metric), behind
//! [`Query`]. [`read`] reads every metric of a rollout at once, each query
//! under a timeout of its own, so a provider that hangs costs one timeout
//! and makes that metric hold, never the others or the controller.

use std::time::Duration;

use futures_util::future::join_all;

use super::http::hung;
use super::source::BoxFuture;
use dimmer_decide::analysis::team_metrics::{Reading, Value};
use dimmer_decide::spec::metric::{render, MetricKind, Provider};
use dimmer_decide::spec::RolloutSpec;

/// The largest answer read from a provider.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// One number from a provider, or why not, in words that name the provider.
pub trait Query: Send + Sync {
    fn value<'a>(
        &'a self,
        provider: &'a Provider,
        query: &'a str,
    ) -> BoxFuture<'a, Result<f64, String>>;
}

/// The real providers, over HTTP.
pub struct HttpQuery {
    http: reqwest::Client,
    /// Each query's own time limit, to say a hang apart from a refusal.
    timeout: Duration,
    /// `--prometheus`: where a metric with no `address` is read.
    default_prometheus: Option<String>,
}

impl HttpQuery {
    pub fn new(default_prometheus: Option<String>, timeout: Duration) -> HttpQuery {
        HttpQuery {
            http: crate::tls::client_builder()
                .connect_timeout(Duration::from_secs(1).min(timeout))
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            timeout,
            default_prometheus: default_prometheus.map(|a| a.trim_end_matches('/').to_owned()),
        }
    }

    async fn get(&self, req: reqwest::RequestBuilder, what: &str) -> Result<String, String> {
        // A provider that accepts and does not answer is not one that
        // cannot be reached: the person fixing it looks in another place.
        let within = humantime::format_duration(self.timeout);
        let mut resp = req.send().await.map_err(|e| {
            if hung(&e) {
                format!("{what} did not answer within {within}")
            } else {
                format!("cannot reach {what}: {e}")
            }
        })?;
        if !resp.status().is_success() {
            return Err(format!("{what} answered {}", resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            if hung(&e) {
                format!("{what} did not answer within {within}")
            } else {
                format!("cannot read the answer of {what}: {e}")
            }
        })? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!(
                    "{what} answered more than {MAX_ANSWER_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| format!("{what} answered something that is not UTF-8"))
    }
}

impl Query for HttpQuery {
    fn value<'a>(
        &'a self,
        provider: &'a Provider,
        query: &'a str,
    ) -> BoxFuture<'a, Result<f64, String>> {
        Box::pin(async move {
            match (&provider.prometheus, &provider.http) {
                (_, Some(http)) => {
                    let mut req = self.http.get(query);
                    for (k, v) in &http.headers {
                        req = req.header(k, v);
                    }
                    let text = self.get(req, query).await?;
                    json_value(&text, &http.json_path).map_err(|e| format!("{query}: {e}"))
                }
                (prom, None) => {
                    let base = prom
                        .as_ref()
                        .and_then(|p| p.address.as_deref())
                        .map(|a| a.trim_end_matches('/'))
                        .or(self.default_prometheus.as_deref())
                        .ok_or("no Prometheus: the metric names no address and the controller runs without --prometheus")?;
                    let url = format!("{base}/api/v1/query");
                    let what = format!("prometheus {base}");
                    let text = self
                        .get(self.http.get(&url).query(&[("query", query)]), &what)
                        .await?;
                    prometheus_value(&text).map_err(|e| format!("{what}: {e}"))
                }
            }
        })
    }
}

/// The one number an instant query answered: a scalar, or a vector of one
/// sample. Several samples are refused (the query should aggregate them);
/// none is "no data", never zero.
pub fn prometheus_value(text: &str) -> Result<f64, String> {
    let body: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if body["status"] != "success" {
        return Err(format!(
            "the query failed: {}",
            body["error"].as_str().unwrap_or("no reason given")
        ));
    }
    let data = &body["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let rows = data["result"].as_array().ok_or("no data.result")?;
            match rows.len() {
                0 => return Err("the query returned no series".into()),
                1 => &rows[0]["value"],
                n => {
                    return Err(format!(
                        "the query returned {n} series; aggregate them into one (sum(...))"
                    ))
                }
            }
        }
        other => return Err(format!("the query returned a {other:?}, not a number")),
    };
    let v: f64 = sample[1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("the sample is not a number")?;
    finite(v)
}

fn finite(v: f64) -> Result<f64, String> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("the value is {v}, not a finite number"))
    }
}

/// The number at `path` in a JSON answer: exactly one node, a number or a
/// string holding one.
pub fn json_value(text: &str, path: &str) -> Result<f64, String> {
    let body: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let path = serde_json_path::JsonPath::parse(path).map_err(|e| format!("json_path: {e}"))?;
    let nodes = path.query(&body).all();
    let node = match nodes.as_slice() {
        [] => return Err(format!("nothing at {path}")),
        [one] => *one,
        many => {
            return Err(format!(
                "{} values at {path}; it must select one",
                many.len()
            ))
        }
    };
    let v = match node {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("the value at {path} is not a number: {node}"))?;
    finite(v)
}

async fn one(
    q: &dyn Query,
    provider: &Provider,
    query: String,
    timeout: Duration,
) -> Result<f64, String> {
    match tokio::time::timeout(timeout, q.value(provider, &query)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{} did not answer within {}",
            provider.name(),
            humantime::format_duration(timeout)
        )),
    }
}

/// Every metric of `spec`, read at once: a comparison's four queries (its
/// two for the canary and for the stable), a gauge's one. Each query has
/// `timeout`; a metric any of whose queries fails holds that metric alone.
pub async fn read(q: &dyn Query, spec: &RolloutSpec, timeout: Duration, now_ms: u64) -> Reading {
    let fill =
        |t: &str, version: &str| render(t, spec.routed_name(), version, &spec.canary, &spec.stable);
    let per_metric = spec.analysis.metrics.iter().map(|m| {
        let fill = &fill;
        let one = |provider, query| one(q, provider, query, timeout);
        async move {
            let value = match (m.kind, m.pair()) {
                (MetricKind::Gauge, _) => {
                    let query = fill(m.query.as_deref().unwrap_or_default(), &spec.canary);
                    one(&m.provider, query).await.map(Value::Gauge)
                }
                (_, Some((num, den))) => {
                    let qs = [
                        fill(num, &spec.canary),
                        fill(den, &spec.canary),
                        fill(num, &spec.stable),
                        fill(den, &spec.stable),
                    ];
                    let got = join_all(qs.into_iter().map(|q| one(&m.provider, q))).await;
                    let mut v = [0.0; 4];
                    let mut err = None;
                    for (slot, (r, which)) in v.iter_mut().zip(got.into_iter().zip([
                        "the canary's numerator",
                        "the canary's denominator",
                        "the stable's numerator",
                        "the stable's denominator",
                    ])) {
                        match r {
                            Ok(x) => *slot = x,
                            Err(e) => {
                                err.get_or_insert(format!("{which}: {e}"));
                            }
                        }
                    }
                    match err {
                        Some(e) => Err(e),
                        None => Ok(Value::Pair {
                            canary: [v[0], v[1]],
                            stable: [v[2], v[3]],
                        }),
                    }
                }
                (_, None) => Err("the spec has no queries for it".into()),
            };
            (m.name.clone(), value)
        }
    });
    Reading {
        at_ms: now_ms,
        values: join_all(per_metric).await.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_answers_become_one_number_or_a_reason() {
        let vec1 = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"42.5"]}]}}"#;
        assert_eq!(prometheus_value(vec1), Ok(42.5));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"7"]}}"#;
        assert_eq!(prometheus_value(scalar), Ok(7.0));
        let none = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(
            prometheus_value(none).unwrap_err(),
            "the query returned no series"
        );
        let two = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]},{"metric":{},"value":[1,"2"]}]}}"#;
        assert!(prometheus_value(two).unwrap_err().contains("2 series"));
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert!(prometheus_value(nan).unwrap_err().contains("NaN"));
        let bad = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert!(prometheus_value(bad).unwrap_err().contains("parse error"));
        assert!(prometheus_value("<html>").is_err());
    }

    #[test]
    fn json_answers_take_exactly_one_number() {
        let body = r#"{"data":{"orders":12,"value":"3.5","all":[1,2]}}"#;
        assert_eq!(json_value(body, "$.data.orders"), Ok(12.0));
        assert_eq!(json_value(body, "$.data.value"), Ok(3.5));
        assert!(json_value(body, "$.data.missing")
            .unwrap_err()
            .starts_with("nothing at"));
        assert!(json_value(body, "$.data.all[*]")
            .unwrap_err()
            .contains("2 values"));
        assert!(json_value(body, "$.data")
            .unwrap_err()
            .contains("not a number"));
        assert!(json_value("nope", "$.a").is_err());
    }

    struct Fake;

    impl Query for Fake {
        fn value<'a>(
            &'a self,
            _: &'a Provider,
            query: &'a str,
        ) -> BoxFuture<'a, Result<f64, String>> {
            Box::pin(async move {
                match query {
                    q if q.contains("hang") => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(0.0)
                    }
                    q if q.contains("v2") => Ok(2.0),
                    q if q.contains("v1") => Ok(1.0),
                    _ => Err("no such series".into()),
                }
            })
        }
    }

    #[tokio::test]
    async fn a_hanging_query_holds_its_metric_alone_within_the_timeout() {
        let spec = RolloutSpec::from_yaml(
            "name: shop\nstable: v1\ncanary: v2\nsteps: [{percent: 10}]\nanalysis:\n  metrics:\n\
             \x20 - {name: conversion, provider: {prometheus: {}}, kind: ratio, direction: higher, tolerance: {relative_percent: 5}, successes: 'o_{{version}}', trials: 't_{{version}}'}\n\
             \x20 - {name: slow, provider: {prometheus: {}}, kind: gauge, max: 1, query: 'hang {{canary}}'}\n",
        )
        .unwrap();
        let started = std::time::Instant::now();
        let r = read(&Fake, &spec, Duration::from_millis(200), 5).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(r.at_ms, 5);
        assert_eq!(
            r.values["conversion"],
            Ok(Value::Pair {
                canary: [2.0, 2.0],
                stable: [1.0, 1.0]
            })
        );
        assert!(r.values["slow"]
            .as_ref()
            .unwrap_err()
            .contains("did not answer within 200ms"));
    }
}
