//! The controller's state and the transitions on it, shared by the API and
//! the analysis loop. Every change goes through [`Service::transition`]: the
//! store (state + audit, one transaction), then memory, then webhooks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dimmer_core::config::ConfigDoc;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::analysis::Evidence;
use crate::engine::{self, Decision, Phase, RolloutState};
use crate::metrics::{Snapshot, Source};
use crate::spec::RolloutSpec;
use crate::store::{Entry, Store, StoreError};
use crate::webhook;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A proxy is live if it polled within this long.
pub const PROXY_LIVE_MS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no rollout named {0:?}")]
    NotFound(String),
    #[error("rollout {name:?} is {phase:?}: cannot {action}")]
    Conflict {
        name: String,
        phase: Phase,
        action: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Promote,
    Abort,
}

impl Command {
    pub fn verb(self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Promote => "promote",
            Command::Abort => "abort",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxySeen {
    pub id: String,
    pub revision: u64,
    pub last_seen_ms: u64,
}

/// What `dimmer status` shows of a rollout.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StatusView {
    pub name: String,
    pub phase: Phase,
    pub label: String,
    pub stable: String,
    pub canary: String,
    pub step: usize,
    pub steps: Vec<f64>,
    pub weight_bp: u32,
    pub reason: String,
    pub evidence: Evidence,
    pub evidence_summary: String,
    pub revision: u64,
    /// Live proxies that have applied this rollout's current weight, of all live.
    pub proxies_applied: usize,
    pub proxies_live: usize,
    /// The live proxies that have not.
    #[serde(default)]
    pub proxies_lagging: Vec<String>,
    pub step_started_ms: u64,
}

/// The ids of the proxies in `live` that have not applied `revision`.
fn lagging(live: &[ProxySeen], revision: u64) -> Vec<String> {
    live.iter()
        .filter(|p| p.revision < revision)
        .map(|p| p.id.clone())
        .collect()
}

struct Inner {
    rollouts: BTreeMap<String, RolloutState>,
    revision: u64,
    /// When each progressing rollout was last analysed.
    last_analysis: HashMap<String, u64>,
}

pub struct Service {
    store: Store,
    inner: Mutex<Inner>,
    proxies: std::sync::Mutex<HashMap<String, ProxySeen>>,
    source: Source,
    http: reqwest::Client,
    webhooks: Vec<String>,
}

impl Service {
    pub fn new(
        store: Store,
        source: Source,
        webhooks: Vec<String>,
    ) -> Result<Arc<Service>, ServiceError> {
        let rollouts = store
            .rollouts()?
            .into_iter()
            .map(|r| (r.spec.name.clone(), r))
            .collect();
        let revision = store.revision()?;
        Ok(Arc::new(Service {
            store,
            inner: Mutex::new(Inner {
                rollouts,
                revision,
                last_analysis: HashMap::new(),
            }),
            proxies: std::sync::Mutex::new(HashMap::new()),
            source,
            http: reqwest::Client::new(),
            webhooks,
        }))
    }

    /// The `GET /v1/config` document at the current revision.
    pub async fn config_doc(&self) -> ConfigDoc {
        let inner = self.inner.lock().await;
        ConfigDoc {
            revision: inner.revision,
            rollouts: inner
                .rollouts
                .values()
                .map(|s| s.spec.rollout_at(s.weight_bp))
                .collect(),
        }
    }

    pub fn record_poll(&self, proxy_id: &str, revision: u64) {
        if proxy_id.is_empty() {
            return;
        }
        let mut p = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        p.insert(
            proxy_id.to_owned(),
            ProxySeen {
                id: proxy_id.to_owned(),
                revision,
                last_seen_ms: now_ms(),
            },
        );
    }

