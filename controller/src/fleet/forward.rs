//! In a fleet, a mutating call (apply, delete, pause, resume, promote,
//! abort, a flag switch) that reaches a follower is applied by the leader:
//! the follower forwards it, token and body as they came, and answers with
//! the leader's answer — which the leader gives only once the change is
//! durable in etcd. No leader known, or the leader not reachable: 503 with
//! `retry-after` (nothing was applied; `dimmer` retries those). Sent but
//! not answered: 504 (it may have been applied: not retried).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use std::sync::Arc;

use crate::service::Service;

/// Marks a forwarded call, so a stale follower never forwards twice.
const FORWARDED: &str = "x-dimmer-forwarded";
/// The largest body forwarded: a spec's own limit is below it.
const MAX_FORWARDED: usize = 1 << 20;

fn mutating(req: &Request) -> bool {
    let path = req.uri().path();
    matches!(*req.method(), Method::POST | Method::DELETE | Method::PUT) && path.starts_with("/v1/")
}

fn unavailable(why: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [("retry-after", "1")],
        Json(serde_json::json!({ "error": why })),
    )
        .into_response()
}

pub async fn to_leader(State(service): State<Arc<Service>>, req: Request, next: Next) -> Response {
    let Some(role) = service.fleet() else {
        return next.run(req).await;
    };
    if !mutating(&req) {
        return next.run(req).await;
    }
    // A leader cut off from etcd cannot make anything durable: say so at
    // once (it will step down), rather than after a write's timeout.
    if !role.in_touch() {
        return unavailable("this controller is cut off from the store; retry");
    }
    if role.leading() {
        return next.run(req).await;
    }
    if req.headers().contains_key(FORWARDED) {
        return unavailable("this controller is not the leader either; retry");
    }
    let Some(leader) = role.leader_url() else {
        return unavailable("no leader elected yet; retry");
    };
    let url = format!(
        "{}{}",
        leader.trim_end_matches('/'),
        req.uri().path_and_query().map_or("", |p| p.as_str())
    );
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_FORWARDED).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response();
    };
    let mut out = role
        .peers
        .request(parts.method.clone(), &url)
        .timeout(std::time::Duration::from_secs(15))
        .header(FORWARDED, "1")
        .body(body.to_vec());
    // Who asks goes along: a token, or the page's session and its CSRF
    // header (signed with the fleet's shared key, so the leader knows it).
    for name in ["authorization", "content-type", "cookie", "x-dimmer-csrf"] {
        if let Some(v) = parts.headers.get(name) {
            out = out.header(name, v);
        }
    }
    match out.send().await {
        Ok(resp) => {
            let status = resp.status();
            // The leader's own "retry" travels back with its answer.
            let kept: Vec<_> = ["content-type", "retry-after"]
                .into_iter()
                .filter_map(|name| Some((name, resp.headers().get(name)?.clone())))
                .collect();
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = status;
            for (name, value) in kept {
                r.headers_mut().insert(name, value);
            }
            if let Ok(v) = HeaderValue::from_str(&leader) {
                r.headers_mut().insert("x-dimmer-leader", v);
            }
            r
        }
        // Not connected: the leader never saw it, a retry is safe.
        Err(e) if e.is_connect() => {
            unavailable(&format!("cannot reach the leader {leader}: {e}; retry"))
        }
        // Sent but not answered: it may have been applied.
        Err(e) => (
            StatusCode::GATEWAY_TIMEOUT,
            Json(serde_json::json!({
                "error": format!("the leader {leader} did not answer ({e}): the call may have been applied; check before repeating it")
            })),
        )
            .into_response(),
    }
}
