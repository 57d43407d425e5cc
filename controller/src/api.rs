//! The HTTP API: `GET /v1/config` for the filters, and the endpoints the CLI
//! uses. Every endpoint but `/healthz` needs a bearer token whose role
//! allows it, checked before any body is read; bodies are read only up to
//! their limit.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::auth::{Auth, AuthError, Principal, Role};
use crate::service::{Command, RegistryError, Service, ServiceError};
use crate::spec::{RolloutSpec, SpecError};
use crate::yaml_guard;

/// Largest body of a command (`{"reason": …}`).
const MAX_REASON_BODY: usize = 8 * 1024;

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
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("unknown action {0:?}: pause, resume, promote or abort")]
    UnknownAction(String),
    #[error("unknown flag state {0:?}: on or off")]
    UnknownFlagState(String),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body: {0}")]
    BadBody(String),
    #[error(
        "this controller is cut off from the store: its config may be out of date; ask another"
    )]
    CutOff,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Auth(AuthError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::Spec(_)
            | ApiError::UnknownAction(_)
            | ApiError::UnknownFlagState(_)
            | ApiError::BadBody(_)
            | ApiError::Registry(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::CutOff => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Service(ServiceError::NotFound(_)) => StatusCode::NOT_FOUND,
            ApiError::Service(ServiceError::Conflict { .. } | ServiceError::Refused(_)) => {
                StatusCode::CONFLICT
            }
            // Refused before anything was written: the caller may retry,
            // and will reach the new leader.
            ApiError::Service(ServiceError::Store(crate::store::StoreError::Fenced(_))) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Service(ServiceError::Store(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut resp =
            (status, Json(serde_json::json!({"error": self.to_string()}))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl App {
    pub(crate) fn require(&self, headers: &HeaderMap, role: Role) -> Result<Principal, ApiError> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Ok(self.auth.require(authorization, role)?)
    }
}

/// Reads at most `limit` bytes of `body`; call only after authorising. A
/// body announced larger than the limit is refused before a byte is read.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(limit));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| ApiError::TooLarge(limit))
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/health", get(health))
        .route("/v1/config", get(config))
        .route("/v1/rollouts", get(list).post(apply))
        .route("/v1/rollouts/{name}", get(one).delete(delete))
        .route("/v1/rollouts/{name}/history", get(history))
        .route("/v1/rollouts/{name}/{action}", post(command))
        .route("/v1/flags", get(flags))
        .route("/v1/flags/{key}/{state}", post(switch_flag))
        .route("/ofrep/v1/evaluate/flags", post(crate::ofrep::evaluate_all))
        .route(
            "/ofrep/v1/evaluate/flags/{key}",
            post(crate::ofrep::evaluate_one),
        )
        .route("/v1/proxies", get(proxies))
        .route("/v1/fleet/proxies", get(fleet_proxies))
        .route("/v1/webhooks", get(webhooks))
        .route("/v1/audit/head", get(head))
        .route("/v1/audit/verify", get(verify))
        .merge(crate::web::routes())
        // Handlers read bodies themselves, after the token and up to their
        // own limits.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::forward::to_leader,
        ))
        .with_state(app)
}

/// A peer controller asking which proxies poll this one: only with the
/// fleet's peer secret (derived from the audit key all of them share).
async fn fleet_proxies(State(app): State<App>, headers: HeaderMap) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer_token)
        .unwrap_or("");
    match app.service.fleet() {
        Some(role) if role.is_peer(given) => {
            Json(app.service.registry().local(crate::service::now_ms())).into_response()
        }
        _ => StatusCode::FORBIDDEN.into_response(),
    }
}

/// For load balancers and Envoy's health checks: a controller cut off from
/// its fleet's store is taken out, so that polls reach one that is current.
async fn healthz(State(app): State<App>) -> Response {
    if app.service.in_touch_with_store() {
        "ok\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "cut off from the store\n").into_response()
    }
}

async fn config(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    let who = app.require(&headers, Role::Proxy)?;
    // The proxy keeps its last weights and asks again (another controller,
    // through its cluster): better than weights an abort has overtaken.
    if !app.service.in_touch_with_store() {
        return Err(ApiError::CutOff);
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    // Only proxies (or anyone, on an open loopback controller) register:
    // a viewer looking at the config is not a proxy to wait for.
    if who.role == Role::Proxy || matches!(*app.auth, Auth::Open) {
        let applied = text("x-dimmer-revision").parse().unwrap_or(0);
        app.service
            .record_poll(text("x-dimmer-proxy-id"), applied)?;
    }
    let doc = app.service.config_doc();
    let etag = format!("\"r{}\"", doc.revision);
    if text("if-none-match") == etag {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(([(header::ETAG, etag)], Json(&*doc)).into_response())
}

async fn list(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer)?;
    Ok(Json(app.service.status(None).await?).into_response())
}

async fn one(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer)?;
    let mut views = app.service.status(Some(&name)).await?;
    Ok(Json(views.pop()).into_response())
}

#[derive(Deserialize, Default)]
struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    restart: bool,
}

