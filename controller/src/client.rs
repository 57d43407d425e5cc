//! The CLI's side of the API.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the controller at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{status}: {message}")]
    Refused { status: StatusCode, message: String },
    #[error("unexpected answer from {url}: {source}")]
    Decode { url: String, source: reqwest::Error },
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    async fn send(
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
                source,
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
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

pub enum Body {
    Yaml(String),
    Json(serde_json::Value),
}
