//! The HTTP API: `GET /v1/config` for the filters, and the endpoints the CLI
//! uses. Every endpoint but `/healthz`, `/livez` and the sign-in's own
//! (`/auth/…`) needs a bearer token (or the page's session) whose role
//! allows it, checked before any body is read; bodies are read only up to
//! their limit. The router is the one place that names every handler.

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::fleet::to_leader;

use super::health::{head, health, metrics, verify, webhooks};
use super::poll::{config, fleet_proxies, healthz, livez, proxies};
use super::rollouts::{apply, command, delete, flags, history, list, one, switch_flag, sync};
use super::state::App;
use super::{login, ofrep, warning, web};

pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/metrics", get(metrics))
        .route("/v1/health", get(health))
        .route("/v1/config", get(config))
        .route("/v1/rollouts", get(list).post(apply))
        .route("/v1/rollouts/{name}", get(one).delete(delete))
        .route("/v1/rollouts/{name}/history", get(history))
        .route("/v1/rollouts/{name}/{action}", post(command))
        .route("/v1/sync", post(sync))
        .route("/v1/flags", get(flags))
        .route("/v1/flags/{key}/{state}", post(switch_flag))
        .route("/ofrep/v1/evaluate/flags", post(ofrep::evaluate_all))
        .route("/ofrep/v1/evaluate/flags/{key}", post(ofrep::evaluate_one))
        .route("/v1/proxies", get(proxies))
        .route("/v1/fleet/proxies", get(fleet_proxies))
        .route("/v1/webhooks", get(webhooks))
        .route("/v1/audit/head", get(head))
        .route("/v1/audit/verify", get(verify))
        .merge(web::routes())
        .merge(login::routes())
        // Handlers read bodies themselves, after the token and up to their
        // own limits.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            app.service.clone(),
            to_leader,
        ))
        .layer(axum::middleware::map_response_with_state(
            app.service.clone(),
            warning::add,
        ))
        .layer(axum::middleware::map_response(super::headers::secure))
        .with_state(app)
}
