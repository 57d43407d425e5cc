//! The CLI's side of the API.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the controller at {url}: {why}")]
    Unreachable {
        url: String,
        /// The whole chain of causes, and what to do about a certificate.
        why: String,
        source: reqwest::Error,
    },
    #[error("{status}: {message}")]
    Refused { status: StatusCode, message: String },
    #[error("unexpected answer from {url}: {source}")]
    Decode { url: String, source: reqwest::Error },
    /// 503 with `retry-after`: nothing was applied; asked again.
    #[error("503 Service Unavailable: {message}")]
    Unavailable { message: String },
}

impl ClientError {
    /// What is left to say once the retries are over.
    fn settled(self) -> ClientError {
        match self {
            ClientError::Unavailable { message } => ClientError::Refused {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!(
                    "{message} (still so after {}s of retries)",
                    RETRY_FOR.as_secs()
                ),
            },
            other => other,
        }
    }
}

/// How long a call is repeated while the controller says to retry: longer
/// than a fleet's failover (the lease TTL, 3 s by default, and a look).
pub const RETRY_FOR: Duration = Duration::from_secs(15);
/// How often: a polite pace that still lands an abort well within a
/// second of the election.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Every cause of a failed call, joined; a certificate the CLI does not
/// trust is said plainly, with the flag that fixes it (verification is
/// never switched off).
fn unreachable_why(e: &reqwest::Error) -> String {
    let mut causes = vec![e.to_string()];
    let mut next = std::error::Error::source(e);
    while let Some(cause) = next {
        causes.push(cause.to_string());
        next = cause.source();
    }
    let all = causes.join(": ");
    let untrusted = ["UnknownIssuer", "BadSignature", "certificate"]
        .iter()
        .any(|w| all.contains(w));
    if untrusted {
        format!("{all}\n  the controller's certificate is not trusted here: give --ca FILE (or DIMMER_CA), the CA that signed it; if it is the right CA, the certificate may be a stranger's")
    } else {
        all
    }
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// Whether the controller's warning was printed already.
    warned: std::sync::atomic::AtomicBool,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        let http = crate::tls::client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self::with_http(http, base, token)
    }

    fn with_http(http: reqwest::Client, base: &str, token: Option<String>) -> Client {
        Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The same, verifying an `https://` controller against `ca` (`--ca`,
    /// the PEM of the CA that signed its certificate) instead of the
    /// system's roots. A CA file that cannot be read is an error here, not
    /// a client that trusts nothing or everything.
    pub fn with_ca(
        base: &str,
        token: Option<String>,
        ca: Option<&std::path::Path>,
    ) -> anyhow::Result<Client> {
        let http = crate::tls::http_client(ca)?
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self::with_http(http, base, token))
    }

    /// Sends, and again while the controller answers 503 with
    /// `retry-after` — no leader yet, a failover under way: nothing was
    /// applied — for up to [`RETRY_FOR`], so that an abort typed during a
    /// failover lands once the new leader is elected.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<reqwest::Response, ClientError> {
        let deadline = std::time::Instant::now() + RETRY_FOR;
        loop {
            let result = self.send_once(method.clone(), path, body.clone()).await;
            let again = matches!(&result, Err(ClientError::Unavailable { .. }))
                && std::time::Instant::now() + RETRY_EVERY < deadline;
            if !again {
                return result.map_err(ClientError::settled);
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    async fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Some(Body::Yaml(text)) => req.header("content-type", "application/yaml").body(text),
            Some(Body::Json(v)) => req.json(&v),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                why: unreachable_why(&source),
                source,
            })?;
        if let Some(w) = resp.headers().get(crate::api::WARNING_HEADER) {
            if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                eprintln!("warning: {}", w.to_str().unwrap_or_default());
            }
        }
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let retry = status == StatusCode::SERVICE_UNAVAILABLE
            && resp.headers().contains_key(reqwest::header::RETRY_AFTER);
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        if retry {
            return Err(ClientError::Unavailable { message });
        }
        Err(ClientError::Refused { status, message })
    }

    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        self.send(method, path, body)
            .await?
            .json()
            .await
            .map_err(|source| ClientError::Decode { url, source })
    }

    pub async fn call_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<(), ClientError> {
        self.send(method, path, body).await.map(|_| ())
    }
}

#[derive(Clone)]
pub enum Body {
    Yaml(String),
    Json(serde_json::Value),
}

/// `name` as a URL path segment. Every rollout name meets the rule checked
/// here (letters, digits, `.`, `_`, `-`, starting with a letter or digit),
/// and such a name is a path segment as it stands: it needs no escaping and
/// can never be `.` or `..`. Anything else is refused before it is sent.
pub fn seg(name: &str) -> anyhow::Result<&str> {
    if !dimmer_core::validate::is_valid_name(name) {
        anyhow::bail!("{name:?} cannot be a rollout name: 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;

    use super::*;

    /// A controller that answers `first` to the first `n` calls, then 200.
    async fn serve(n: u32, first: fn() -> axum::response::Response) -> (String, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&calls);
        let app = axum::Router::new().fallback(move || {
            let c = Arc::clone(&c);
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < n {
                    first()
                } else {
                    axum::Json(serde_json::json!({"ok": true})).into_response()
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, calls)
    }

    fn no_leader_yet() -> axum::response::Response {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            axum::Json(serde_json::json!({"error": "no leader elected yet; retry"})),
        )
            .into_response()
    }

    fn maybe_applied() -> axum::response::Response {
        (
            StatusCode::GATEWAY_TIMEOUT,
            axum::Json(serde_json::json!({"error": "the call may have been applied"})),
        )
            .into_response()
    }

    fn busy() -> axum::response::Response {
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    }

    #[tokio::test]
    async fn a_call_is_repeated_while_the_controller_says_retry_and_lands() {
        let (url, calls) = serve(3, no_leader_yet).await;
        let body = Some(Body::Json(serde_json::json!({"reason": "failover"})));
        let v: serde_json::Value = Client::new(&url, None)
            .call(Method::POST, "/v1/rollouts/x/abort", body)
            .await
            .unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_call_that_may_have_been_applied_or_has_no_retry_after_is_not_repeated() {
        for answer in [maybe_applied as fn() -> _, busy] {
            let (url, calls) = serve(1, answer).await;
            let r = Client::new(&url, None)
                .call_empty(Method::POST, "/v1/rollouts/x/abort", None)
                .await;
            assert!(matches!(r, Err(ClientError::Refused { .. })), "{r:?}");
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
    }
}
