//! What the web UI and `/metrics` watch beside the decisions themselves:
//! the series of each rollout, and how long each abort took to reach the
//! last proxy.

use std::collections::BTreeMap;

use super::rollback::Rollback;
use super::series::Point;
use super::state::Service;
use dimmer_decide::counts::Snapshot;
use dimmer_decide::engine::RolloutState;

impl Service {
    pub(super) fn record_point(&self, s: &RolloutState, snap: Option<&Snapshot>, now_ms: u64) {
        self.series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(s, snap, now_ms);
    }

    /// `s` is the aborted state, its revision the one that takes the
    /// canary out.
    pub(super) fn note_abort(&self, s: &RolloutState, actor: &str, now_ms: u64) {
        let rollback = Rollback {
            revision: s.revision,
            decided_ms: now_ms,
            applied_ms: None,
            by_person: actor != "controller",
            detection_lag_ms: now_ms.saturating_sub(s.step_started_ms),
        };
        self.rollbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(s.spec.name.clone(), rollback);
    }

    /// Marks the aborts every live proxy has applied by now.
    pub(super) fn time_rollbacks(&self, now_ms: u64) {
        let mut rollbacks = self.rollbacks.lock().unwrap_or_else(|e| e.into_inner());
        for r in rollbacks.values_mut().filter(|r| r.applied_ms.is_none()) {
            let standing = self.registry.standing(r.revision, r.decided_ms, now_ms);
            if standing.live > 0 && standing.applied == standing.live {
                r.applied_ms = Some(now_ms);
            }
        }
    }

    /// The last abort of each rollout.
    pub fn rollbacks(&self) -> BTreeMap<String, Rollback> {
        self.rollbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The overview page: what runs now, and the last 7 and 30 days.
    pub async fn overview(&self) -> Result<super::overview::Overview, super::error::ServiceError> {
        let records = self.store.audit(None)?;
        let state = self.state.lock().await;
        let states: Vec<&RolloutState> = state.rollouts.values().collect();
        Ok(super::overview::overview(
            &states,
            &records,
            super::clock::now_ms(),
        ))
    }

    /// Every audit record, oldest first.
    pub fn all_history(
        &self,
    ) -> Result<Vec<crate::store::audit::AuditRecord>, super::error::ServiceError> {
        Ok(self.store.audit(None)?)
    }

    /// The newest `n` audit records of `name` (an A/B/n's: its arms').
    pub fn recent_history(&self, name: &str, n: usize) -> Vec<crate::store::audit::AuditRecord> {
        let mut records = self.history(name).unwrap_or_default();
        let cut = records.len().saturating_sub(n);
        records.drain(..cut);
        records
    }

    /// `name`'s points after `after` (0: all that are kept).
    pub fn series_of(&self, name: &str, after: u64) -> Vec<Point> {
        self.series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .since(name, after)
    }
}
