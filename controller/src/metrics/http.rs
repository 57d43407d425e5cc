//! The one GET every HTTP back-end makes: bounded in time, status checked.

use std::time::Duration;

use super::source::MetricsError;

/// A client whose connections give up quickly: a back-end that accepts and
/// never answers costs one timeout, never a stalled controller.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1).min(timeout))
        .timeout(timeout)
        .build()
        .unwrap_or_default()
}

pub async fn get_text(
    http: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
) -> Result<String, MetricsError> {
    let resp =
        http.get(url)
            .query(query)
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
