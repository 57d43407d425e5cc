//! Rollouts and flags: apply (one spec, or a file of several as one
//! change), read, act on (pause, resume, promote, abort), delete, their
//! history, flags switched on or off, and a directory of specs synced.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use dimmer_decide::spec::{document_count, yaml_guard, RolloutSpec};

use crate::service::Command;

use super::state::{read_body, ApiError, App};
use crate::auth::{AuthError, Role};

/// Largest body of a command (`{"reason": …}`).
const MAX_REASON_BODY: usize = 8 * 1024;

pub(super) async fn list(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer).await?;
    Ok(Json(app.service.status(None).await?).into_response())
}

pub(super) async fn one(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer).await?;
    let mut views = app.service.status(Some(&name)).await?;
    Ok(Json(views.pop()).into_response())
}

#[derive(Deserialize, Default)]
pub(super) struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    restart: bool,
}

pub(super) async fn apply(
    State(app): State<App>,
    Query(q): Query<ApplyQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = app.require(&headers, Role::Operator).await?;
    let bytes = read_body(&headers, body, yaml_guard::MAX_BYTES).await?;
    let text = String::from_utf8(bytes).map_err(|_| ApiError::BadBody("not UTF-8".into()))?;
    // Several documents: one change, all or none, answered with a list.
    if document_count(&text) > 1 {
        let specs = RolloutSpec::from_yaml_documents(&text)?;
        if q.dry_run {
            let authored: Vec<_> = specs.iter().map(RolloutSpec::authored).collect();
            return Ok(Json(serde_json::json!({"valid": true, "specs": authored})).into_response());
        }
        if q.restart {
            return Err(ApiError::BadBody(
                "restart takes one spec, not a file of several".into(),
            ));
        }
        for spec in &specs {
            App::may_change(&who, &spec.name, spec.team())?;
            app.may_change_named(&who, &spec.name).await?;
        }
        return Ok(Json(app.service.apply_many(specs, &who.name).await?).into_response());
    }
    let spec = RolloutSpec::from_yaml(&text)?;
    if !q.dry_run {
        // Its new team and, if it exists, its present one.
        App::may_change(&who, &spec.name, spec.team())?;
        app.may_change_named(&who, &spec.name).await?;
    }
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

pub(super) async fn command(
    State(app): State<App>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = app.require(&headers, Role::Operator).await?;
    let cmd = match action.as_str() {
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "promote" => Command::Promote,
        "abort" => Command::Abort,
        other => return Err(ApiError::UnknownAction(other.to_owned())),
    };
    app.may_change_named(&who, &name).await?;
    let reason = reason_of(&headers, body).await?;
    Ok(Json(app.service.command(&name, cmd, &who.name, &reason).await?).into_response())
}

pub(super) async fn delete(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = app.require(&headers, Role::Admin).await?;
    app.may_change_named(&who, &name).await?;
    let reason = reason_of(&headers, body).await?;
    app.service.delete(&name, &who.name, &reason).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn history(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer).await?;
    Ok(Json(app.service.history(&name)?).into_response())
}

#[derive(Deserialize, Default)]
pub(super) struct FlagsQuery {
    /// Days a fully rolled-out temporary flag may stay before it is marked
    /// ready for removal from the code.
    #[serde(default)]
    ready_after_days: Option<u32>,
}

pub(super) async fn flags(
    State(app): State<App>,
    Query(q): Query<FlagsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer).await?;
    let ready_after_ms = q.ready_after_days.map_or(
        dimmer_decide::spec::flag::READY_AFTER.as_millis() as u64,
        |d| u64::from(d) * 24 * 3600 * 1000,
    );
    Ok(Json(app.service.flags(ready_after_ms).await?).into_response())
}

pub(super) async fn switch_flag(
    State(app): State<App>,
    Path((key, state)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = app.require(&headers, Role::Operator).await?;
    let on = match state.as_str() {
        "on" => true,
        "off" => false,
        other => return Err(ApiError::UnknownFlagState(other.to_owned())),
    };
    app.may_change_named(&who, &key).await?;
    let reason = reason_of(&headers, body).await?;
    Ok(Json(app.service.set_flag(&key, on, &who.name, &reason).await?).into_response())
}

#[derive(Deserialize, Default)]
pub(super) struct SyncQuery {
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
struct SyncBody {
    files: Vec<crate::service::SpecFile>,
}

/// Largest body of a sync: every file within its own spec limit, together
/// within this.
const MAX_SYNC_BODY: usize = 4 << 20;

/// `POST /v1/sync`: a directory's specs, converged on (`dimmer sync`), or
/// what that would do (`dry_run`, `dimmer diff`). Pruning deletes, so it
/// needs the role that deletes.
pub(super) async fn sync(
    State(app): State<App>,
    Query(q): Query<SyncQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let needed = if q.prune && !q.dry_run {
        Role::Admin
    } else {
        Role::Operator
    };
    let who = app.require(&headers, needed).await?;
    // A directory is the truth for every team in it: only an unscoped
    // token may converge on one.
    if who.teams.is_some() {
        return Err(AuthError::OutOfScope {
            name: who.name.clone(),
            teams: who.teams.as_deref().unwrap_or_default().join(", "),
            what: "a sync (a whole directory)".into(),
            owner: "every team in it".into(),
        }
        .into());
    }
    let bytes = read_body(&headers, body, MAX_SYNC_BODY).await?;
    let b: SyncBody =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::BadBody(e.to_string()))?;
    let report = app
        .service
        .sync(b.files, q.prune, q.dry_run, &who.name)
        .await?;
    Ok(Json(report).into_response())
}
