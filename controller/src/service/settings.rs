//! How the service reaches the outside: timeouts, webhooks, the proxies'
//! limits, the team-metrics providers, the fleet role.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::providers::{HttpQuery, Query};
use crate::notify::webhook;

use super::registry::Limits;
use super::role::Role;

/// How the service reaches the outside.
pub struct Settings {
    /// Longest wait for one batch of metrics.
    pub metrics_timeout: Duration,
    /// URLs that hear every change of every rollout.
    pub webhooks: Vec<String>,
    pub webhook_policy: webhook::Policy,
    pub proxies: Limits,
    /// Where the team's own metrics (`analysis.metrics`) are read.
    pub queries: Arc<dyn Query>,
    /// In a fleet (`--store etcd://…`): whether this controller leads. None:
    /// the only controller, always deciding.
    pub fleet: Option<Arc<Role>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            metrics_timeout: Duration::from_secs(3),
            webhooks: Vec::new(),
            webhook_policy: webhook::Policy::default(),
            proxies: Limits::default(),
            queries: Arc::new(HttpQuery::new(None, Duration::from_secs(3))),
            fleet: None,
        }
    }
}
