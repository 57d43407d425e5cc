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
    /// The shop's own business metrics: of the requests it serves (each a
    /// checkout started), this many per 10 000 complete an order...
    pub conversion_bp: AtomicU32,
    /// ...worth this much on average (log-normal, σ = 0.5), in cents.
    pub order_cents: AtomicU64,
}

/// What the shop counts of itself, as an app exposes its own metrics.
#[derive(Debug, Default)]
pub struct Shop {
    pub checkouts: AtomicU64,
    pub orders: AtomicU64,
    pub order_value_cents: AtomicU64,
}

impl Shop {
    /// Counts one request: a checkout, and maybe an order of some value.
    fn serve(&self, fault: &Fault) {
        self.checkouts.fetch_add(1, Ordering::Relaxed);
        if fastrand::u32(0..10_000) < fault.conversion_bp.load(Ordering::Relaxed) {
            self.orders.fetch_add(1, Ordering::Relaxed);
            // Log-normal with mean `order_cents`: exp(σZ − σ²/2), Z by Box–Muller.
            let (u1, u2) = (fastrand::f64().max(1e-12), fastrand::f64());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            let mean = fault.order_cents.load(Ordering::Relaxed) as f64;
            let value = mean * (0.5 * z - 0.125).exp();
            self.order_value_cents
                .fetch_add(value.round() as u64, Ordering::Relaxed);
        }
    }
}

struct App {
    version: String,
    fault: Arc<Fault>,
    shop: Arc<Shop>,
}

pub struct Upstream {
    pub port: u16,
    pub fault: Arc<Fault>,
    pub shop: Arc<Shop>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start(version: &str) -> anyhow::Result<Upstream> {
        Self::start_on(version, 0).await
    }

    pub async fn start_on(version: &str, port: u16) -> anyhow::Result<Upstream> {
        Self::start_at(version, "127.0.0.1", port).await
    }

    /// Listening on `address` (a test net's gateway, for Envoys on test
    /// hosts).
    pub async fn start_at(version: &str, address: &str, port: u16) -> anyhow::Result<Upstream> {
        let fault = Arc::new(Fault::default());
        fault.conversion_bp.store(3000, Ordering::Relaxed);
        fault.order_cents.store(5000, Ordering::Relaxed);
        let shop = Arc::new(Shop::default());
        let app = Arc::new(App {
            version: version.to_owned(),
            fault: Arc::clone(&fault),
            shop: Arc::clone(&shop),
        });
        let router = Router::new()
            .route("/shop/metrics", axum::routing::get(shop_metrics))
            .route("/shop/stats.json", axum::routing::get(shop_json))
            .fallback(handle)
            .with_state(app);
        let listener = tokio::net::TcpListener::bind((address, port)).await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Upstream {
            port,
            fault,
            shop,
            task,
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shop's counters in Prometheus' text format, labelled by version, as
/// the app would expose them for Prometheus to scrape.
async fn shop_metrics(State(app): State<Arc<App>>) -> String {
    let v = &app.version;
    let s = &app.shop;
    format!(
        "# TYPE shop_checkouts_total counter\nshop_checkouts_total{{version=\"{v}\"}} {}\n\
         # TYPE shop_orders_total counter\nshop_orders_total{{version=\"{v}\"}} {}\n\
         # TYPE shop_order_value_cents_total counter\nshop_order_value_cents_total{{version=\"{v}\"}} {}\n",
        s.checkouts.load(Ordering::Relaxed),
        s.orders.load(Ordering::Relaxed),
        s.order_value_cents.load(Ordering::Relaxed),
    )
}

/// The same counters as JSON, for the HTTP provider.
async fn shop_json(State(app): State<Arc<App>>) -> axum::Json<serde_json::Value> {
    let s = &app.shop;
    axum::Json(serde_json::json!({
        "version": app.version,
        "orders": {
            "count": s.orders.load(Ordering::Relaxed),
            "value_cents": s.order_value_cents.load(Ordering::Relaxed),
        },
    }))
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
    app.shop.serve(&app.fault);
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
