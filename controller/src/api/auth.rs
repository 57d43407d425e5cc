//! Bearer tokens mapped to roles, read from a YAML file:
//!
//! ```yaml
//! tokens:
//!   - {name: alice, role: admin, token: "…"}
//!   - {name: deploy-bot, role: operator, token: "…"}
//!   - {name: envoy, role: proxy, token: "…"}    # the filters' poll token
//! ```

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Polls `GET /v1/config` and nothing else; its polls register the proxy.
    Proxy,
    /// Reads config, status, history and proxies.
    Viewer,
    /// Also applies specs and pauses, resumes, promotes and aborts.
    Operator,
    /// Also deletes rollouts and verifies the audit chain.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("unknown token")]
    Unknown,
    #[error("{name} ({role:?}) may not do this: it needs the {needed:?} role")]
    Forbidden {
        name: String,
        role: Role,
        needed: Role,
    },
    #[error("tokens file {path}: {reason}")]
    File { path: String, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    token: String,
}

pub enum Auth {
    /// Every request is an admin: for a controller on loopback only, by choice.
    Open,
    Tokens(Vec<(String, Role, [u8; 32])>),
}

/// The token of an `Authorization: Bearer …` value; the scheme is
/// case-insensitive (RFC 9110 §11.1).
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Auth {
    pub fn from_file(path: &Path) -> Result<Auth, AuthError> {
        let err = |reason: String| AuthError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: TokensFile = serde_norway::from_str(&text).map_err(|e| err(e.to_string()))?;
        let mut entries = Vec::new();
        for (i, t) in file.tokens.into_iter().enumerate() {
            if t.token.len() < 16 {
                return Err(err(format!(
                    "tokens[{i}].token: must be at least 16 characters"
                )));
            }
            entries.push((t.name, t.role, digest(&t.token)));
        }
        Ok(Auth::Tokens(entries))
    }

    /// Who sent `authorization` (the header's value), if anyone we know.
    /// Every known token is compared, in constant time, whatever matches.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let entries = match self {
            Auth::Open => {
                return Ok(Principal {
                    name: "anonymous".into(),
                    role: Role::Admin,
                })
            }
            Auth::Tokens(entries) => entries,
        };
        let token = authorization
            .and_then(bearer_token)
            .ok_or(AuthError::Missing)?;
        let given = digest(token);
        let mut found = None;
        for (name, role, d) in entries {
            if bool::from(d.ct_eq(&given)) && found.is_none() {
                found = Some(Principal {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        found.ok_or(AuthError::Unknown)
    }

    pub fn require(
        &self,
        authorization: Option<&str>,
        needed: Role,
    ) -> Result<Principal, AuthError> {
        let p = self.authenticate(authorization)?;
        if p.role >= needed {
            Ok(p)
        } else {
            Err(AuthError::Forbidden {
                name: p.name,
                role: p.role,
                needed,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::Tokens(vec![
            ("v".into(), Role::Viewer, digest("viewer-token-0123456")),
            ("o".into(), Role::Operator, digest("operator-token-01234")),
            ("a".into(), Role::Admin, digest("admin-token-012345678")),
        ])
    }

    #[test]
    fn roles_are_ordered() {
        let a = auth();
        assert!(a
            .require(Some("Bearer viewer-token-0123456"), Role::Viewer)
            .is_ok());
        assert!(matches!(
            a.require(Some("Bearer viewer-token-0123456"), Role::Operator),
            Err(AuthError::Forbidden { .. })
        ));
        assert!(a
            .require(Some("Bearer operator-token-01234"), Role::Operator)
            .is_ok());
        assert!(a
            .require(Some("Bearer admin-token-012345678"), Role::Admin)
            .is_ok());
        assert!(matches!(
            a.require(None, Role::Viewer),
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            a.require(Some("Bearer nope"), Role::Viewer),
            Err(AuthError::Unknown)
        ));
        assert!(matches!(
            a.require(Some("viewer-token-0123456"), Role::Viewer),
            Err(AuthError::Missing)
        ));
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let a = auth();
        for h in [
            "bearer viewer-token-0123456",
            "BEARER viewer-token-0123456",
            "Bearer  viewer-token-0123456 ",
        ] {
            assert!(a.require(Some(h), Role::Viewer).is_ok(), "{h}");
        }
        assert!(a
            .require(Some("Basic viewer-token-0123456"), Role::Viewer)
            .is_err());
    }

    #[test]
    fn a_proxy_may_only_poll() {
        let a = Auth::Tokens(vec![(
            "envoy".into(),
            Role::Proxy,
            digest("proxy-token-0123456"),
        )]);
        assert!(a
            .require(Some("Bearer proxy-token-0123456"), Role::Proxy)
            .is_ok());
        assert!(matches!(
            a.require(Some("Bearer proxy-token-0123456"), Role::Viewer),
            Err(AuthError::Forbidden { .. })
        ));
    }
}
