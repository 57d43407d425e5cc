//! The OpenID Connect file (`serve --oidc FILE`): which provider people
//! sign in with, and which of their groups are which roles, of which teams.
//!
//! ```yaml
//! issuer: https://login.example.com/realms/acme
//! client_id: dimmer                  # the page's client (code flow, PKCE)
//! cli_client_id: dimmer-cli          # `dimmer login` (device flow)
//! redirect_url: https://dimmer.example.com/auth/callback
//! groups_claim: groups               # where the ID token lists the groups
//! groups:
//!   - {group: sre, role: admin}
//!   - {group: payments-dev, role: operator, teams: [payments]}
//!   - {group: engineering, role: viewer}
//! ```
//!
//! A person in several groups gets the highest role among them; of that
//! role, the teams of every group that grants it (any group without
//! `teams` makes it every team's). A person in none of them may not sign
//! in at all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::principal::{valid_name, Principal, Role};

#[derive(Debug, thiserror::Error)]
#[error("--oidc {path}: {reason}")]
pub struct OidcConfigError {
    pub path: String,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    issuer: String,
    client_id: String,
    #[serde(default)]
    cli_client_id: Option<String>,
    redirect_url: String,
    #[serde(default = "default_groups_claim")]
    groups_claim: String,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
    /// How long a signed-in page stays signed in.
    #[serde(default)]
    session_ttl: Option<String>,
    /// The CA (PEM) of the provider's certificate, when not a public one.
    #[serde(default)]
    ca: Option<PathBuf>,
    groups: Vec<GroupRule>,
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "groups"]
        .map(String::from)
        .into()
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct GroupRule {
    pub group: String,
    pub role: Role,
    #[serde(default)]
    pub teams: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub cli_client_id: Option<String>,
    /// From the environment (`DIMMER_OIDC_CLIENT_SECRET`), never the file:
    /// a provider that wants the page's client confidential gets it.
    pub client_secret: Option<String>,
    pub redirect_url: reqwest::Url,
    pub groups_claim: String,
    pub scopes: Vec<String>,
    pub session_ttl: Duration,
    pub ca: Option<PathBuf>,
    pub groups: Vec<GroupRule>,
}

/// `https://`, or `http://` to a loopback address (a provider or a
/// controller on the same machine, as in the tests): tokens and sessions
/// never cross a network in the clear.
fn secure_or_loopback(url: &reqwest::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host_str() {
            Some("localhost") => true,
            Some(host) => host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        },
        _ => false,
    }
}

impl OidcConfig {
    pub fn load(path: &Path) -> Result<OidcConfig, OidcConfigError> {
        let err = |reason: String| OidcConfigError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut config = Self::parse(&text).map_err(err)?;
        config.client_secret = std::env::var("DIMMER_OIDC_CLIENT_SECRET")
            .ok()
            .filter(|s| !s.is_empty());
        Ok(config)
    }

    /// The file's text, checked field by field (the error names the field).
    pub fn parse(text: &str) -> Result<OidcConfig, String> {
        let f: File = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        let issuer = reqwest::Url::parse(&f.issuer)
            .map_err(|e| format!("issuer: {:?} is not a URL: {e}", f.issuer))?;
        if !secure_or_loopback(&issuer) {
            return Err(format!(
                "issuer: {:?} must be https:// (http:// only to a loopback address)",
                f.issuer
            ));
        }
        let redirect_url = reqwest::Url::parse(&f.redirect_url)
            .map_err(|e| format!("redirect_url: {:?} is not a URL: {e}", f.redirect_url))?;
        if !secure_or_loopback(&redirect_url) {
            return Err(format!(
                "redirect_url: {:?} must be https:// (the session cookie is Secure; http:// only to a loopback address)",
                f.redirect_url
            ));
        }
        if redirect_url.path() != "/auth/callback" {
            return Err(format!(
                "redirect_url: {:?} must end in /auth/callback, where the controller takes the provider's answer",
                f.redirect_url
            ));
        }
        for (field, id) in [
            ("client_id", Some(&f.client_id)),
            ("cli_client_id", f.cli_client_id.as_ref()),
        ] {
            if id.is_some_and(|id| id.is_empty() || id.len() > 255) {
                return Err(format!("{field}: 1 to 255 characters"));
            }
        }
        if f.groups_claim.is_empty() {
            return Err("groups_claim: the name of the ID token's claim that lists groups".into());
        }
        if !f.scopes.iter().any(|s| s == "openid") {
            return Err("scopes: must include openid".into());
        }
        let session_ttl = match &f.session_ttl {
            None => Duration::from_secs(8 * 3600),
            Some(t) => {
                humantime::parse_duration(t).map_err(|e| format!("session_ttl: {t:?}: {e}"))?
            }
        };
        if session_ttl < Duration::from_secs(60) || session_ttl > Duration::from_secs(7 * 86400) {
            return Err("session_ttl: from 1m to 7d".into());
        }
        if f.groups.is_empty() {
            return Err(
                "groups: names no group, so nobody could sign in; map at least one group to a role"
                    .into(),
            );
        }
        for (i, g) in f.groups.iter().enumerate() {
            if g.group.is_empty() {
                return Err(format!("groups[{i}].group: empty"));
            }
            if g.role == Role::Proxy {
                return Err(format!(
                    "groups[{i}].role: proxy is for the filters' tokens; a person is a viewer, operator or admin"
                ));
            }
            if let Some(teams) = &g.teams {
                if teams.is_empty() {
                    return Err(format!(
                        "groups[{i}].teams: names no team; leave it out for every team"
                    ));
                }
                for (j, t) in teams.iter().enumerate() {
                    if !valid_name(t) {
                        return Err(format!("groups[{i}].teams[{j}]: {t:?} is not a team name (1 to 63 letters, digits, '-', '_' or '.')"));
                    }
                }
            }
        }
        Ok(OidcConfig {
            issuer: f.issuer.trim_end_matches('/').to_owned(),
            client_id: f.client_id,
            cli_client_id: f.cli_client_id,
            client_secret: None,
            redirect_url,
            groups_claim: f.groups_claim,
            scopes: f.scopes,
            session_ttl,
            ca: f.ca,
            groups: f.groups,
        })
    }

