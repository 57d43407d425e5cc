//! Faulty neighbours for the fault suite: a gate in front of a metrics
//! endpoint that can pass, refuse, hang or flap, and a black hole that
//! accepts connections and never answers.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Forwards to the real endpoint.
    Pass = 0,
    /// Answers 503 at once.
    Refuse = 1,
    /// Accepts and never answers.
    Hang = 2,
    /// Alternates: one request passes, the next is refused.
    Flap = 3,
}

struct GateState {
    target: String,
    mode: AtomicU8,
    seen: AtomicU64,
    http: reqwest::Client,
}

/// A gate in front of `http://127.0.0.1:{target}`.
pub struct MetricsGate {
    pub port: u16,
    state: Arc<GateState>,
    task: JoinHandle<()>,
}

impl MetricsGate {
    pub async fn start(target_port: u16) -> anyhow::Result<MetricsGate> {
        let state = Arc::new(GateState {
            target: format!("http://127.0.0.1:{target_port}"),
            mode: AtomicU8::new(Mode::Pass as u8),
            seen: AtomicU64::new(0),
            http: reqwest::Client::new(),
        });
        let router = Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(MetricsGate { port, state, task })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Requests the gate has seen.
    pub fn seen(&self) -> u64 {
        self.state.seen.load(Ordering::SeqCst)
    }
}

impl Drop for MetricsGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(s): State<Arc<GateState>>, req: Request) -> Response {
    let n = s.seen.fetch_add(1, Ordering::SeqCst);
    let mode = s.mode.load(Ordering::SeqCst);
    let refuse = mode == Mode::Refuse as u8 || (mode == Mode::Flap as u8 && n % 2 == 1);
    if mode == Mode::Hang as u8 {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if refuse {
        return (StatusCode::SERVICE_UNAVAILABLE, "gate closed\n").into_response();
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    match s.http.get(format!("{}{path}", s.target)).send().await {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = r.text().await.unwrap_or_default();
            (status, body).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// Accepts TCP connections and never answers: a hung receiver.
pub struct BlackHole {
    pub port: u16,
    task: JoinHandle<()>,
}

impl BlackHole {
    pub async fn start() -> anyhow::Result<BlackHole> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                // Held open, never read from, never answered.
                held.push(conn);
            }
        });
        Ok(BlackHole { port, task })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Latencies in ms, sorted; the `q`-quantile by nearest rank.
pub fn quantile(sorted_ms: &[f64], q: f64) -> f64 {
    if sorted_ms.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted_ms.len() as f64).ceil() as usize).clamp(1, sorted_ms.len());
    sorted_ms[rank - 1]
}
