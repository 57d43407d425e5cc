//! `analysis.metrics`: the team's own signals, read from a provider with a
//! query templated per version (docs/rollout-spec.md, "Your own metrics").

use serde::{Deserialize, Serialize};

use super::error::{in_range, invalid, SpecError};
use super::http_syntax::{is_header_name, is_header_value, is_http_url_with_host};

/// Metrics one rollout may name: each costs two queries a look.
pub const MAX_METRICS: usize = 16;
/// A query or URL template, before templating.
pub const MAX_QUERY_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricCheck {
    /// Named in reasons, status and history: `conversion`.
    pub name: String,
    pub provider: Provider,
    pub kind: MetricKind,
    /// `ratio`: the cumulative count of successes (orders completed)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successes: Option<String>,
    /// ...of trials (checkouts started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trials: Option<String>,
    /// `mean`: the cumulative sum of the values (order value)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum: Option<String>,
    /// ...and how many values were summed (orders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<String>,
    /// `gauge`: one value, compared with `max` or `min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// `ratio` and `mean`: which way is better.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// `ratio` and `mean`: the largest harm accepted. None: any significant
    /// harm aborts ("no significant negative delta").
    #[serde(default, skip_serializing_if = "Tolerance::is_zero")]
    pub tolerance: Tolerance,
    /// `ratio` and `mean`: trials (or values) each version needs at a step
    /// before it may step up; also the size of the batches the test compares.
    #[serde(default = "default_min_count")]
    pub min_count: u64,
    /// `gauge`: the limit, above which (`max`) or below which (`min`) it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// `gauge`: looks in a row beyond the limit before it aborts, so that
    /// one spike does not.
    #[serde(default = "default_consecutive")]
    pub consecutive: u32,
}

fn default_min_count() -> u64 {
    30
}

fn default_consecutive() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Ratio,
    Mean,
    Gauge,
}

impl MetricKind {
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::Ratio => "ratio",
            MetricKind::Mean => "mean",
            MetricKind::Gauge => "gauge",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Higher,
    Lower,
}

/// At most one of the two: relative to the baseline's value, or in the
/// metric's own units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute: Option<f64>,
}

impl Tolerance {
    pub fn is_zero(&self) -> bool {
        self.relative_percent.unwrap_or(0.0) == 0.0 && self.absolute.unwrap_or(0.0) == 0.0
    }

    /// For people: "5% relative", "0.2 absolute", "none".
    pub fn describe(&self) -> String {
        match (self.relative_percent, self.absolute) {
            (Some(r), _) if r > 0.0 => format!("{r}% relative"),
            (_, Some(a)) if a > 0.0 => format!("{a} absolute"),
            _ => "none".into(),
        }
    }
}

/// Exactly one of the two.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// PromQL instant queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusProvider>,
    /// `GET` the query (a URL template) and take the number at `json_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProvider>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusProvider {
    /// Defaults to the controller's `--prometheus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProvider {
    pub json_path: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Provider {
    pub fn name(&self) -> &'static str {
        if self.http.is_some() {
            "http"
        } else {
            "prometheus"
        }
    }
}

/// Placeholders a query may hold.
pub const PLACEHOLDERS: [&str; 4] = ["{{rollout}}", "{{version}}", "{{canary}}", "{{stable}}"];

/// `template` with its placeholders filled: `{{version}}` is the version
/// the value is read for.
pub fn render(template: &str, rollout: &str, version: &str, canary: &str, stable: &str) -> String {
    template
        .replace("{{rollout}}", rollout)
        .replace("{{version}}", version)
        .replace("{{canary}}", canary)
        .replace("{{stable}}", stable)
}

impl MetricCheck {
    /// The queries of a per-version comparison, numerator first.
    pub fn pair(&self) -> Option<(&str, &str)> {
        match self.kind {
            MetricKind::Ratio => Some((self.successes.as_deref()?, self.trials.as_deref()?)),
            MetricKind::Mean => Some((self.sum.as_deref()?, self.count.as_deref()?)),
            MetricKind::Gauge => None,
        }
    }

    pub fn is_comparison(&self) -> bool {
        self.kind != MetricKind::Gauge
    }

    pub fn higher_is_better(&self) -> bool {
        self.direction == Some(Direction::Higher)
    }