    /// Whether the page's cookies may be marked `Secure` (an https://
    /// controller): a loopback http:// controller's could not be sent back.
    pub fn secure_cookies(&self) -> bool {
        self.redirect_url.scheme() == "https"
    }

    /// The ID token audiences Dimmer accepts: its own clients'.
    pub fn audiences(&self) -> Vec<&str> {
        let mut a = vec![self.client_id.as_str()];
        a.extend(self.cli_client_id.as_deref());
        a
    }

    /// Who a person in `groups` is here, or `None` when no group of theirs
    /// is mapped to a role.
    pub fn principal(&self, name: &str, groups: &[String]) -> Option<Principal> {
        let rules: Vec<&GroupRule> = self
            .groups
            .iter()
            .filter(|r| groups.contains(&r.group))
            .collect();
        let role = rules.iter().map(|r| r.role).max()?;
        let mut teams: Option<Vec<String>> = Some(Vec::new());
        for r in rules.iter().filter(|r| r.role == role) {
            match (&mut teams, &r.teams) {
                (Some(all), Some(more)) => all.extend(more.iter().cloned()),
                (_, None) => teams = None,
                (None, Some(_)) => {}
            }
        }
        if let Some(t) = &mut teams {
            t.sort();
            t.dedup();
        }
        Some(Principal {
            name: name.to_owned(),
            role,
            teams,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "issuer: https://login.example.com\nclient_id: dimmer\nredirect_url: https://dimmer.example.com/auth/callback\n";

    fn config(groups: &str) -> OidcConfig {
        OidcConfig::parse(&format!("{BASE}groups:\n{groups}")).unwrap()
    }

    #[test]
    fn the_highest_role_wins_with_its_teams() {
        let c = config(
            "  - {group: sre, role: admin}\n  - {group: pay, role: operator, teams: [payments]}\n  - {group: shop, role: operator, teams: [shop, payments]}\n  - {group: eng, role: viewer}\n",
        );
        let p = c.principal("a", &["eng".into(), "pay".into(), "shop".into()]);
        let p = p.unwrap();
        assert_eq!(p.role, Role::Operator);
        assert_eq!(p.teams, Some(vec!["payments".into(), "shop".into()]));
        let p = c.principal("a", &["pay".into(), "sre".into()]).unwrap();
        assert_eq!((p.role, p.teams), (Role::Admin, None));
        let p = c.principal("a", &["eng".into()]).unwrap();
        assert_eq!((p.role, p.teams), (Role::Viewer, None));
        assert!(c.principal("a", &["visitors".into()]).is_none());
        assert!(c.principal("a", &[]).is_none());
    }

    #[test]
    fn an_unscoped_group_of_the_same_role_makes_it_every_teams() {
        let c = config(
            "  - {group: pay, role: operator, teams: [payments]}\n  - {group: ops, role: operator}\n",
        );
        let p = c.principal("a", &["pay".into(), "ops".into()]).unwrap();
        assert_eq!(p.teams, None);
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases = [
            ("issuer: http://login.example.com\nclient_id: d\nredirect_url: https://d.example.com/auth/callback\ngroups: [{group: a, role: admin}]", "issuer"),
            ("issuer: https://l.example.com\nclient_id: d\nredirect_url: http://d.example.com/auth/callback\ngroups: [{group: a, role: admin}]", "redirect_url"),
            ("issuer: https://l.example.com\nclient_id: d\nredirect_url: https://d.example.com/callback\ngroups: [{group: a, role: admin}]", "redirect_url"),
            ("issuer: https://l.example.com\nclient_id: d\nredirect_url: https://d.example.com/auth/callback\ngroups: []", "groups"),
            ("issuer: https://l.example.com\nclient_id: d\nredirect_url: https://d.example.com/auth/callback\ngroups: [{group: a, role: proxy}]", "groups[0].role"),
            ("issuer: https://l.example.com\nclient_id: d\nredirect_url: https://d.example.com/auth/callback\ngroups: [{group: a, role: operator, teams: []}]", "groups[0].teams"),
            ("issuer: https://l.example.com\nclient_id: d\nredirect_url: https://d.example.com/auth/callback\ngroups: [{group: a, role: operator, teams: [\"a b\"]}]", "groups[0].teams[0]"),
            ("issuer: https://l.example.com\nclient_id: d\nredirect_url: https://d.example.com/auth/callback\nsession_ttl: 1s\ngroups: [{group: a, role: admin}]", "session_ttl"),
            ("issuer: https://l.example.com\nclient_id: d\nredirect_url: https://d.example.com/auth/callback\nscopes: [profile]\ngroups: [{group: a, role: admin}]", "scopes"),
            ("issuer: https://l.example.com\nclient_id: d\nredirect_url: https://d.example.com/auth/callback\ngroup: []", "group"),
        ];
        for (text, field) in cases {
            let e = OidcConfig::parse(text).err().unwrap_or_default();
            assert!(e.contains(field), "{text}: {e}");
        }
        let ok = OidcConfig::parse("issuer: http://127.0.0.1:5000/\nclient_id: d\nredirect_url: http://localhost:8080/auth/callback\ngroups: [{group: a, role: admin}]").unwrap();
        assert_eq!(ok.issuer, "http://127.0.0.1:5000");
        assert!(!ok.secure_cookies());
    }
}
