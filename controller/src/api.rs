//! The HTTP API: `GET /v1/config` for the filters, and the endpoints the CLI
//! uses. Every endpoint but `/healthz` needs a bearer token whose role allows it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::audit;
use crate::auth::{Auth, AuthError, Role};
use crate::service::{Command, Service, ServiceError};
use crate::spec::{RolloutSpec, SpecError};

#[derive(Clone)]
pub struct App {
    pub service: Arc<Service>,
    pub auth: Arc<Auth>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("unknown action {0:?}: pause, resume, promote or abort")]
    UnknownAction(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Auth(AuthError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::Spec(_) | ApiError::UnknownAction(_) => StatusCode::BAD_REQUEST,
            ApiError::Service(ServiceError::NotFound(_)) => StatusCode::NOT_FOUND,
            ApiError::Service(ServiceError::Conflict { .. }) => StatusCode::CONFLICT,
            ApiError::Service(ServiceError::Store(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(serde_json::json!({"error": self.to_string()}))).into_response()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/config", get(config))
        .route("/v1/rollouts", get(list).post(apply))
        .route("/v1/rollouts/{name}", get(one).delete(delete))
        .route("/v1/rollouts/{name}/history", get(history))
        .route("/v1/rollouts/{name}/{action}", post(command))
        .route("/v1/proxies", get(proxies))
        .route("/v1/audit/verify", get(verify))
        .with_state(app)
}

async fn config(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.auth.require(bearer(&headers), Role::Viewer)?;
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let applied = text("x-dimmer-revision").parse().unwrap_or(0);
    app.service.record_poll(text("x-dimmer-proxy-id"), applied);
    let doc = app.service.config_doc().await;
    let etag = format!("\"r{}\"", doc.revision);
    if text("if-none-match") == etag {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(([(header::ETAG, etag)], Json(doc)).into_response())
}

async fn list(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.auth.require(bearer(&headers), Role::Viewer)?;
    Ok(Json(app.service.status(None).await?).into_response())
}

async fn one(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.auth.require(bearer(&headers), Role::Viewer)?;
    Ok(Json(app.service.status(Some(&name)).await?.remove(0)).into_response())
}

#[derive(Deserialize, Default)]
struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
}

async fn apply(
    State(app): State<App>,
    Query(q): Query<ApplyQuery>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    let who = app.auth.require(bearer(&headers), Role::Operator)?;
    let spec = RolloutSpec::from_yaml(&body)?;
    if q.dry_run {
        return Ok(Json(serde_json::json!({"valid": true, "spec": spec})).into_response());
    }
    Ok(Json(app.service.apply(spec, &who.name).await?).into_response())
}

#[derive(Deserialize, Default)]
struct ReasonBody {
    #[serde(default)]
    reason: String,
}

fn reason_of(body: Option<Json<ReasonBody>>) -> String {
    body.map(|Json(b)| b.reason)
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "no reason given".into())
}

async fn command(
    State(app): State<App>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Option<Json<ReasonBody>>,
) -> Result<Response, ApiError> {
    let who = app.auth.require(bearer(&headers), Role::Operator)?;
    let cmd = match action.as_str() {
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "promote" => Command::Promote,
        "abort" => Command::Abort,
        other => return Err(ApiError::UnknownAction(other.to_owned())),
    };
    Ok(Json(
        app.service
            .command(&name, cmd, &who.name, &reason_of(body))
            .await?,
    )
    .into_response())
}

async fn delete(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Option<Json<ReasonBody>>,
) -> Result<Response, ApiError> {
    let who = app.auth.require(bearer(&headers), Role::Admin)?;
    app.service
        .delete(&name, &who.name, &reason_of(body))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn history(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.auth.require(bearer(&headers), Role::Viewer)?;
    Ok(Json(app.service.history(&name)?).into_response())
}

async fn proxies(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.auth.require(bearer(&headers), Role::Viewer)?;
    Ok(Json(app.service.proxies()).into_response())
}

async fn verify(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.auth.require(bearer(&headers), Role::Admin)?;
    let records = app.service.audit_all()?;
    Ok(match audit::verify(&records) {
        Ok(n) => Json(serde_json::json!({"ok": true, "records": n})).into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"ok": false, "error": e.to_string()})),
        )
            .into_response(),
    })
}