    pub fn validate(&self, at: &str) -> Result<(), SpecError> {
        let field = |f: &str| format!("{at}.{f}");
        if !dimmer_core::validate::is_valid_name(&self.name) || self.name.contains('.') {
            return Err(invalid(
                field("name"),
                "must be 1 to 63 letters, digits, '-' or '_', starting with a letter or digit",
            ));
        }
        match (&self.provider.prometheus, &self.provider.http) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(
                    field("provider"),
                    "names one provider: prometheus or http",
                ))
            }
            (Some(p), None) => {
                if let Some(a) = &p.address {
                    check_url(a, &field("provider.prometheus.address"))?;
                }
            }
            (None, Some(HttpProvider { json_path, headers })) => {
                serde_json_path::JsonPath::parse(json_path).map_err(|e| {
                    invalid(
                        field("provider.http.json_path"),
                        format!("is not a JSONPath like $.data.value: {e}"),
                    )
                })?;
                if headers.len() > 16 {
                    return Err(invalid(field("provider.http.headers"), "at most 16"));
                }
                for (k, v) in headers {
                    let ok = is_header_name(k) && is_header_value(v);
                    if !ok {
                        return Err(invalid(
                            field(&format!("provider.http.headers.{k}")),
                            "is not a valid HTTP header",
                        ));
                    }
                }
            }
        }
        let wanted: &[&str] = match self.kind {
            MetricKind::Ratio => &["successes", "trials"],
            MetricKind::Mean => &["sum", "count"],
            MetricKind::Gauge => &["query"],
        };
        let given = [
            ("successes", &self.successes),
            ("trials", &self.trials),
            ("sum", &self.sum),
            ("count", &self.count),
            ("query", &self.query),
        ];
        let kind = self.kind.name();
        for (name, q) in given {
            match (wanted.contains(&name), q) {
                (true, None) => {
                    return Err(invalid(field(name), format!("is required for kind {kind}")))
                }
                (false, Some(_)) => {
                    return Err(invalid(
                        field(name),
                        format!(
                            "is not used by kind {kind} (it takes {})",
                            wanted.join(" and ")
                        ),
                    ))
                }
                (true, Some(q)) => self.check_query(q, &field(name), wanted.len() == 2)?,
                (false, None) => {}
            }
        }
        if self.is_comparison() {
            if self.direction.is_none() {
                return Err(invalid(
                    field("direction"),
                    "is required: higher (conversion, order value) or lower (failed payments) is better",
                ));
            }
            if self.max.is_some() || self.min.is_some() {
                return Err(invalid(
                    field(if self.max.is_some() { "max" } else { "min" }),
                    "is for kind gauge; a comparison takes a tolerance",
                ));
            }
            let t = &self.tolerance;
            if t.relative_percent.is_some() && t.absolute.is_some() {
                return Err(invalid(
                    field("tolerance"),
                    "takes relative_percent or absolute, not both",
                ));
            }
            if let Some(r) = t.relative_percent {
                in_range(
                    r,
                    0.0,
                    99.0,
                    &field("tolerance.relative_percent"),
                    "from 0 to 99",
                )?;
            }
            if let Some(a) = t.absolute {
                in_range(a, 0.0, 1e15, &field("tolerance.absolute"), "0 or more")?;
            }
            if self.min_count == 0 || self.min_count > 1_000_000_000 {
                return Err(invalid(
                    field("min_count"),
                    "must be from 1 (never promote on no data) to 1e9",
                ));
            }
        } else {
            match (self.max, self.min) {
                (None, None) => {
                    return Err(invalid(field("max"), "a gauge needs a limit: max or min"))
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(field("min"), "a gauge takes max or min, not both"))
                }
                (Some(x), None) | (None, Some(x)) if !x.is_finite() => {
                    return Err(invalid(
                        field(if self.max.is_some() { "max" } else { "min" }),
                        "must be a finite number",
                    ))
                }
                _ => {}
            }
            if self.direction.is_some() || !self.tolerance.is_zero() {
                return Err(invalid(
                    field(if self.direction.is_some() {
                        "direction"
                    } else {
                        "tolerance"
                    }),
                    "is for ratio and mean metrics; a gauge takes max or min",
                ));
            }
            if !(1..=100).contains(&self.consecutive) {
                return Err(invalid(field("consecutive"), "must be from 1 to 100"));
            }
        }
        Ok(())
    }

    fn check_query(&self, q: &str, field: &str, per_version: bool) -> Result<(), SpecError> {
        if q.trim().is_empty() || q.len() > MAX_QUERY_LEN {
            return Err(invalid(
                field,
                format!("must be 1 to {MAX_QUERY_LEN} characters"),
            ));
        }
        if per_version && !q.contains("{{version}}") {
            return Err(invalid(
                field,
                "must hold {{version}}: it is read once for the canary and once for the stable",
            ));
        }
        let mut rest = q;
        while let Some(i) = rest.find("{{") {
            let tail = &rest[i..];
            match PLACEHOLDERS.iter().find(|p| tail.starts_with(**p)) {
                Some(p) => rest = &tail[p.len()..],
                None => {
                    return Err(invalid(
                        field,
                        format!(
                            "unknown placeholder at {:?}; known: {}",
                            tail.chars().take(16).collect::<String>(),
                            PLACEHOLDERS.join(" ")
                        ),
                    ))
                }
            }
        }
        if self.provider.http.is_some() {
            let sample = render(q, "r", "v", "c", "s");
            check_url(&sample, field)?;
        }
        Ok(())
    }
}

fn check_url(url: &str, field: &str) -> Result<(), SpecError> {
    if is_http_url_with_host(url) {
        Ok(())
    } else {
        Err(invalid(field, format!("{url:?} is not an http(s) URL")))
    }
}

