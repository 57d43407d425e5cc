//! The OpenID Connect provider as the controller sees it: its metadata
//! (discovered at start), its signing keys (JWKS, fetched again when a
//! token names a key it has not seen, for the provider's key rotation),
//! and the ID tokens it signs, checked as OpenID Connect Core §3.1.3.7
//! says: the issuer, an audience of Dimmer's, the expiry, the nonce on the
//! page's sign-in, and an asymmetric signature by a key the provider
//! publishes — never `alg: none`, never a symmetric one (whose key would
//! be the public one).
//!
//! The CLI's ID token (from `dimmer login`) is also a bearer token: a JWT
//! in `Authorization` is checked here, as Kubernetes' API server checks
//! the OIDC tokens kubectl sends.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::oidc_config::OidcConfig;
use super::principal::Principal;

/// Clocks differ by a little: NTP keeps them within it.
const LEEWAY_SECS: u64 = 5;
/// A token naming an unknown key fetches the keys again, at most this often.
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(2);
/// Keys older than this are fetched again on the next sign-in.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Discovery, the keys, the code exchange: each bounded.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the OpenID provider {url}: {why}")]
    Provider { url: String, why: String },
    #[error("not a JWT: {0}")]
    NotJwt(String),
    #[error("the token is unsigned (alg \"none\"): never accepted")]
    AlgNone,
    #[error(
        "alg {0:?}: only the provider's asymmetric signatures are accepted (RS*, PS*, ES*, EdDSA)"
    )]
    Alg(String),
    #[error("signed with key {kid:?}, which the provider does not publish ({when})")]
    UnknownKey { kid: String, when: &'static str },
    #[error("the ID token expired at {0} UTC; sign in again (`dimmer login`, or the page)")]
    Expired(String),
    #[error(
        "the ID token is for {0}, not for Dimmer (its audience is not one of Dimmer's client ids)"
    )]
    Audience(String),
    #[error("the ID token was issued by {0}, not by the configured issuer")]
    Issuer(String),
    #[error("the ID token's signature does not verify")]
    Signature,
    #[error("the ID token: {0}")]
    Invalid(String),
    #[error("the sign-in's nonce does not match: start again")]
    Nonce,
    #[error("{name} is in no group that has a role here (groups: {groups}); ask for one of the groups the --oidc file maps")]
    NoRole { name: String, groups: String },
}

/// The provider's metadata (`/.well-known/openid-configuration`), what
/// Dimmer uses of it.
#[derive(Deserialize, Clone, Debug)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
}

/// Who an ID token says signed in.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `preferred_username`, else `email`, else `sub`: the audit log's actor.
    pub name: String,
    pub groups: Vec<String>,
    /// Unix seconds.
    pub expires: u64,
}

struct Keys {
    keys: Vec<Jwk>,
    fetched: Instant,
}

pub struct Oidc {
    pub config: OidcConfig,
    pub meta: Metadata,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    refetch: Mutex<()>,
}

fn provider_err(url: &str, why: impl ToString) -> OidcError {
    OidcError::Provider {
        url: url.to_owned(),
        why: why.to_string(),
    }
}

/// The provider's metadata at `issuer`, checked to name that issuer (OIDC
/// Discovery §4.3: a mismatch is a provider impersonating another).
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Metadata, OidcError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let resp = http
        .get(&url)
        .timeout(CALL_TIMEOUT)
        .send()
        .await
        .map_err(|e| provider_err(&url, format!("did not answer: {e}")))?;
    if !resp.status().is_success() {
        return Err(provider_err(&url, format!("answered {}", resp.status())));
    }
    let meta: Metadata = resp
        .json()
        .await
        .map_err(|e| provider_err(&url, format!("not OpenID metadata: {e}")))?;
    if meta.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(provider_err(
            &url,
            format!("names itself {:?}, not {issuer:?}", meta.issuer),
        ));
    }
    Ok(meta)
}

/// The keys of a JWKS document; keys of a kind this build does not know
/// are left out rather than failing the set.
async fn fetch_keys(http: &reqwest::Client, url: &str) -> Result<Vec<Jwk>, OidcError> {
    let resp = http
        .get(url)
        .timeout(CALL_TIMEOUT)
        .send()
        .await
        .map_err(|e| provider_err(url, format!("did not answer: {e}")))?;
    if !resp.status().is_success() {
        return Err(provider_err(url, format!("answered {}", resp.status())));
    }
    let doc: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| provider_err(url, format!("not a JWKS: {e}")))?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| provider_err(url, "not a JWKS: no keys"))?;
    Ok(keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .collect())
}

