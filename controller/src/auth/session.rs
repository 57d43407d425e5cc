//! The page's session and the sign-in in flight, as cookies the controller
//! signs (HMAC-SHA-256 with a key derived from the audit key). Signed, not
//! stored: every controller of a fleet shares the audit key, so any of
//! them (the leader a follower forwards to) knows a session; nothing to
//! lose on a restart. The session carries its own CSRF secret, which the
//! page reads from `GET /auth/session` and sends back in a header on every
//! change.
//!
//! The cost of no server-side state: a session cannot be revoked before it
//! expires, except by rotating the audit key (which ends every session).
//! Hence sessions are short (`session_ttl`, 8 h by default) and carry
//! the role they were given at sign-in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::principal::{Principal, Role};

/// The page's session: who signed in, until when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub name: String,
    pub role: Role,
    pub teams: Option<Vec<String>>,
    /// Unix seconds.
    pub expires: u64,
    pub csrf: String,
}

impl Session {
    /// Whether a request's CSRF header is this session's (constant time).
    pub fn csrf_matches(&self, given: Option<&[u8]>) -> bool {
        given.is_some_and(|g| bool::from(g.ct_eq(self.csrf.as_bytes())))
    }

    pub fn principal(&self) -> Principal {
        Principal {
            name: self.name.clone(),
            role: self.role,
            teams: self.teams.clone(),
        }
    }
}

/// A sign-in between the redirect to the provider and its answer.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct LoginState {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub expires: u64,
}

/// How long a person has to sign in at the provider.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);

pub struct Sessions {
    key: Vec<u8>,
    pub ttl: Duration,
    /// `Secure` cookies with the `__Host-` prefix (an https:// controller).
    pub secure: bool,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `n` random bytes, base64url: states, nonces, CSRF secrets, verifiers.
pub fn random(n: usize) -> String {
    let mut bytes = Vec::with_capacity(n + 32);
    while bytes.len() < n {
        bytes.extend(rand::random::<[u8; 32]>());
    }
    bytes.truncate(n);
    B64.encode(bytes)
}

/// PKCE (RFC 7636): a verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = random(32);
    let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

impl Sessions {
    pub fn new(key: &str, ttl: Duration, secure: bool) -> Sessions {
        Sessions {
            key: key.as_bytes().to_vec(),
            ttl,
            secure,
        }
    }

    fn mac(&self, kind: &str, payload: &str) -> Option<Vec<u8>> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).ok()?;
        m.update(kind.as_bytes());
        m.update(b".");
        m.update(payload.as_bytes());
        Some(m.finalize().into_bytes().to_vec())
    }

    /// `payload.mac`, both base64url; `kind` keeps a login state from
    /// passing for a session.
    pub fn seal<T: Serialize>(&self, kind: &str, value: &T) -> String {
        let payload = B64.encode(serde_json::to_vec(value).unwrap_or_default());
        let mac = self.mac(kind, &payload).unwrap_or_default();
        format!("{payload}.{}", B64.encode(mac))
    }

    /// The value, if this controller's key signed it as `kind`.
    pub fn open<T: DeserializeOwned>(&self, kind: &str, sealed: &str) -> Option<T> {
        let (payload, mac) = sealed.split_once('.')?;
        let given = B64.decode(mac).ok()?;
        let want = self.mac(kind, payload)?;
        if !bool::from(want.ct_eq(&given)) {
            return None;
        }
        serde_json::from_slice(&B64.decode(payload).ok()?).ok()
    }

    pub fn start(&self, who: &Principal) -> Session {
        Session {
            name: who.name.clone(),
            role: who.role,
            teams: who.teams.clone(),
            expires: now_secs() + self.ttl.as_secs(),
            csrf: random(24),
        }
    }

    /// A session cookie's session, if signed here and not expired.
    pub fn session(&self, cookie: &str) -> Option<Session> {
        self.open::<Session>("session", cookie)
            .filter(|s| s.expires > now_secs())
    }

    pub fn login(&self, cookie: &str) -> Option<LoginState> {
        self.open::<LoginState>("login", cookie)
            .filter(|s| s.expires > now_secs())
    }

    pub fn session_cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-dimmer-session"
        } else {
            "dimmer-session"
        }
    }

    pub fn login_cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-dimmer-login"
        } else {
            "dimmer-login"
        }
    }

    /// A `Set-Cookie` value: HttpOnly, Path=/, `Secure` on https; the
    /// session `SameSite=Strict` (no other site's page can make a request
    /// that carries it), the sign-in in flight `Lax` (it comes back on the
    /// provider's redirect, a top-level navigation from another site).
    pub fn set_cookie(&self, name: &str, value: &str, max_age: Duration, strict: bool) -> String {
        format!(
            "{name}={value}; Path=/; HttpOnly; SameSite={}; Max-Age={}{}",
            if strict { "Strict" } else { "Lax" },
            max_age.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    pub fn clear_cookie(&self, name: &str) -> String {
        self.set_cookie(name, "", Duration::ZERO, true)
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Principal {
        Principal {
            name: "alice".into(),
            role: Role::Operator,
            teams: Some(vec!["shop".into()]),
        }
    }

    #[test]
    fn a_session_opens_only_with_its_key_and_kind() {
        let s = Sessions::new("k1", Duration::from_secs(60), true);
        let session = s.start(&who());
        let sealed = s.seal("session", &session);
        assert_eq!(s.session(&sealed), Some(session.clone()));
        assert!(s.login(&sealed).is_none(), "a session is not a login state");
        let other = Sessions::new("k2", Duration::from_secs(60), true);
        assert!(other.session(&sealed).is_none());
        // Tampered: an operator made admin, signature kept.
        let (_, mac) = sealed.split_once('.').unwrap();
        let mut forged = session.clone();
        forged.role = Role::Admin;
        let payload = B64.encode(serde_json::to_vec(&forged).unwrap());
        assert!(s.session(&format!("{payload}.{mac}")).is_none());
        let mut old = session;
        old.expires = now_secs() - 1;
        assert!(s.session(&s.seal("session", &old)).is_none());
        assert!(s.session("garbage").is_none());
        assert!(s.session("a.b.c").is_none());
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = "a=1; __Host-dimmer-session=xyz.abc ; b=2";
        assert_eq!(cookie(h, "__Host-dimmer-session"), Some("xyz.abc"));
        assert_eq!(cookie(h, "dimmer-session"), None);
        let s = Sessions::new("k", Duration::from_secs(60), true);
        let c = s.set_cookie(s.session_cookie_name(), "v", Duration::from_secs(5), true);
        assert_eq!(
            c,
            "__Host-dimmer-session=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=5; Secure"
        );
    }

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        // RFC 7636, appendix B.
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            B64.encode(Sha256::digest(v.as_bytes())),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let (v, c) = pkce();
        assert_eq!(c, B64.encode(Sha256::digest(v.as_bytes())));
        assert!(v.len() >= 43);
    }
}
