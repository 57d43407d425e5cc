//! Sending requests through Envoy as a given user.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::upstream::{SAW_COPIES, SAW_FLAGS, SAW_ROUTE, SERVED_BY};

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// The version that served it (`x-served-by`), empty if none did.
    pub version: String,
    /// The route header the upstream received.
    pub saw_route: String,
    /// The flags header the upstream received.
    pub saw_flags: String,
    /// Copies of the route and flags headers the upstream received: `route,flags`.
    pub saw_copies: String,
    pub set_cookie: Option<String>,
}

impl Client {
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_pool(base, 64)
    }

    /// A client that opens a new connection for every request, so requests
    /// spread over all of Envoy's workers.
    pub fn fresh_connections(base: impl Into<String>) -> Self {
        Self::with_pool(base, 0)
    }

    fn with_pool(base: impl Into<String>, idle: usize) -> Self {
        // The process's TLS provider, before the first client is built.
        dimmer::tls::install_provider();
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(idle)
                .build()
                .unwrap_or_default(),
            base: base.into(),
        }
    }

    /// GET `path` with raw header bytes (so tests can send non-UTF-8 values).
    pub async fn get(&self, path: &str, headers: &[(&str, &[u8])]) -> anyhow::Result<Reply> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_bytes(value)?,
            );
        }
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .headers(map)
            .send()
            .await?;
        let text = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        Ok(Reply {
            status: resp.status().as_u16(),
            version: text(SERVED_BY).unwrap_or_default(),
            saw_route: text(SAW_ROUTE).unwrap_or_default(),
            saw_flags: text(SAW_FLAGS).unwrap_or_default(),
            saw_copies: text(SAW_COPIES).unwrap_or_default(),
            set_cookie: text("set-cookie"),
        })
    }

    /// The version user `id` is served by, identified by `x-user-id`.
    pub async fn version_of(&self, id: &str) -> anyhow::Result<String> {
        Ok(self
            .get("/", &[("x-user-id", id.as_bytes())])
            .await?
            .version)
    }

    /// Versions for many users, `parallel` requests at a time, in input order.
    pub async fn versions_of(
        &self,
        ids: &[String],
        parallel: usize,
    ) -> anyhow::Result<Vec<String>> {
        let mut out = vec![String::new(); ids.len()];
        for (chunk_no, chunk) in ids.chunks(parallel.max(1)).enumerate() {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, id) in chunk.iter().enumerate() {
                let c = self.clone();
                let id = id.clone();
                tasks.spawn(async move { (i, c.version_of(&id).await) });
            }
            while let Some(done) = tasks.join_next().await {
                let (i, v) = done?;
                out[chunk_no * parallel.max(1) + i] = v?;
            }
        }
        Ok(out)
    }
}