/// The JOSE header's `alg`, read before anything else: `none` and the
/// symmetric ones are refused by name.
fn header_alg(token: &str) -> Result<(Algorithm, Option<String>), OidcError> {
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::NotJwt("three base64url parts expected".into()));
    };
    let bytes = B64
        .decode(head.trim_end_matches('='))
        .map_err(|e| OidcError::NotJwt(format!("header: {e}")))?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| OidcError::NotJwt(format!("header: {e}")))?;
    let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("");
    let kid = header
        .get("kid")
        .and_then(|k| k.as_str())
        .map(str::to_owned);
    let alg = match alg {
        a if a.eq_ignore_ascii_case("none") => return Err(OidcError::AlgNone),
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        other => return Err(OidcError::Alg(other.to_owned())),
    };
    Ok((alg, kid))
}

/// Whether a bearer token is a JWT (an ID token) rather than one of the
/// tokens file's: those are hex, with no dots.
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

fn utc(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

impl Oidc {
    /// Discovers the provider and fetches its keys: an error when it does
    /// not answer (the controller does not start without its sign-in).
    pub async fn start(config: OidcConfig, http: reqwest::Client) -> Result<Oidc, OidcError> {
        let meta = discover(&http, &config.issuer).await?;
        let keys = fetch_keys(&http, &meta.jwks_uri).await?;
        Ok(Oidc {
            config,
            meta,
            http,
            keys: RwLock::new(Keys {
                keys,
                fetched: Instant::now(),
            }),
            refetch: Mutex::new(()),
        })
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, OidcError> {
        let find = |keys: &Keys| -> Option<Result<DecodingKey, OidcError>> {
            let jwk = match kid {
                Some(kid) => keys
                    .keys
                    .iter()
                    .find(|k| k.common.key_id.as_deref() == Some(kid))?,
                // No `kid`: only when the provider has a single key.
                None if keys.keys.len() == 1 => keys.keys.first()?,
                None => return None,
            };
            Some(DecodingKey::from_jwk(jwk).map_err(|e| OidcError::Invalid(e.to_string())))
        };
        {
            let keys = self.keys.read().await;
            if keys.fetched.elapsed() < KEYS_MAX_AGE {
                if let Some(k) = find(&keys) {
                    return k;
                }
            }
        }
        // One fetch at a time; the others wait for it and look again.
        let _one = self.refetch.lock().await;
        let stale = self.keys.read().await.fetched.elapsed() >= REFETCH_AT_MOST_EVERY;
        let mut when = "its keys were fetched less than 2 s ago";
        if stale {
            when = "its keys fetched again just now";
            match fetch_keys(&self.http, &self.meta.jwks_uri).await {
                Ok(keys) => {
                    *self.keys.write().await = Keys {
                        keys,
                        fetched: Instant::now(),
                    };
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the OpenID provider's keys not fetched; the last ones still apply")
                }
            }
        }
        let keys = self.keys.read().await;
        find(&keys).unwrap_or_else(|| {
            Err(OidcError::UnknownKey {
                kid: kid.unwrap_or("").to_owned(),
                when,
            })
        })
    }

    /// Who the ID token says signed in, if it is the provider's, for
    /// Dimmer, and not expired; with `nonce`, it must carry that one.
    pub async fn verify(&self, token: &str, nonce: Option<&str>) -> Result<Identity, OidcError> {
        let (alg, kid) = header_alg(token)?;
        let key = self.key_for(kid.as_deref()).await?;
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        v.set_issuer(&[self.meta.issuer.as_str()]);
        v.set_audience(&self.config.audiences());
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &v);
        let claims = match data {
            Ok(d) => d.claims,
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                let claims = unverified_claims(token);
                let claim = |k: &str| claims.as_ref().and_then(|c| c.get(k)).cloned();
                return Err(match e.kind() {
                    K::ExpiredSignature => OidcError::Expired(
                        claim("exp")
                            .and_then(|e| e.as_u64())
                            .map_or_else(|| "?".into(), utc),
                    ),
                    K::InvalidAudience => OidcError::Audience(
                        claim("aud").map_or_else(|| "?".into(), |a| a.to_string()),
                    ),
                    K::InvalidIssuer => OidcError::Issuer(
                        claim("iss").map_or_else(|| "?".into(), |a| a.to_string()),
                    ),
                    K::InvalidSignature => OidcError::Signature,
                    _ => OidcError::Invalid(e.to_string()),
                });
            }
        };
        if let Some(want) = nonce {
            let got = claims.get("nonce").and_then(|n| n.as_str());
            if got != Some(want) {
                return Err(OidcError::Nonce);
            }
        }
        let text = |k: &str| {
            claims
                .get(k)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let name = text("preferred_username")
            .or_else(|| text("email"))
            .or_else(|| text("sub"))
            .ok_or_else(|| OidcError::Invalid("no sub".into()))?;
        let groups = match claims.get(&self.config.groups_claim) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(g)) => vec![g.clone()],
            _ => Vec::new(),
        };
        let expires = claims.get("exp").and_then(|e| e.as_u64()).unwrap_or(0);
        Ok(Identity {
            name,
            groups,
            expires,
        })
    }

    /// The role and teams the groups give, or why none.
    pub fn principal(&self, who: &Identity) -> Result<Principal, OidcError> {
        self.config
            .principal(&who.name, &who.groups)
            .ok_or_else(|| OidcError::NoRole {
                name: who.name.clone(),
                groups: if who.groups.is_empty() {
                    format!("none in the {:?} claim", self.config.groups_claim)
                } else {
                    who.groups.join(", ")
                },
            })
    }

    /// A bearer ID token's principal.
    pub async fn bearer(&self, token: &str) -> Result<Principal, OidcError> {
        let who = self.verify(token, None).await?;
        self.principal(&who)
    }

    /// Where the page sends a person to sign in (code flow with PKCE).
    pub fn authorize_url(&self, state: &str, nonce: &str, challenge: &str) -> String {
        let mut url = match reqwest::Url::parse(&self.meta.authorization_endpoint) {
            Ok(u) => u,
            Err(_) => return self.meta.authorization_endpoint.clone(),
        };
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", self.config.redirect_url.as_str())
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        url.into()
    }

    /// The provider's ID token for the page's sign-in `code`.
    pub async fn exchange(&self, code: &str, verifier: &str) -> Result<String, OidcError> {
        let url = &self.meta.token_endpoint;
        let mut req = self.http.post(url).timeout(CALL_TIMEOUT).form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.config.redirect_url.as_str()),
            ("code_verifier", verifier),
            ("client_id", &self.config.client_id),
        ]);
        if let Some(secret) = &self.config.client_secret {
            req = req.basic_auth(&self.config.client_id, Some(secret));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| provider_err(url, format!("did not answer: {e}")))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| provider_err(url, format!("answered {status}, not JSON: {e}")))?;
        if let Some(token) = body.get("id_token").and_then(|t| t.as_str()) {
            return Ok(token.to_owned());
        }
        let error = body.get("error").and_then(|e| e.as_str()).unwrap_or("");
        let what = body
            .get("error_description")
            .and_then(|e| e.as_str())
            .unwrap_or("");
        Err(provider_err(
            url,
            format!("refused the code ({status}): {error} {what}"),
        ))
    }
}

