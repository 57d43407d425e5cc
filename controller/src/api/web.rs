//! The web UI of `dimmer serve`: its assets, embedded in the binary so the
//! page works offline, and the read endpoints it alone needs (who am I,
//! the overview, a rollout's series, and a live stream of updates). Every
//! action the page offers goes through the API's own endpoints and roles.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;

use super::state::{ApiError, App};
use crate::auth::Role;

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/style.css");
const ICON: &str = include_str!("../../ui/favicon.svg");

/// Nothing the page loads comes from anywhere but this server.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// How often a stream sends an update.
const EVERY: Duration = Duration::from_secs(1);

pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        // Browsers ask for /favicon.ico on every page whatever the page
        // links; both get the same small SVG.
        .route(
            "/ui/favicon.svg",
            get(|| async { asset(ICON, "image/svg+xml") }),
        )
        .route(
            "/favicon.ico",
            get(|| async { asset(ICON, "image/svg+xml") }),
        )
        .route("/v1/whoami", get(whoami))
        .route("/v1/overview", get(overview))
        .route("/v1/rollouts/{name}/series", get(series))
        .route("/v1/events", get(events))
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn whoami(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    let who = app.require(&headers, Role::Proxy).await?;
    Ok(
        Json(serde_json::json!({"name": who.name, "role": who.role, "teams": who.teams}))
            .into_response(),
    )
}

async fn overview(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer).await?;
    Ok(Json(app.service.overview().await?).into_response())
}

#[derive(Deserialize, Default)]
struct After {
    #[serde(default)]
    after: u64,
}

async fn series(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<After>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer).await?;
    Ok(Json(app.service.series_of(&name, q.after)).into_response())
}

#[derive(Deserialize, Default)]
struct EventsQuery {
    /// One rollout's view (with its series and last audit records);
    /// without it, every rollout's status.
    rollout: Option<String>,
}

/// Server-sent events, one `update` a second, until the client goes. The
/// page reads them with `fetch`, which (unlike `EventSource`) can send the
/// bearer token in a header rather than in the URL.
async fn events(
    State(app): State<App>,
    Query(q): Query<EventsQuery>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = app.require(&headers, Role::Viewer).await?;
    let address = peer.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(ConnectInfo(a))| {
        a.ip()
    });
    let permit = match app.streams.open(&who, address) {
        Ok(p) => p,
        // Refused before any work; the page shows the state from the API
        // and says it is not live.
        Err(why) => {
            return Ok((
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "5")],
                Json(serde_json::json!({"error": why.to_string()})),
            )
                .into_response())
        }
    };
    let start = (app, q.rollout, 0u64, true, permit);
    let stream =
        futures_util::stream::unfold(start, |(app, rollout, after, first, permit)| async move {
            if !first {
                tokio::time::sleep(EVERY).await;
            }
            let (payload, after) = update(&app, rollout.as_deref(), after).await;
            let chunk = format!("event: update\ndata: {payload}\n\n");
            Some((
                Ok::<_, Infallible>(Bytes::from(chunk)),
                (app, rollout, after, false, permit),
            ))
        });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// One update: every rollout's status, or one rollout's view with the
/// series points after `after`. Returns the new `after`.
async fn update(app: &App, rollout: Option<&str>, after: u64) -> (serde_json::Value, u64) {
    let s = &app.service;
    let Some(name) = rollout else {
        return (
            serde_json::json!({"rollouts": s.status(None).await.unwrap_or_default()}),
            after,
        );
    };
    let status = s.status(Some(name)).await.ok().and_then(|mut v| v.pop());
    let points = s.series_of(name, after);
    let next = points.last().map_or(after, |p| p.seq);
    (
        serde_json::json!({
            "status": status,
            "series": points,
            "audit": s.recent_history(name, 8),
            "audit_head": s.audit_head(),
            "now_ms": crate::service::now_ms(),
        }),
        next,
    )
}
