//! State changes, POSTed as JSON to the configured URLs, so people can wire
//! chat and paging. Fire and forget: a slow receiver never delays a decision.

use std::time::Duration;

pub fn notify(http: &reqwest::Client, urls: Vec<String>, body: serde_json::Value) {
    for url in urls {
        let http = http.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let sent = http
                .post(&url)
                .json(&body)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(%url, status = r.status().as_u16(), "webhook refused"),
                Err(e) => tracing::warn!(%url, error = %e, "webhook failed"),
            }
        });
    }
}
