//! What is particular to flags: the manual switch, the lifecycle listing
//! (`dimmer flags`), and the compiled flags the OFREP endpoint evaluates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use super::clock::now_ms;
use super::error::ServiceError;
use super::flag_table::{FlagTable, FlagView};
use super::state::Service;
use super::view::StatusView;
use dimmer_decide::analysis::Evidence;
use dimmer_decide::counts::Snapshot;
use dimmer_decide::engine::Phase;
use dimmer_decide::spec::flag::{parse_date, Lifecycle};

const DAY_MS: u64 = 24 * 3600 * 1000;
/// Keep one sample of a flag's counts per this long, a day's worth.
pub(super) const SAMPLE_EVERY_MS: u64 = 10 * 60 * 1000;

impl Service {
    /// `dimmer flag on|off`: off serves everyone the default variant at
    /// once (and holds a progressing rollout); on serves the variants by
    /// the current step again. Turning a flag to the state it is in
    /// changes nothing.
    pub async fn set_flag(
        &self,
        name: &str,
        on: bool,
        actor: &str,
        reason: &str,
    ) -> Result<StatusView, ServiceError> {
        let mut state = self.state.lock().await;
        let current = super::rollouts::current(&state, name)?;
        if !current.spec.is_flag() {
            return Err(ServiceError::Refused(format!(
                "{name:?} is a rollout, not a flag: use pause, resume or abort"
            )));
        }
        let now = now_ms();
        if current.flag_off != on {
            return Ok(self.view(&current, now));
        }
        let mut next = current.clone();
        next.flag_off = !on;
        let action = if on { "flag-on" } else { "flag-off" };
        if on {
            next.reason = format!("turned on by {actor}: {reason}");
        } else {
            next.reason = format!("turned off by {actor}: {reason}");
            if next.phase == Phase::Progressing {
                next.phase = Phase::Paused;
            }
        }
        self.transition(
            &mut state,
            name,
            Some(next),
            true,
            actor,
            action,
            reason,
            &Evidence::default(),
        )?;
        Ok(self.view(&super::rollouts::current(&state, name)?, now))
    }

    pub(super) async fn flag_keys(&self) -> Vec<String> {
        let state = self.state.lock().await;
        state
            .rollouts
            .values()
            .filter(|s| s.spec.is_flag())
            .map(|s| s.spec.name.clone())
            .collect()
    }

    /// The compiled flags of the served document.
    pub fn flag_table(&self) -> Arc<FlagTable> {
        Arc::clone(&self.flags.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every flag with its lifecycle marks. Reads the proxies' counts
    /// first, under the metrics timeout and without the state lock.
    pub async fn flags(&self, ready_after_ms: u64) -> Result<Vec<FlagView>, ServiceError> {
        let keys = self.flag_keys().await;
        let now = now_ms();
        let counts = self.sample_flags(&keys, now).await;
        let states: Vec<dimmer_decide::engine::RolloutState> = {
            let state = self.state.lock().await;
            keys.iter()
                .filter_map(|k| state.rollouts.get(k).cloned())
                .collect()
        };
        let mut out = Vec::with_capacity(states.len());
        for s in states {
            let Some(meta) = s.spec.flag.clone() else {
                continue;
            };
            let records = self.store.audit(Some(&s.spec.name))?;
            let created_ms = records.first().map_or(now, |r| r.at_ms.max(0) as u64);
            let toggles_7d = records
                .iter()
                .filter(|r| r.action == "flag-on" || r.action == "flag-off")
                .filter(|r| now.saturating_sub(r.at_ms.max(0) as u64) <= 7 * DAY_MS)
                .count();
            let (evaluations, window, ever) = match counts.get(&s.spec.name) {
                Some((delta, window, total)) => (Some(*delta), *window, Some(*total)),
                None => (None, 0, None),
            };
            let mut marks = Vec::new();
            let expired = meta
                .expires
                .as_deref()
                .and_then(parse_date)
                .and_then(|d| d.duration_since(UNIX_EPOCH).ok())
                .is_some_and(|d| (d.as_millis() as u64) <= now);
            if expired {
                marks.push("expired".to_owned());
            }
            if s.phase == Phase::Completed && !s.flag_off {
                let since = records
                    .iter()
                    .rev()
                    .find(|r| r.to.starts_with("completed"))
                    .map_or(now, |r| r.at_ms.max(0) as u64);
                if now.saturating_sub(since) >= ready_after_ms
                    && meta.lifecycle == Lifecycle::Temporary
                {
                    marks.push("ready for code removal".to_owned());
                }
            }
            if ever == Some(0.0) {
                marks.push("never evaluated".to_owned());
            }
            out.push(FlagView {
                key: s.spec.name.clone(),
                owner: meta.owner,
                lifecycle: meta.lifecycle,
                expires: meta.expires,
                description: meta.description,
                on: !s.flag_off,
                phase: s.phase,
                label: s.label(),
                default_variant: s.spec.stable.clone(),
                variant: s.spec.canary.clone(),
                weight_bp: s.weight_bp,
                created_ms,
                evaluations,
                evaluations_window_ms: window,
                toggles_7d,
                marks,
            });
        }
        Ok(out)
    }

    /// Reads the flags' counts and keeps a sample every few minutes for a
    /// day: `(evaluations in the window, the window, every count the proxies
    /// hold now)` per flag whose counts could be read.
    pub(super) async fn sample_flags(
        &self,
        keys: &[String],
        now: u64,
    ) -> BTreeMap<String, (f64, u64, f64)> {
        if keys.is_empty() {
            return BTreeMap::new();
        }
        let Ok(batch) = self.fetch(keys).await else {
            return BTreeMap::new();
        };
        let mut samples = self.flag_samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.retain(|k, _| keys.contains(k));
        let mut out = BTreeMap::new();
        for key in keys {
            let snap = batch.get(key).cloned().unwrap_or_default();
            let total: f64 = total_requests(&snap);
            let kept = samples.entry(key.clone()).or_default();
            kept.retain(|(at, _)| now.saturating_sub(*at) <= DAY_MS);
            let (window, delta) = match kept.first() {
                Some((at, old)) => (now - at, total_requests(&snap.since(old))),
                // Nothing older kept: all the proxies counted since they started.
                None => (0, total),
            };
            if kept
                .last()
                .is_none_or(|(at, _)| now.saturating_sub(*at) >= SAMPLE_EVERY_MS)
            {
                kept.push((now, snap));
            }
            out.insert(key.clone(), (delta, window, total));
        }
        out
    }
}

fn total_requests(s: &Snapshot) -> f64 {
    s.sources
        .values()
        .flat_map(|versions| versions.values())
        .map(|c| c.requests())
        .sum()
}
