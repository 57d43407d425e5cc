//! Bearer tokens mapped to roles, read from a YAML file that holds their
//! SHA-256 digests (`dimmer token create` writes them; a plain `token:` is
//! still read, for files written by hand):
//!
//! ```yaml
//! tokens:
//!   - {name: alice, role: admin, sha256: "…64 hex digits…"}
//!   - {name: deploy-bot, role: operator, sha256: "…"}
//!   - {name: envoy, role: proxy, sha256: "…"}    # the filters' poll token
//!   - {name: envoy-next, role: proxy, sha256: "…"}  # a second, while rotating
//! ```
//!
//! The file is read again when it changes ([`Auth::reload`]): a token
//! created or revoked takes effect within a second, without a restart. A
//! file that no longer parses keeps the last good tokens (and says so):
//! never a fall back to no authentication.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::principal::valid_name;
pub use super::principal::{Principal, Role};
use super::watched::Watched;

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
    #[error(transparent)]
    Oidc(#[from] super::oidc::OidcError),
    #[error("proxy certificate {name} ({fingerprint}) is revoked (--revoked-certs)")]
    Revoked { name: String, fingerprint: String },
    #[error("a change from the page needs its x-dimmer-csrf header (the session's, from GET /auth/session)")]
    Csrf,
    #[error("tokens file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("proxy {proxy} polls with the token of {name} ({role:?}): a proxy needs a token of the proxy role (`dimmer token create NAME --role proxy`); a {role:?} token in every proxy's config is one to leak")]
    NotAProxy {
        proxy: String,
        name: String,
        role: Role,
    },
    #[error(
        "{name} may change the rollouts and flags of {teams} only, and {what} belongs to {owner}"
    )]
    OutOfScope {
        name: String,
        teams: String,
        what: String,
        owner: String,
    },
}

#[derive(Deserialize, serde::Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    pub tokens: Vec<TokenEntry>,
}

#[derive(Deserialize, serde::Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    /// The token itself: accepted, but a file of digests leaks nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The token's SHA-256, 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The teams whose rollouts and flags it may change; absent: every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<Vec<String>>,
}

type Entries = Vec<(String, Role, [u8; 32], Option<Vec<String>>)>;

/// What the tokens file held when last read, and how to tell it changed.
pub struct TokenFile(Watched<Entries>);

pub enum Auth {
    /// Every request is an admin: for a controller on loopback only, by choice.
    Open,
    Tokens(Entries),
    /// Read from a file, and read again when it changes.
    File(TokenFile),
}

/// A token's name: who did it, in the audit log.
pub fn check_token_name(name: &str) -> Result<(), AuthError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(AuthError::File {
            path: "-".into(),
            reason: format!("{name:?}: a token's name is 1 to 63 letters, digits, '-', '_' or '.'"),
        })
    }
}

/// The digests of a tokens file's text, checked entry by entry.
pub fn parse_tokens(text: &str, path: &Path) -> Result<Entries, AuthError> {
    let err = |reason: String| AuthError::File {
        path: path.display().to_string(),
        reason,
    };
    let file: TokensFile = serde_norway::from_str(text).map_err(|e| err(e.to_string()))?;
    let mut entries = Vec::new();
    for (i, t) in file.tokens.into_iter().enumerate() {
        let d = match (&t.token, &t.sha256) {
            (Some(token), None) => {
                if token.len() < 16 {
                    return Err(err(format!(
                        "tokens[{i}].token: must be at least 16 characters"
                    )));
                }
                digest(token)
            }
            (None, Some(hash)) => {
                let bytes = hex::decode(hash).ok().filter(|b| b.len() == 32);
                let Some(bytes) = bytes else {
                    return Err(err(format!(
                        "tokens[{i}].sha256: must be 64 hex digits, the SHA-256 of the token as `dimmer token create` writes it (is it the token itself? that goes nowhere in this file)"
                    )));
                };
                let mut d = [0u8; 32];
                d.copy_from_slice(&bytes);
                d
            }
            _ => {
                return Err(err(format!(
                    "tokens[{i}]: takes `sha256` (or, written by hand, `token`), one of them"
                )))
            }
        };
        if let Some(teams) = &t.teams {
            if teams.is_empty() {
                return Err(err(format!(
                    "tokens[{i}].teams: names no team; leave it out for a token of every team"
                )));
            }
            for (j, team) in teams.iter().enumerate() {
                check_token_name(team).map_err(|_| {
                    err(format!(
                        "tokens[{i}].teams[{j}]: {team:?} is not a team name (1 to 63 letters, digits, '-', '_' or '.')"
                    ))
                })?;
            }
        }
        entries.push((t.name, t.role, d, t.teams));
    }
    Ok(entries)
}

/// The token of an `Authorization: Bearer …` value; the scheme is
/// case-insensitive (RFC 9110 §11.1).
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Auth {
    pub fn from_file(path: &Path) -> Result<Auth, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let entries = parse_tokens(&text, path)?;
        Ok(Auth::File(TokenFile(Watched::new(path, &text, entries))))
    }

    /// Reads the tokens file again if it changed: `Ok(true)` when new
    /// tokens took effect. A file that cannot be read or parsed changes
    /// nothing (the error says why).
    pub fn reload(&self) -> Result<bool, AuthError> {
        let Auth::File(TokenFile(f)) = self else {
            return Ok(false);
        };
        let changed = f.changed().map_err(|e| AuthError::File {
            path: f.path().display().to_string(),
            reason: e.to_string(),
        })?;
        let Some(text) = changed else {
            return Ok(false);
        };
        f.set(parse_tokens(&text, f.path())?);
        Ok(true)
    }

    /// Who sent `authorization` (the header's value), if anyone we know.
    /// Every known token is compared, in constant time, whatever matches.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let from_file;
        let entries = match self {
            Auth::Open => {
                return Ok(Principal {
                    name: "anonymous".into(),
                    role: Role::Admin,
                    teams: None,
                })
            }
            Auth::Tokens(entries) => entries,
            Auth::File(TokenFile(f)) => {
                from_file = f.get();
                &*from_file
            }
        };
        let token = authorization
            .and_then(bearer_token)
            .ok_or(AuthError::Missing)?;
        let given = digest(token);
        let mut found = None;
        for (name, role, d, teams) in entries.iter() {
            if bool::from(d.ct_eq(&given)) && found.is_none() {
                found = Some(Principal {
                    name: name.clone(),
                    role: *role,
                    teams: teams.clone(),
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
        permit(self.authenticate(authorization)?, needed)
    }
}

/// `p`, if its role is `needed` or above.
pub fn permit(p: Principal, needed: Role) -> Result<Principal, AuthError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::Tokens(vec![
            (
                "v".into(),
                Role::Viewer,
                digest("viewer-token-0123456"),
                None,
            ),
            (
                "o".into(),
                Role::Operator,
                digest("operator-token-01234"),
                None,
            ),
            (
                "a".into(),
                Role::Admin,
                digest("admin-token-012345678"),
                None,
            ),
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
            None,
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
