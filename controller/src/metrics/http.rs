//! The one GET every HTTP back-end makes: bounded in time, status checked,
//! and what went wrong said apart: a source that accepts the connection and
//! does not answer in time "did not answer within …", one that cannot be
//! connected to "cannot reach …", and an error answer by its status.

use std::time::Duration;

use super::source::MetricsError;

/// A client whose connections give up quickly: a back-end that accepts and
/// never answers costs one timeout, never a stalled controller.
pub struct Http {
    client: reqwest::Client,
    timeout: Duration,
}

pub fn client(timeout: Duration) -> Http {
    Http {
        client: crate::tls::client_builder()
            .connect_timeout(Duration::from_secs(1).min(timeout))
            .timeout(timeout)
            .build()
            .unwrap_or_default(),
        timeout,
    }
}

/// Connected, then no answer in time: a hang, not a refusal.
pub(super) fn hung(e: &reqwest::Error) -> bool {
    e.is_timeout() && !e.is_connect()
}

impl Http {
    fn failed(&self, url: &str, source: reqwest::Error) -> MetricsError {
        if hung(&source) {
            MetricsError::TimedOut {
                what: url.to_owned(),
                within: humantime::format_duration(self.timeout).to_string(),
            }
        } else {
            MetricsError::Unreachable {
                url: url.to_owned(),
                source,
            }
        }
    }
}

pub async fn get_text(
    http: &Http,
    url: &str,
    query: &[(&str, &str)],
) -> Result<String, MetricsError> {
    let resp = http
        .client
        .get(url)
        .query(query)
        .send()
        .await
        .map_err(|e| http.failed(url, e))?;
    if !resp.status().is_success() {
        return Err(MetricsError::Status {
            url: url.to_owned(),
            status: resp.status().as_u16(),
        });
    }
    resp.text().await.map_err(|e| match http.failed(url, e) {
        MetricsError::Unreachable { url, source } => MetricsError::Malformed {
            url,
            reason: source.to_string(),
        },
        timed_out => timed_out,
    })
}
