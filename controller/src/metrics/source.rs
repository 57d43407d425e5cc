//! The narrow trait every metrics back-end implements, and its error.

use std::future::Future;
use std::pin::Pin;

use dimmer_decide::counts::{Batch, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot reach {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("cannot read the answer of {url}: {reason}")]
    Malformed { url: String, reason: String },
    #[error("{what} did not answer within {within}")]
    TimedOut { what: String, within: String },
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where counts come from: one module per back-end, and a fake for tests.
/// The runner calls it without holding any lock, under a timeout of its own.
pub trait MetricsSource: Send + Sync {
    /// The cumulative counts of each of `rollouts`, by version, in one call.
    /// A rollout with no counts yet is absent or empty, not an error.
    fn counts<'a>(&'a self, rollouts: &'a [String]) -> BoxFuture<'a, Result<Batch, MetricsError>>;
    /// Envoy's own counts of `clusters` (`upstream_rq_<class>xx` and the
    /// `upstream_rq_time` histogram), for rollouts counted by Envoy: a
    /// snapshot whose "versions" are the cluster names.
    fn cluster_counts<'a>(
        &'a self,
        clusters: &'a [String],
    ) -> BoxFuture<'a, Result<Snapshot, MetricsError>>;
    /// Whether the back-end answers at all.
    fn health(&self) -> BoxFuture<'_, Result<(), MetricsError>>;
    /// For logs and status: `envoy admin http://…`.
    fn describe(&self) -> String;
}
