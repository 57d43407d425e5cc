//! Signing in with the company's OpenID Connect provider: the page by the
//! authorization code flow with PKCE (`/auth/login` → the provider →
//! `/auth/callback`), which ends in a signed session cookie; the CLI by
//! the device flow, which needs only where the provider is
//! (`/auth/config`). Every route answers 404 when `serve --oidc` is not
//! given.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::auth::session::{now_secs, pkce, random, LoginState, LOGIN_TTL};
use crate::auth::{AuthError, Oidc, Sessions};

use super::state::{cookie_of, ApiError, App, CSRF_HEADER};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/auth/config", get(config))
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/session", get(session))
        .route("/auth/logout", post(logout))
}

fn not_configured() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": "sign-in with OpenID Connect is not configured (serve --oidc FILE); use a token"})),
    )
        .into_response()
}

fn configured(app: &App) -> Option<(&Oidc, &Sessions)> {
    Some((app.oidc.as_deref()?, app.sessions.as_deref()?))
}

/// What the CLI and the page need to know to sign in: public.
async fn config(State(app): State<App>) -> Response {
    let Some((oidc, _)) = configured(&app) else {
        return not_configured();
    };
    Json(serde_json::json!({
        "issuer": oidc.meta.issuer,
        "client_id": oidc.config.client_id,
        "cli_client_id": oidc.config.cli_client_id,
        "scopes": oidc.config.scopes,
    }))
    .into_response()
}

/// To the provider, with a state, a nonce and a PKCE challenge that the
/// answer must match; they wait in a signed cookie of their own.
async fn login(State(app): State<App>) -> Response {
    let Some((oidc, sessions)) = configured(&app) else {
        return not_configured();
    };
    let (verifier, challenge) = pkce();
    let pending = LoginState {
        state: random(24),
        nonce: random(24),
        verifier,
        expires: now_secs() + LOGIN_TTL.as_secs(),
    };
    let url = oidc.authorize_url(&pending.state, &pending.nonce, &challenge);
    let set = sessions.set_cookie(
        sessions.login_cookie_name(),
        &sessions.seal("login", &pending),
        LOGIN_TTL,
        false,
    );
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, url), (header::SET_COOKIE, set)],
    )
        .into_response()
}

#[derive(Deserialize)]
struct Answer {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn refused(status: StatusCode, why: String) -> Response {
    tracing::warn!(%why, "sign-in refused");
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("Sign-in refused: {why}\n\nStart again at /auth/login.\n"),
    )
        .into_response()
}

/// The provider's answer: the code exchanged for an ID token, checked
/// (nonce included), the groups mapped to a role; then a session.
async fn callback(
    State(app): State<App>,
    Query(answer): Query<Answer>,
    headers: HeaderMap,
) -> Response {
    let Some((oidc, sessions)) = configured(&app) else {
        return not_configured();
    };
    if let Some(error) = answer.error {
        let what = answer.error_description.unwrap_or_default();
        return refused(
            StatusCode::BAD_REQUEST,
            format!("the provider said {error}: {what}"),
        );
    }
    let pending = cookie_of(&headers, sessions.login_cookie_name()).and_then(|c| sessions.login(c));
    let Some(pending) = pending else {
        return refused(
            StatusCode::BAD_REQUEST,
            "no sign-in in progress from this browser (or it took over 10 minutes)".into(),
        );
    };
    let same_state = answer.state.as_deref().is_some_and(|s| {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            s.as_bytes(),
            pending.state.as_bytes(),
        ))
    });
    if !same_state {
        return refused(
            StatusCode::BAD_REQUEST,
            "the answer's state is not this sign-in's".into(),
        );
    }
    let Some(code) = answer.code else {
        return refused(StatusCode::BAD_REQUEST, "the answer has no code".into());
    };
    let token = match oidc.exchange(&code, &pending.verifier).await {
        Ok(t) => t,
        Err(e) => return refused(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let who = match oidc.verify(&token, Some(&pending.nonce)).await {
        Ok(who) => who,
        Err(e) => return refused(StatusCode::UNAUTHORIZED, e.to_string()),
    };
    let principal = match oidc.principal(&who) {
        Ok(p) => p,
        Err(e) => return refused(StatusCode::FORBIDDEN, e.to_string()),
    };
    tracing::info!(name = %principal.name, role = ?principal.role, teams = ?principal.teams, "signed in");
    let session = sessions.start(&principal);
    let set = sessions.set_cookie(
        sessions.session_cookie_name(),
        &sessions.seal("session", &session),
        sessions.ttl,
        true,
    );
    let clear = sessions.clear_cookie(sessions.login_cookie_name());
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/")]).into_response();
    for c in [set, clear] {
        if let Ok(v) = c.parse() {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// Who the page's session is, and its CSRF secret for changes.
async fn session(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    if configured(&app).is_none() {
        return Ok(not_configured());
    }
    let s = app
        .session(&headers)
        .ok_or(ApiError::Auth(AuthError::Missing))?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "name": s.name,
            "role": s.role,
            "teams": s.teams,
            "expires": s.expires,
            "csrf": s.csrf,
        })),
    )
        .into_response())
}

/// Ends the page's session (a change: the CSRF header is needed).
async fn logout(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some((_, sessions)) = configured(&app) else {
        return Ok(not_configured());
    };
    let s = app
        .session(&headers)
        .ok_or(ApiError::Auth(AuthError::Missing))?;
    if !s.csrf_matches(headers.get(CSRF_HEADER).map(|v| v.as_bytes())) {
        return Err(AuthError::Csrf.into());
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            sessions.clear_cookie(sessions.session_cookie_name()),
        )],
    )
        .into_response())
}
