//! What the service shows of its rollouts: each one's view (its state and
//! the proxies' standing), their history, and the audit chain's check.

use dimmer_decide::engine::RolloutState;

use crate::store::audit::{AuditRecord, ChainError};

use super::clock::now_ms;
use super::error::ServiceError;
use super::rollouts::arms_of;
use super::state::Service;
use super::view::StatusView;

impl Service {
    pub(super) fn view(&self, s: &RolloutState, now: u64) -> StatusView {
        let standing = self.registry.standing(s.revision, s.revision_ms, now);
        StatusView {
            name: s.spec.name.clone(),
            phase: s.phase,
            label: s.label(),
            stable: s.spec.stable.clone(),
            canary: s.spec.canary.clone(),
            step: s.step,
            steps: s.spec.steps.iter().map(|st| st.percent).collect(),
            step_pauses_ms: s
                .spec
                .steps
                .iter()
                .map(|st| st.pause.as_millis() as u64)
                .collect(),
            weight_bp: s.weight_bp,
            reason: s.reason.clone(),
            awaiting_approval: dimmer_decide::engine::awaits_approval(s),
            evidence_summary: s.evidence.summary(),
            evidence: s.evidence.clone(),
            revision: s.revision,
            proxies_applied: standing.applied,
            proxies_live: standing.live,
            proxies_applying: standing.applying_named,
            proxies_lagging: standing.lagging_named,
            proxies_stale_count: standing.stale,
            proxies_stale: standing.stale_named,
            proxy_stale_after_ms: self.registry.limits().stale_ms,
            step_started_ms: s.step_started_ms,
            metrics_lost_since_ms: s.metrics_lost_since_ms,
            audit_head: self.audit_head(),
            is_flag: s.spec.is_flag(),
            flag_off: s.flag_off,
            applied: None,
            arm_of: s.spec.arm_of.clone(),
            arms: Vec::new(),
        }
    }

    pub async fn status(&self, name: Option<&str>) -> Result<Vec<StatusView>, ServiceError> {
        let now = now_ms();
        let state = self.state.lock().await;
        match name {
            Some(n) => {
                if let Some(s) = state.rollouts.get(n) {
                    return Ok(vec![self.view(s, now)]);
                }
                // An A/B/n's name: its first arm, with every arm.
                let arms: Vec<StatusView> = arms_of(&state, n)
                    .into_iter()
                    .map(|s| self.view(s, now))
                    .collect();
                let mut first = arms
                    .first()
                    .cloned()
                    .ok_or_else(|| ServiceError::NotFound(n.to_owned()))?;
                first.arms = arms;
                Ok(vec![first])
            }
            None => Ok(state.rollouts.values().map(|s| self.view(s, now)).collect()),
        }
    }

    /// Every audit record of `name`; a rollout that never existed is not
    /// found, one that was deleted still has its history.
    /// An A/B/n rollout's history is its arms' (`NAME.ARM`), in order.
    pub fn history(&self, name: &str) -> Result<Vec<AuditRecord>, ServiceError> {
        let mut records = self.store.audit(Some(name))?;
        if records.is_empty() {
            let prefix = format!("{name}.");
            records = self.store.audit(None)?;
            records.retain(|r| {
                r.rollout
                    .strip_prefix(&prefix)
                    .is_some_and(|arm| !arm.is_empty())
            });
        }
        if records.is_empty() {
            return Err(ServiceError::NotFound(name.to_owned()));
        }
        Ok(records)
    }

    pub fn verify_audit(&self) -> Result<Result<usize, ChainError>, ServiceError> {
        Ok(self.store.verify()?)
    }
}
