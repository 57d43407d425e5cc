//! A metrics source for tests: answers what it is told, fails or hangs on
//! demand.

use std::sync::Mutex;
use std::time::Duration;

use dimmer_decide::counts::{Batch, Snapshot};

use super::source::{BoxFuture, MetricsError, MetricsSource};

#[derive(Debug, Clone)]
pub enum Behaviour {
    Answer,
    Fail,
    /// Never answers (until the caller's timeout).
    Hang,
}

pub struct FakeSource {
    state: Mutex<(Batch, Behaviour)>,
    /// Envoy's per-cluster counts, by cluster name.
    clusters: Mutex<Snapshot>,
}

impl Default for FakeSource {
    fn default() -> Self {
        FakeSource {
            state: Mutex::new((Batch::new(), Behaviour::Answer)),
            clusters: Mutex::new(Snapshot::default()),
        }
    }
}

impl FakeSource {
    pub fn set(&self, rollout: &str, snap: Snapshot) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0.insert(rollout.to_owned(), snap);
    }

    pub fn set_clusters(&self, snap: Snapshot) {
        *self.clusters.lock().unwrap_or_else(|e| e.into_inner()) = snap;
    }

    pub fn behave(&self, b: Behaviour) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = b;
    }

    fn now(&self) -> (Batch, Behaviour) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl MetricsSource for FakeSource {
    fn counts<'a>(&'a self, rollouts: &'a [String]) -> BoxFuture<'a, Result<Batch, MetricsError>> {
        Box::pin(async move {
            let (batch, behaviour) = self.now();
            match behaviour {
                Behaviour::Answer => Ok(rollouts
                    .iter()
                    .map(|r| (r.clone(), batch.get(r).cloned().unwrap_or_default()))
                    .collect()),
                Behaviour::Fail => Err(MetricsError::Status {
                    url: "fake".into(),
                    status: 503,
                }),
                Behaviour::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Err(MetricsError::TimedOut {
                        what: "fake".into(),
                        within: "1h".into(),
                    })
                }
            }
        })
    }

    fn cluster_counts<'a>(
        &'a self,
        clusters: &'a [String],
    ) -> BoxFuture<'a, Result<Snapshot, MetricsError>> {
        Box::pin(async move {
            // Fails or hangs as the filter's counts do; answers what it was told.
            self.counts(&[]).await?;
            let mut all = self
                .clusters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for versions in all.sources.values_mut() {
                versions.retain(|c, _| clusters.contains(c));
            }
            Ok(all)
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), MetricsError>> {
        Box::pin(async move { Ok(()) })
    }

    fn describe(&self) -> String {
        "fake".into()
    }
}