/// Every metric of a rollout: valid one by one, names unique.
pub fn validate_all(metrics: &[MetricCheck]) -> Result<(), SpecError> {
    if metrics.len() > MAX_METRICS {
        return Err(invalid(
            "analysis.metrics",
            format!("at most {MAX_METRICS} metrics"),
        ));
    }
    for (i, m) in metrics.iter().enumerate() {
        m.validate(&format!("analysis.metrics[{i}]"))?;
        if metrics[..i].iter().any(|o| o.name == m.name) {
            return Err(invalid(
                format!("analysis.metrics[{i}].name"),
                format!("{:?} is already the name of another metric", m.name),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<MetricCheck, String> {
        let m: MetricCheck = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        m.validate("analysis.metrics[0]")
            .map_err(|e| e.to_string())?;
        Ok(m)
    }

    #[test]
    fn one_of_each_kind_and_provider_is_accepted() {
        let ratio = parse(
            "name: conversion\nprovider: {prometheus: {}}\nkind: ratio\n\
             successes: 'sum(shop_orders_total{version=\"{{version}}\"})'\n\
             trials: 'sum(shop_checkouts_total{version=\"{{version}}\"})'\n\
             direction: higher\ntolerance: {relative_percent: 5}\n",
        )
        .unwrap();
        assert_eq!(
            ratio.pair().map(|p| p.0.starts_with("sum(shop_orders")),
            Some(true)
        );
        parse(
            "name: order_value\nprovider: {http: {json_path: '$.value'}}\nkind: mean\n\
             sum: 'http://shop:8080/stats/{{version}}/order_value_sum'\n\
             count: 'http://shop:8080/stats/{{version}}/orders'\ndirection: higher\n",
        )
        .unwrap();
        parse("name: queue\nprovider: {prometheus: {address: 'http://prom:9090'}}\nkind: gauge\nquery: 'max(queue_depth{version=\"{{canary}}\"})'\nmax: 100\n").unwrap();
    }

    #[test]
    fn each_mistake_names_its_field() {
        let cases = [
            ("name: a\nprovider: {prometheus: {}}\nkind: ratio\nsuccesses: 'x{{version}}'\ndirection: higher\n", "analysis.metrics[0].trials: is required"),
            ("name: a\nprovider: {prometheus: {}}\nkind: ratio\nsuccesses: 'x{{version}}'\ntrials: 'y{{version}}'\n", "analysis.metrics[0].direction"),
            ("name: a\nprovider: {prometheus: {}}\nkind: ratio\nsuccesses: 'x'\ntrials: 'y{{version}}'\ndirection: higher\n", "analysis.metrics[0].successes: must hold {{version}}"),
            ("name: a\nprovider: {prometheus: {}}\nkind: mean\nsum: 'x{{version}}'\ncount: 'y{{version}}{{verison}}'\ndirection: lower\n", "analysis.metrics[0].count: unknown placeholder"),
            ("name: a\nprovider: {prometheus: {}}\nkind: gauge\nquery: q\n", "analysis.metrics[0].max: a gauge needs a limit"),
            ("name: a\nprovider: {prometheus: {}}\nkind: gauge\nquery: q\nmax: 1\nsum: s\n", "analysis.metrics[0].sum: is not used by kind gauge"),
            ("name: a\nprovider: {http: {json_path: 'no path'}}\nkind: gauge\nquery: 'http://h/q'\nmax: 1\n", "analysis.metrics[0].provider.http.json_path"),
            ("name: a\nprovider: {http: {json_path: '$.v'}}\nkind: gauge\nquery: 'file:///etc/passwd'\nmax: 1\n", "analysis.metrics[0].query: \"file:///etc/passwd\" is not an http(s) URL"),
            ("name: a\nprovider: {prometheus: {}}\nkind: ratio\nsuccesses: 'x{{version}}'\ntrials: 'y{{version}}'\ndirection: higher\ntolerance: {relative_percent: 5, absolute: 1}\n", "analysis.metrics[0].tolerance: takes relative_percent or absolute"),
            ("name: a\nprovider: {prometheus: {}}\nkind: ratio\nsuccesses: 'x{{version}}'\ntrials: 'y{{version}}'\ndirection: higher\nmin_count: 0\n", "analysis.metrics[0].min_count"),
            ("name: 'a b'\nprovider: {prometheus: {}}\nkind: gauge\nquery: q\nmax: 1\n", "analysis.metrics[0].name"),
        ];
        for (yaml, want) in cases {
            let err = parse(yaml).unwrap_err();
            assert!(err.contains(want), "{yaml}\n→ {err}\nwanted {want}");
        }
    }

    #[test]
    fn names_are_unique_and_templates_fill_every_placeholder() {
        let m =
            parse("name: a\nprovider: {prometheus: {}}\nkind: gauge\nquery: q\nmax: 1\n").unwrap();
        let err = validate_all(&[m.clone(), m]).unwrap_err().to_string();
        assert!(err.contains("analysis.metrics[1].name"), "{err}");
        assert_eq!(
            render(
                "{{rollout}}/{{version}}/{{canary}}/{{stable}}",
                "co",
                "v2",
                "v2",
                "v1"
            ),
            "co/v2/v2/v1"
        );
    }
}