    pub fn proxies(&self) -> Vec<ProxySeen> {
        let p = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = p.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn live_proxies(&self) -> Vec<ProxySeen> {
        let now = now_ms();
        self.proxies()
            .into_iter()
            .filter(|p| now.saturating_sub(p.last_seen_ms) < PROXY_LIVE_MS)
            .collect()
    }

    fn view(&self, s: &RolloutState, live: &[ProxySeen]) -> StatusView {
        StatusView {
            name: s.spec.name.clone(),
            phase: s.phase,
            label: s.label(),
            stable: s.spec.stable.clone(),
            canary: s.spec.canary.clone(),
            step: s.step,
            steps: s.spec.steps.iter().map(|st| st.percent).collect(),
            weight_bp: s.weight_bp,
            reason: s.reason.clone(),
            evidence_summary: s.evidence.summary(),
            evidence: s.evidence.clone(),
            revision: s.revision,
            proxies_applied: live.iter().filter(|p| p.revision >= s.revision).count(),
            proxies_live: live.len(),
            proxies_lagging: lagging(live, s.revision),
            step_started_ms: s.step_started_ms,
        }
    }

    pub async fn status(&self, name: Option<&str>) -> Result<Vec<StatusView>, ServiceError> {
        let live = self.live_proxies();
        let inner = self.inner.lock().await;
        match name {
            Some(n) => {
                let s = inner
                    .rollouts
                    .get(n)
                    .ok_or_else(|| ServiceError::NotFound(n.to_owned()))?;
                Ok(vec![self.view(s, &live)])
            }
            None => Ok(inner
                .rollouts
                .values()
                .map(|s| self.view(s, &live))
                .collect()),
        }
    }

    pub fn history(&self, name: &str) -> Result<Vec<crate::audit::AuditRecord>, ServiceError> {
        Ok(self.store.audit(Some(name))?)
    }

    pub fn audit_all(&self) -> Result<Vec<crate::audit::AuditRecord>, ServiceError> {
        Ok(self.store.audit(None)?)
    }

    /// Writes a transition: store first (state + audit in one transaction),
    /// then memory, then webhooks. A store failure changes nothing.
    #[allow(clippy::too_many_arguments)]
    async fn transition(
        &self,
        inner: &mut Inner,
        name: &str,
        mut state: Option<RolloutState>,
        bump: bool,
        actor: &str,
        action: &str,
        reason: &str,
        evidence: &Evidence,
    ) -> Result<(), ServiceError> {
        let from = inner
            .rollouts
            .get(name)
            .map_or("none".into(), RolloutState::label);
        let to = state.as_ref().map_or("deleted".into(), RolloutState::label);
        let evidence_json = serde_json::to_value(evidence).unwrap_or_default();
        let entry = Entry {
            actor,
            rollout: name,
            action,
            from: from.clone(),
            to: to.clone(),
            reason,
            evidence: evidence_json.clone(),
        };
        let now = now_ms();
        let revision = self
            .store
            .transition(name, state.as_mut(), bump, entry, now)?;
        inner.revision = revision;
        let hooks: Vec<String> = self
            .webhooks
            .iter()
            .chain(state.as_ref().map_or(&[][..], |s| &s.spec.webhooks[..]))
            .cloned()
            .collect();
        match state {
            Some(s) => {
                inner.rollouts.insert(name.to_owned(), s);
            }
            None => {
                inner.rollouts.remove(name);
            }
        }
        tracing::info!(rollout = name, actor, action, %from, %to, reason, "transition");
        webhook::notify(
            &self.http,
            hooks,
            serde_json::json!({
                "rollout": name, "action": action, "actor": actor, "from": from, "to": to,
                "reason": reason, "evidence": evidence_json, "at_ms": now, "revision": revision,
            }),
        );
        Ok(())
    }

    /// Applies a spec: a new rollout, or a changed one restarted from its
    /// first step. An unchanged spec is a no-op, so `apply` is idempotent.
    pub async fn apply(&self, spec: RolloutSpec, actor: &str) -> Result<StatusView, ServiceError> {
        let mut inner = self.inner.lock().await;
        let name = spec.name.clone();
        let unchanged = inner
            .rollouts
            .get(&name)
            .is_some_and(|s| s.spec == spec && !s.phase.is_final());
        if !unchanged {
            let mut state = RolloutState::new(spec, now_ms());
            // Judge the first step only on what comes after it starts.
            state.step_baseline = self
                .source
                .snapshot(&self.http, &name)
                .await
                .unwrap_or_default();
            let reason = format!("applied; starting at {}%", state.weight_bp as f64 / 100.0);
            state.reason = reason.clone();
            self.transition(
                &mut inner,
                &name,
                Some(state),
                true,
                actor,
                "apply",
                &reason,
                &Evidence::default(),
            )
            .await?;
        }
        drop(inner);
        Ok(self.status(Some(&name)).await?.remove(0))
    }

    pub async fn delete(&self, name: &str, actor: &str, reason: &str) -> Result<(), ServiceError> {
        let mut inner = self.inner.lock().await;
        if !inner.rollouts.contains_key(name) {
            return Err(ServiceError::NotFound(name.to_owned()));
        }
        self.transition(
            &mut inner,
            name,
            None,
            true,
            actor,
            "delete",
            reason,
            &Evidence::default(),
        )
        .await
    }

    /// A person's command. Abort takes effect in the same call: the canary's
    /// weight is 0 in the config the filters fetch next.
    pub async fn command(
        &self,
        name: &str,
        cmd: Command,
        actor: &str,
        reason: &str,
    ) -> Result<StatusView, ServiceError> {
        let mut inner = self.inner.lock().await;
        let current = inner
            .rollouts
            .get(name)
            .cloned()
            .ok_or_else(|| ServiceError::NotFound(name.to_owned()))?;
        let conflict = || ServiceError::Conflict {
            name: name.to_owned(),
            phase: current.phase,
            action: cmd.verb(),
        };
        let mut next = current.clone();
        let mut bump = false;
        match cmd {
            Command::Pause if current.phase == Phase::Progressing => {
                next.phase = Phase::Paused;
                next.reason = format!("paused by {actor}: {reason}");
            }
            Command::Resume if current.phase == Phase::Paused => {
                next.phase = Phase::Progressing;
                next.reason = format!("resumed by {actor}: {reason}");
            }
            Command::Abort if !current.phase.is_final() => {
                let d = Decision::Abort {
                    reason: format!("aborted by {actor}: {reason}"),
                };
                bump = engine::apply(&mut next, &d, &Snapshot::default(), now_ms());
            }
            Command::Promote if !current.phase.is_final() => {
                // Skips the wait and the gate of the current step, not its analysis
                // history: a person has decided, and the audit says who.
                let now = self
                    .source
                    .snapshot(&self.http, name)
                    .await
                    .unwrap_or_default();
                let why = format!("promoted by {actor}: {reason}");
                let d =
                    engine::next_step(&current, &why).unwrap_or(Decision::Complete { reason: why });
                bump = engine::apply(&mut next, &d, &now, now_ms());
            }
            _ => return Err(conflict()),
        }
        let evidence = current.evidence.clone();
        self.transition(
            &mut inner,
            name,
            Some(next),
            bump,
            actor,
            cmd.verb(),
            reason,
            &evidence,
        )
        .await?;
        drop(inner);
        Ok(self.status(Some(name)).await?.remove(0))
    }

    /// One pass of the analysis loop: every progressing rollout whose
    /// interval has elapsed is measured and decided on.
    pub async fn tick(&self) {
        let now = now_ms();
        let due: Vec<(String, u64, usize)> = {
            let mut inner = self.inner.lock().await;
            let Inner {
                rollouts,
                last_analysis,
                ..
            } = &mut *inner;
            let due: Vec<(String, u64, usize)> = rollouts
                .values()
                .filter(|s| s.phase == Phase::Progressing)
                .filter(|s| {
                    let last = last_analysis.get(&s.spec.name).copied().unwrap_or(0);
                    now.saturating_sub(last) >= s.spec.analysis.interval.as_millis() as u64
                })
                .map(|s| (s.spec.name.clone(), s.revision, s.step))
                .collect();
            for (name, _, _) in &due {
                last_analysis.insert(name.clone(), now);
            }
            due
        };
        for (name, revision, step) in due {
            let snapshot = match self.source.snapshot(&self.http, &name).await {
                Ok(s) => s,
                Err(e) => {
                    self.hold(&name, format!("holding: no metrics ({e})")).await;
                    continue;
                }
            };
            if let Err(e) = self.analyse(&name, revision, step, &snapshot).await {
                tracing::error!(rollout = %name, error = %e, "cannot record a decision");
            }
        }
    }

    async fn hold(&self, name: &str, reason: String) {
        let mut inner = self.inner.lock().await;
        if let Some(s) = inner.rollouts.get_mut(name) {
            s.reason = reason;
            let _ = self.store.save_quietly(s);
        }
    }

    async fn analyse(
        &self,
        name: &str,
        revision: u64,
        step: usize,
        snap: &Snapshot,
    ) -> Result<(), ServiceError> {
        let mut inner = self.inner.lock().await;
        let Some(current) = inner.rollouts.get(name).cloned() else {
            return Ok(());
        };
        // A person may have acted while the metrics were on their way.
        if current.phase != Phase::Progressing
            || current.revision != revision
            || current.step != step
        {
            return Ok(());
        }
        let now = now_ms();
        let engine::Outcome {
            mut decision,
            evidence,
            analysis,
        } = engine::decide(&current, snap, now);
        // A step up waits until every live proxy runs the current weights, so
        // the next step is judged on the traffic it was meant to have. An
        // abort never waits.
        let live = self.live_proxies();
        let lagging = lagging(&live, current.revision);
        if !lagging.is_empty()
            && matches!(
                decision,
                Decision::StepUp { .. } | Decision::Complete { .. }
            )
        {
            decision = Decision::Hold {
                reason: format!(
                    "healthy; waiting for {} of {} proxies to apply revision {}: {}",
                    lagging.len(),
                    live.len(),
                    current.revision,
                    lagging.join(", ")
                ),
            };
        }
        let mut next = current.clone();
        next.evidence = evidence.clone();
        next.analysis = analysis;
        let bump = engine::apply(&mut next, &decision, snap, now);
        match decision.action() {
            None => {
                self.store.save_quietly(&next)?;
                inner.rollouts.insert(name.to_owned(), next);
                Ok(())
            }
            Some(action) => {
                let reason = decision.reason();
                self.transition(
                    &mut inner,
                    name,
                    Some(next),
                    bump,
                    "controller",
                    action,
                    reason,
                    &evidence,
                )
                .await
            }
        }
    }

    /// Runs the analysis loop until the process ends.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            self.tick().await;
        }
    }
}
