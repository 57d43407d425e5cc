//! Who asks, once known: a name (the audit log's actor), a role, and the
//! teams it may change. Tokens, ID tokens and sessions all end here.

use serde::Deserialize;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
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
    /// The teams whose rollouts and flags it may change; `None`: every one.
    pub teams: Option<Vec<String>>,
}

impl Principal {
    /// Whether it may change what belongs to `team` (`None`: to no team,
    /// which only an unscoped token may change).
    pub fn may_change(&self, team: Option<&str>) -> bool {
        match &self.teams {
            None => true,
            Some(teams) => team.is_some_and(|t| teams.iter().any(|x| x == t)),
        }
    }
}

/// A name of a token or a team: 1 to 63 letters, digits, '-', '_' or '.'.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}
