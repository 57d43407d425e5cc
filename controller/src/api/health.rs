//! The controller's own health: `/v1/health`, webhook deliveries, the audit
//! head and its verification, and `/metrics`.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::state::{ApiError, App};
use crate::auth::Role;

pub(super) async fn webhooks(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer).await?;
    Ok(Json(app.service.webhook_stats()).into_response())
}

pub(super) async fn head(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer).await?;
    Ok(Json(app.service.audit_head()).into_response())
}

pub(super) async fn health(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer).await?;
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
        // A controller whose audit key does not sign the chain writes nothing.
        "audit_key_matches": app.service.key_problem().is_none(),
        "audit_key_problem": app.service.key_problem(),
    }))
    .into_response())
}

pub(super) async fn verify(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Admin).await?;
    // Checkpoints can be verified only with the chain's key: this
    // controller says its key is the wrong one, not that records are forged.
    if let Some(why) = app.service.key_problem() {
        let links = crate::store::audit::verify(&app.service.all_history()?);
        return Ok((
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "ok": false,
                "links_intact": links.is_ok(),
                "error": format!("cannot verify the checkpoints here: {why}"),
            })),
        )
            .into_response());
    }
    Ok(match app.service.verify_audit()? {
        Ok(n) => Json(serde_json::json!({"ok": true, "records": n})).into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"ok": false, "error": e.to_string()})),
        )
            .into_response(),
    })
}

/// The controller's own state as Prometheus text (`super::self_metrics`).
pub(super) async fn metrics(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer).await?;
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
    let text = super::self_metrics::render(&super::self_metrics::Inputs {
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
