//! The API's state and errors: what every handler is given ([`App`]), the
//! error every handler answers with, the role check and the bounded body
//! read every handler uses.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dimmer_decide::spec::SpecError;

use crate::service::{RegistryError, Service, ServiceError};

use super::streams::{StreamLimits, Streams};
use crate::auth::oidc::looks_like_jwt;
use crate::auth::session::cookie;
use crate::auth::tokens::{bearer_token, permit};
use crate::auth::{Auth, AuthError, Oidc, OidcError, Principal, Revoked, Role, Session, Sessions};

#[derive(Clone)]
pub struct App {
    pub service: Arc<Service>,
    pub auth: Arc<Auth>,
    /// The live streams open, and who may open one more.
    pub streams: Arc<Streams>,
    /// People's sign-in, when `serve --oidc` is given.
    pub oidc: Option<Arc<Oidc>>,
    /// The page's signed sessions (with `oidc`).
    pub sessions: Option<Arc<Sessions>>,
    /// Proxy certificates revoked (`--revoked-certs`).
    pub revoked: Arc<Revoked>,
}

/// The header a change from the page carries: its session's CSRF secret.
pub const CSRF_HEADER: &str = "x-dimmer-csrf";

impl App {
    pub fn new(service: Arc<Service>, auth: Auth) -> App {
        App {
            service,
            auth: Arc::new(auth),
            streams: Arc::new(Streams::new(StreamLimits::default())),
            oidc: None,
            sessions: None,
            revoked: Arc::new(Revoked::none()),
        }
    }

    pub fn with_oidc(mut self, oidc: Oidc, sessions: Sessions) -> App {
        self.oidc = Some(Arc::new(oidc));
        self.sessions = Some(Arc::new(sessions));
        self
    }
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
            ApiError::Auth(
                AuthError::Forbidden { .. }
                | AuthError::OutOfScope { .. }
                | AuthError::NotAProxy { .. }
                | AuthError::Csrf
                | AuthError::Revoked { .. }
                | AuthError::Oidc(OidcError::NoRole { .. }),
            ) => StatusCode::FORBIDDEN,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::Spec(_)
            | ApiError::UnknownAction(_)
            | ApiError::UnknownFlagState(_)
            | ApiError::BadBody(_)
            | ApiError::Service(ServiceError::BadSpec(_))
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
            // This controller's audit key does not sign the chain: it
            // serves reads only; retrying here cannot help.
            ApiError::Service(ServiceError::Store(crate::store::StoreError::KeyMismatch {
                ..
            })) => StatusCode::CONFLICT,
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
    /// Refuses `who` a change to `what` that belongs to `team`, unless its
    /// scope covers that team (an unscoped token covers every one).
    pub(crate) fn may_change(
        who: &Principal,
        what: &str,
        team: Option<&str>,
    ) -> Result<(), ApiError> {
        if who.may_change(team) {
            return Ok(());
        }
        Err(AuthError::OutOfScope {
            name: who.name.clone(),
            teams: who.teams.as_deref().unwrap_or_default().join(", "),
            what: what.to_owned(),
            owner: team.map_or("no team".to_owned(), |t| format!("team {t}")),
        }
        .into())
    }

    /// The same for an existing rollout or flag, by name; nothing to refuse
    /// when there is none (the service says it is not found).
    pub(crate) async fn may_change_named(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<(), ApiError> {
        if who.teams.is_none() {
            return Ok(());
        }
        match self.service.team_of(name).await {
            Some(team) => Self::may_change(who, name, team.as_deref()),
            None => Ok(()),
        }
    }

    /// The page's session the request carries, if signed here and current.
    pub(crate) fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let sessions = self.sessions.as_deref()?;
        cookie_of(headers, sessions.session_cookie_name()).and_then(|c| sessions.session(c))
    }

    /// Who asks, if they may do what needs `role`: a bearer token of the
    /// tokens file, an ID token of the OpenID provider (the CLI's, after
    /// `dimmer login`), or the page's session cookie. A change (operator
    /// and above) by session also needs the session's CSRF header.
    pub(crate) async fn require(
        &self,
        headers: &HeaderMap,
        role: Role,
    ) -> Result<Principal, ApiError> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let (Some(oidc), Some(token)) = (&self.oidc, authorization.and_then(bearer_token)) {
            if looks_like_jwt(token) {
                let who = oidc.bearer(token).await.map_err(AuthError::from)?;
                return Ok(permit(who, role)?);
            }
        }
        if authorization.is_none() {
            if let Some(session) = self.session(headers) {
                let given = headers.get(CSRF_HEADER).map(|v| v.as_bytes());
                if role >= Role::Operator && !session.csrf_matches(given) {
                    return Err(AuthError::Csrf.into());
                }
                return Ok(permit(session.principal(), role)?);
            }
        }
        Ok(self.auth.require(authorization, role)?)
    }
}

/// The value of cookie `name` among the request's `Cookie` headers.
pub(crate) fn cookie_of<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| cookie(h, name))
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
