//! A stand-in for the controller's `GET /v1/config`, for testing the filter
//! on its own: serves whatever body the test sets, honours `If-None-Match`,
//! records every poll, and can be told to fail or go away.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct Poll {
    pub at: Instant,
    pub proxy_id: String,
    pub revision: String,
    pub if_none_match: String,
    pub authorization: String,
}

#[derive(Debug, Default)]
pub struct StubState {
    pub body: Vec<u8>,
    pub etag: String,
    /// Answer every poll with this status instead of the config.
    pub fail_with: Option<u16>,
    pub polls: Vec<Poll>,
    generation: u64,
}

pub struct StubController {
    pub port: u16,
    state: Arc<Mutex<StubState>>,
    task: Option<JoinHandle<()>>,
}

impl StubController {
    pub async fn start() -> anyhow::Result<StubController> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let mut stub = StubController {
            port,
            state: Arc::default(),
            task: None,
        };
        stub.serve(listener);
        Ok(stub)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let router = Router::new()
            .route("/v1/config", get(config))
            .with_state(Arc::clone(&self.state));
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
    }

    pub fn state(&self) -> MutexGuard<'_, StubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `body` verbatim from now on, under a fresh ETag.
    pub fn set_body(&self, body: impl Into<Vec<u8>>) {
        let mut s = self.state();
        s.generation += 1;
        s.body = body.into();
        s.etag = format!("\"g{}\"", s.generation);
    }

    pub fn set_config(&self, doc: &serde_json::Value) {
        self.set_body(doc.to_string());
    }

    pub fn polls(&self) -> Vec<Poll> {
        self.state().polls.clone()
    }

    /// Stops listening: polls are refused from now on.
    pub fn go_away(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn come_back(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await?;
        self.serve(listener);
        Ok(())
    }
}

impl Drop for StubController {
    fn drop(&mut self) {
        self.go_away();
    }
}

async fn config(State(state): State<Arc<Mutex<StubState>>>, headers: HeaderMap) -> Response {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    s.polls.push(Poll {
        at: Instant::now(),
        proxy_id: text("x-dimmer-proxy-id"),
        revision: text("x-dimmer-revision"),
        if_none_match: text("if-none-match"),
        authorization: text("authorization"),
    });
    if let Some(code) = s.fail_with {
        return StatusCode::from_u16(code)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
    }
    if s.body.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    if !s.etag.is_empty() && text("if-none-match") == s.etag {
        return (StatusCode::NOT_MODIFIED, [("etag", s.etag.clone())]).into_response();
    }
    (
        StatusCode::OK,
        [
            ("etag", s.etag.clone()),
            ("content-type", "application/json".into()),
        ],
        s.body.clone(),
    )
        .into_response()
}