async fn apply(
    State(app): State<App>,
    Query(q): Query<ApplyQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = app.require(&headers, Role::Operator)?;
    let bytes = read_body(&headers, body, yaml_guard::MAX_BYTES).await?;
    let text = String::from_utf8(bytes).map_err(|_| ApiError::BadBody("not UTF-8".into()))?;
    let spec = RolloutSpec::from_yaml(&text)?;
    if q.dry_run {
        return Ok(
            Json(serde_json::json!({"valid": true, "spec": spec.authored()})).into_response(),
        );
    }
    Ok(Json(app.service.apply(spec, &who.name, q.restart).await?).into_response())
}

#[derive(Deserialize, Default)]
struct ReasonBody {
    #[serde(default)]
    reason: String,
}

async fn reason_of(headers: &HeaderMap, body: Body) -> Result<String, ApiError> {
    let bytes = read_body(headers, body, MAX_REASON_BODY).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok("no reason given".into());
    }
    let b: ReasonBody =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::BadBody(e.to_string()))?;
    Ok(Some(b.reason)
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "no reason given".into()))
}

async fn command(
    State(app): State<App>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = app.require(&headers, Role::Operator)?;
    let cmd = match action.as_str() {
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "promote" => Command::Promote,
        "abort" => Command::Abort,
        other => return Err(ApiError::UnknownAction(other.to_owned())),
    };
    let reason = reason_of(&headers, body).await?;
    Ok(Json(app.service.command(&name, cmd, &who.name, &reason).await?).into_response())
}

async fn delete(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = app.require(&headers, Role::Admin)?;
    let reason = reason_of(&headers, body).await?;
    app.service.delete(&name, &who.name, &reason).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn history(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer)?;
    Ok(Json(app.service.history(&name)?).into_response())
}

#[derive(Deserialize, Default)]
struct FlagsQuery {
    /// Days a fully rolled-out temporary flag may stay before it is marked
    /// ready for removal from the code.
    #[serde(default)]
    ready_after_days: Option<u32>,
}

async fn flags(
    State(app): State<App>,
    Query(q): Query<FlagsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer)?;
    let ready_after_ms = q
        .ready_after_days
        .map_or(crate::flag_spec::READY_AFTER.as_millis() as u64, |d| {
            u64::from(d) * 24 * 3600 * 1000
        });
    Ok(Json(app.service.flags(ready_after_ms).await?).into_response())
}

async fn switch_flag(
    State(app): State<App>,
    Path((key, state)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = app.require(&headers, Role::Operator)?;
    let on = match state.as_str() {
        "on" => true,
        "off" => false,
        other => return Err(ApiError::UnknownFlagState(other.to_owned())),
    };
    let reason = reason_of(&headers, body).await?;
    Ok(Json(app.service.set_flag(&key, on, &who.name, &reason).await?).into_response())
}

async fn proxies(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer)?;
    Ok(Json(app.service.proxies()).into_response())
}

async fn webhooks(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer)?;
    Ok(Json(app.service.webhook_stats()).into_response())
}

async fn head(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer)?;
    Ok(Json(app.service.audit_head()).into_response())
}

async fn health(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer)?;
    let now = app.service.check_source().await;
    Ok(Json(serde_json::json!({
        "metrics_source": app.service.source_health(),
        "metrics_source_answers": now.is_ok(),
        "metrics_source_error": now.err(),
        "proxies_known": app.service.proxies().len(),
        "proxies_polling_here": app.service.registry().len(),
        "audit_head": app.service.audit_head(),
        // In a fleet: whether this controller decides, and who does.
        "leading": app.service.is_leader(),
        "leader": app.service.fleet().map_or(Some(String::new()), |r| r.leader_url()),
        "in_touch_with_store": app.service.in_touch_with_store(),
    }))
    .into_response())
}

async fn verify(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.require(&headers, Role::Admin)?;
    Ok(match app.service.verify_audit()? {
        Ok(n) => Json(serde_json::json!({"ok": true, "records": n})).into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"ok": false, "error": e.to_string()})),
        )
            .into_response(),
    })
}

/// The controller's own state as Prometheus text (`crate::self_metrics`).
async fn metrics(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer)?;
    let s = &app.service;
    let now = crate::service::now_ms();
    let rollouts = s.status(None).await?;
    let records = s.all_history()?;
    let head = s.audit_head();
    let proxies: Vec<(String, u64, u64)> = s
        .proxies()
        .into_iter()
        .map(|p| (p.id, p.revision, p.last_seen_ms))
        .collect();
    let webhooks: Vec<_> = s
        .webhook_stats()
        .into_iter()
        .map(|(url, st)| (url, st.delivered, st.retried, st.failed, st.dropped))
        .collect();
    let text = crate::self_metrics::render(&crate::self_metrics::Inputs {
        now_ms: now,
        rollouts: &rollouts,
        records: &records,
        rollbacks: &s.rollbacks(),
        stale_proxies: rollouts
            .iter()
            .map(|v| v.proxies_stale_count)
            .max()
            .unwrap_or(0),
        proxies: &proxies,
        revision: s.config_doc().revision,
        audit_head: (head.seq, &head.hash),
        source: &s.source_health(),
        webhooks: &webhooks,
    });
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
