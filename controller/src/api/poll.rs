//! What the proxies and the fleet's controllers call: the config the
//! filters poll, the proxies seen, and a peer's ask for them.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::state::{ApiError, App};
use crate::auth::{Auth, AuthError, Principal, Role};
use crate::tls::PeerCert;

/// A peer controller asking which proxies poll this one: only with the
/// fleet's peer secret (derived from the audit key all of them share).
pub(super) async fn fleet_proxies(State(app): State<App>, headers: HeaderMap) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::tokens::bearer_token)
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
pub(super) async fn healthz(State(app): State<App>) -> Response {
    if app.service.in_touch_with_store() {
        "ok\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "cut off from the store\n").into_response()
    }
}

/// For a liveness probe: the process answers, nothing more. A controller
/// cut off from etcd is alive (it must not be restarted for it, it catches
/// up when the partition heals); `/healthz` takes it out of the polls.
pub(super) async fn livez() -> &'static str {
    "alive\n"
}

pub(super) async fn config(
    State(app): State<App>,
    peer: Option<Extension<PeerCert>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The name of the certificate a proxy polls by, which its registry id
    // is bound to.
    let mut cert_name: Option<String> = None;
    let who = match peer {
        // Mutual TLS: a client certificate the --client-ca verified is a
        // proxy, without a token; a token, when sent, still decides.
        Some(Extension(PeerCert(Some(cert)))) if !headers.contains_key(header::AUTHORIZATION) => {
            let name = cert.name.clone().unwrap_or_else(|| "(no name)".into());
            cert_name = Some(name.clone());
            if app.revoked.contains(&cert.fingerprint) {
                return Err(AuthError::Revoked {
                    name,
                    fingerprint: cert.fingerprint,
                }
                .into());
            }
            Principal {
                name: format!(
                    "proxy certificate {name} ({})",
                    &cert.fingerprint[..16.min(cert.fingerprint.len())]
                ),
                role: Role::Proxy,
                teams: None,
            }
        }
        _ => app.require(&headers, Role::Proxy).await?,
    };
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    // A proxy (it names itself) with a viewer's or an operator's token would
    // take the config yet never count as a proxy, and spread a stronger
    // token than it needs: refused, saying which token it was.
    let proxy = text("x-dimmer-proxy-id");
    if !proxy.is_empty() && who.role != Role::Proxy && !matches!(*app.auth, Auth::Open) {
        let err = AuthError::NotAProxy {
            proxy: proxy.chars().take(64).collect(),
            name: who.name,
            role: who.role,
        };
        warn_now_and_then(&err);
        return Err(err.into());
    }
    // The proxy keeps its last weights and asks again (another controller,
    // through its cluster): better than weights an abort has overtaken.
    if !app.service.in_touch_with_store() {
        return Err(ApiError::CutOff);
    }
    // Only proxies (or anyone, on an open loopback controller) register:
    // a viewer looking at the config is not a proxy to wait for.
    if who.role == Role::Proxy || matches!(*app.auth, Auth::Open) {
        let applied = text("x-dimmer-revision").parse().unwrap_or(0);
        // By certificate, the proxy is known by the certificate's name: the
        // id it gives itself only tells apart proxies sharing one, and
        // cannot pass for another certificate's.
        let id = match (&cert_name, text("x-dimmer-proxy-id")) {
            (None, id) => id.to_owned(),
            (Some(name), id) if id.is_empty() || id == name => name.clone(),
            (Some(name), id) => format!("{name}/{id}"),
        };
        app.service.record_poll(&id, applied)?;
    }
    let doc = app.service.config_doc();
    let etag = format!("\"r{}\"", doc.revision);
    if text("if-none-match") == etag {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(([(header::ETAG, etag)], Json(&*doc)).into_response())
}

/// Logs a misconfigured proxy at most every 10 s: every proxy of a fleet
/// polls each second, and one line says it.
fn warn_now_and_then(err: &AuthError) {
    static LAST_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let last = LAST_MS.load(std::sync::atomic::Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000 {
        LAST_MS.store(now, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(error = %err, "poll refused");
    }
}

pub(super) async fn proxies(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Viewer).await?;
    Ok(Json(app.service.proxies()).into_response())
}
