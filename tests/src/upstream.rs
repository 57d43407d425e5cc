//! A stand-in for one version of an application: answers every request with
//! its version name, and can be told to fail or slow down.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::task::JoinHandle;

pub const SERVED_BY: &str = "x-served-by";
pub const SAW_ROUTE: &str = "x-saw-route";
pub const SAW_FLAGS: &str = "x-saw-flags";
/// How many copies of the route and flags headers the upstream received,
/// as `route,flags`: a client's second copy must never survive.
pub const SAW_COPIES: &str = "x-saw-copies";

#[derive(Debug, Default)]
pub struct Fault {
    /// Failed requests per 10 000, answered 503.
    pub error_bp: AtomicU32,
    pub delay_ms: AtomicU64,
    /// When set to `key=variant`, requests whose flags header holds it fail
    /// with 503: a feature that is broken only where it is on.
    pub fail_flag: std::sync::Mutex<Option<String>>,
}

struct App {
    version: String,
    fault: Arc<Fault>,
}

pub struct Upstream {
    pub port: u16,
    pub fault: Arc<Fault>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start(version: &str) -> anyhow::Result<Upstream> {
        Self::start_on(version, 0).await
    }

    pub async fn start_on(version: &str, port: u16) -> anyhow::Result<Upstream> {
        let fault = Arc::new(Fault::default());
        let app = Arc::new(App {
            version: version.to_owned(),
            fault: Arc::clone(&fault),
        });
        let router = Router::new().fallback(handle).with_state(app);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Upstream { port, fault, task })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let delay = app.fault.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let saw = headers
        .get(dimmer_core::config::DEFAULT_ROUTE_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let copies = format!(
        "{},{}",
        headers
            .get_all(dimmer_core::config::DEFAULT_ROUTE_HEADER)
            .iter()
            .count(),
        headers
            .get_all(dimmer_core::config::DEFAULT_FLAGS_HEADER)
            .iter()
            .count()
    );
    let flags = headers
        .get(dimmer_core::config::DEFAULT_FLAGS_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let broken_flag = app
        .fault
        .fail_flag
        .lock()
        .map(|f| {
            f.as_ref()
                .is_some_and(|f| flags.split(';').any(|kv| kv == f))
        })
        .unwrap_or(false);
    let failing =
        broken_flag || fastrand::u32(0..10_000) < app.fault.error_bp.load(Ordering::Relaxed);
    let status = if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        [
            (SERVED_BY, app.version.clone()),
            (SAW_ROUTE, saw),
            (SAW_FLAGS, flags),
            (SAW_COPIES, copies),
        ],
        format!("{}\n", app.version),
    )
        .into_response()
}