/// A token's claims without checking anything: only to say, in an error,
/// which audience or expiry it had (and the CLI, until when it keeps one).
pub fn unverified_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&B64.decode(payload.trim_end_matches('=')).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(header: &str, payload: &str) -> String {
        format!("{}.{}.sig", B64.encode(header), B64.encode(payload))
    }

    #[test]
    fn unsigned_and_symmetric_tokens_are_refused_by_name() {
        let none = jwt(r#"{"alg":"none"}"#, r#"{"sub":"a"}"#);
        assert!(matches!(header_alg(&none), Err(OidcError::AlgNone)));
        let none = jwt(r#"{"alg":"NONE"}"#, r#"{"sub":"a"}"#);
        assert!(matches!(header_alg(&none), Err(OidcError::AlgNone)));
        let hs = jwt(r#"{"alg":"HS256"}"#, r#"{"sub":"a"}"#);
        assert!(matches!(header_alg(&hs), Err(OidcError::Alg(a)) if a == "HS256"));
        let rs = jwt(r#"{"alg":"RS256","kid":"k1"}"#, r#"{"sub":"a"}"#);
        assert!(matches!(header_alg(&rs), Ok((Algorithm::RS256, Some(k))) if k == "k1"));
        assert!(matches!(header_alg("a.b"), Err(OidcError::NotJwt(_))));
        assert!(matches!(header_alg("%%.b.c"), Err(OidcError::NotJwt(_))));
    }

    #[test]
    fn jwts_are_told_from_file_tokens() {
        assert!(looks_like_jwt("aaa.bbb.ccc"));
        assert!(!looks_like_jwt(&"ab".repeat(32)));
    }
}
