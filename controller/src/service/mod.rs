//! The controller's state and every change to it, shared by the API and the
//! analysis runner. Every change goes through [`Service::transition`]: the
//! store (state + audit, one transaction), then memory and the config the
//! proxies poll, then webhooks.
//!
//! No network I/O ever happens under the state lock: metrics are read by
//! the runner before it takes the lock, webhooks leave through a queue, and
//! config polls read a copy that is swapped whole after each change, so a
//! hanging metrics source or receiver cannot delay a poll or an abort.

mod commands;
mod flags;
pub mod registry;
mod runner;
pub mod series;
mod watch;

pub use watch::Rollback;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dimmer_core::config::{ConfigDoc, FlagState};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::analysis::Evidence;
use crate::audit::{AuditRecord, Head};
use crate::engine::{Phase, RolloutState};
use crate::metrics::MetricsSource;
use crate::store::{Entry, Store, StoreError};
use crate::webhook::{self, Notifier};

pub use commands::{Applied, Command};
pub use flags::{FlagTable, FlagView};
pub use registry::{Limits, ProxySeen, Registry, RegistryError};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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
    /// The change would leave a config the filters refuse.
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `dimmer status` shows of a rollout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub name: String,
    pub phase: Phase,
    pub label: String,
    pub stable: String,
    pub canary: String,
    pub step: usize,
    pub steps: Vec<f64>,
    /// Each step's pause, in ms: the least time it is held.
    #[serde(default)]
    pub step_pauses_ms: Vec<u64>,
    pub weight_bp: u32,
    pub reason: String,
    pub evidence: Evidence,
    pub evidence_summary: String,
    pub revision: u64,
    /// Live proxies that have applied this rollout's current weight, of all live.
    pub proxies_applied: usize,
    pub proxies_live: usize,
    /// The live proxies that have not, and are waited for (the first 20).
    #[serde(default)]
    pub proxies_lagging: Vec<String>,
    /// The live proxies that have not for longer than the limit: reported,
    /// no longer waited for (the first 20, and how many in all).
    #[serde(default)]
    pub proxies_stale: Vec<String>,
    #[serde(default)]
    pub proxies_stale_count: usize,
    /// How long a lagging proxy may hold a step before it counts as stale.
    #[serde(default)]
    pub proxy_stale_after_ms: u64,
    pub step_started_ms: u64,
    /// Since when no metrics could be read, if they cannot now.
    #[serde(default)]
    pub metrics_lost_since_ms: Option<u64>,
    /// The audit log's head, to pin elsewhere.
    #[serde(default)]
    pub audit_head: Head,
    /// A flag's rollout: stable is the default variant, canary the variant
    /// rolled out.
    #[serde(default)]
    pub is_flag: bool,
    /// A flag a person turned off: everyone gets the default variant.
    #[serde(default)]
    pub flag_off: bool,
    /// For `apply`: what the apply did (created, changed, unchanged, restarted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    /// An A/B/n arm: the A/B/n rollout it is an arm of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm_of: Option<String>,
    /// For `apply` of an A/B/n spec: every arm, as applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arms: Vec<StatusView>,
}

struct Rollouts {
    rollouts: BTreeMap<String, RolloutState>,
    revision: u64,
    /// When each progressing rollout was last analysed.
    last_analysis: HashMap<String, u64>,
}

/// How the service reaches the outside.
pub struct Settings {
    /// Longest wait for one batch of metrics.
    pub metrics_timeout: Duration,
    /// URLs that hear every change of every rollout.
    pub webhooks: Vec<String>,
    pub webhook_policy: webhook::Policy,
    pub proxies: Limits,
    /// Where the team's own metrics (`analysis.metrics`) are read.
    pub queries: Arc<dyn crate::providers::Query>,
    /// In a fleet (`--store etcd://…`): whether this controller leads. None:
    /// the only controller, always deciding.
    pub fleet: Option<Arc<crate::fleet::Role>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            metrics_timeout: Duration::from_secs(3),
            webhooks: Vec::new(),
            webhook_policy: webhook::Policy::default(),
            proxies: Limits::default(),
            queries: Arc::new(crate::providers::HttpQuery::new(
                None,
                Duration::from_secs(3),
            )),
            fleet: None,
        }
    }
}

/// The last look at the metrics source, for `/metrics` and `/v1/health`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceHealth {
    pub source: String,
    pub last_ok_ms: Option<u64>,
    pub last_error: Option<String>,
    pub failures: u64,
}

pub struct Service {
    store: Store,
    state: Mutex<Rollouts>,
    config: RwLock<Arc<ConfigDoc>>,
    flags: RwLock<Arc<FlagTable>>,
    /// Each flag's counts now and then, for evaluations in the last day.
    flag_samples: std::sync::Mutex<BTreeMap<String, Vec<(u64, crate::metrics::Snapshot)>>>,
    last_flag_sample: std::sync::atomic::AtomicU64,
    head: RwLock<Head>,
    registry: Registry,
    source: Arc<dyn MetricsSource>,
    source_health: std::sync::Mutex<SourceHealth>,
    notifier: Notifier,
    settings: Settings,
    /// Each rollout at each look, for the web UI.
    series: std::sync::Mutex<series::Series>,
    /// Each abort's way to the proxies: when decided, when the last live
    /// proxy had applied it.
    rollbacks: std::sync::Mutex<BTreeMap<String, watch::Rollback>>,
    /// The latest reading of each rollout's own metrics, taken in the
    /// background so a slow provider never delays a look.
    readings: Arc<std::sync::Mutex<BTreeMap<String, crate::analysis::team_metrics::Reading>>>,
    /// Rollouts whose reading is under way: one at a time each.
    reading: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Each rollout's holds since its state was last written.
    unsaved_looks: std::sync::Mutex<BTreeMap<String, u32>>,
}

/// A hold's state (its reason, the tests' running evidence) is written
/// every this many looks, not every look: holds are most of a store's
/// writes (etcd's, in a fleet). Nothing is lost by it: the evidence is
/// rebuilt from the proxies' cumulative counters, so a controller that
/// starts from a state a few looks old counts the requests since then at
/// its first look. Decisions are written at once, always.
pub const SAVE_HOLDS_EVERY: u32 = 3;

impl Service {
    /// Must be called inside a Tokio runtime: it starts the webhook task.
    pub fn new(
        store: Store,
        source: Arc<dyn MetricsSource>,
        settings: Settings,
    ) -> Result<Arc<Service>, ServiceError> {
        let rollouts = store
            .rollouts()?
            .into_iter()
            .map(|r| (r.spec.name.clone(), r))
            .collect();
        let revision = store.revision()?;
        let head = store.head()?;
        let state = Rollouts {
            rollouts,
            revision,
            last_analysis: HashMap::new(),
        };
        let doc = config_of(&state);
        let flags = RwLock::new(Arc::new(FlagTable::new(&doc, &state.rollouts)));
        let config = RwLock::new(Arc::new(doc));
        Ok(Arc::new(Service {
            store,
            config,
            flags,
            flag_samples: std::sync::Mutex::new(BTreeMap::new()),
            last_flag_sample: std::sync::atomic::AtomicU64::new(0),
            state: Mutex::new(state),
            head: RwLock::new(head),
            registry: Registry::new(settings.proxies),
            source_health: std::sync::Mutex::new(SourceHealth {
                source: source.describe(),
                ..SourceHealth::default()
            }),
            source,
            notifier: Notifier::start(settings.webhook_policy),
            settings,
            series: std::sync::Mutex::new(series::Series::default()),
            rollbacks: std::sync::Mutex::new(BTreeMap::new()),
            unsaved_looks: std::sync::Mutex::new(BTreeMap::new()),
            readings: Arc::default(),
            reading: Arc::default(),
        }))
    }

    /// Whether this controller decides: the only one, or the fleet's leader.
    pub fn is_leader(&self) -> bool {
        self.settings.fleet.as_ref().is_none_or(|r| r.leading())
    }

    /// Whether this controller's state is current: always alone; in a fleet,
    /// while etcd answers its keep-alive.
    pub fn in_touch_with_store(&self) -> bool {
        self.settings.fleet.as_ref().is_none_or(|r| r.in_touch())
    }

    /// In a fleet, the role this controller plays.
    pub fn fleet(&self) -> Option<&Arc<crate::fleet::Role>> {
        self.settings.fleet.as_ref()
    }

    /// Reads the whole state again from the store: a follower keeping up
    /// with the leader's writes, a new leader starting from what is durable.
    pub async fn reload(&self) -> Result<(), ServiceError> {
        let rollouts: BTreeMap<String, RolloutState> = self
            .store
            .rollouts()?
            .into_iter()
            .map(|r| (r.spec.name.clone(), r))
            .collect();
        let revision = self.store.revision()?;
        let head = self.store.head()?;
        let mut state = self.state.lock().await;
        state.rollouts = rollouts;
        state.revision = revision;
        let doc = config_of(&state);
        *self.flags.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(FlagTable::new(&doc, &state.rollouts));
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(doc);
        *self.head.write().unwrap_or_else(|e| e.into_inner()) = head;
        Ok(())
    }

    /// Whether this hold of `name` is the one to write; a decision resets
    /// the count (`forget_holds`).
    fn hold_to_save(&self, name: &str) -> bool {
        let mut looks = self.unsaved_looks.lock().unwrap_or_else(|e| e.into_inner());
        let n = looks.entry(name.to_owned()).or_insert(0);
        *n += 1;
        if *n >= SAVE_HOLDS_EVERY {
            *n = 0;
            return true;
        }
        false
    }

    fn forget_holds(&self, name: &str) {
        self.unsaved_looks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// The `GET /v1/config` document at the current revision: a copy,
    /// without the state lock.
    pub fn config_doc(&self) -> Arc<ConfigDoc> {
        Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn record_poll(&self, proxy_id: &str, revision: u64) -> Result<(), RegistryError> {
        self.registry.record(proxy_id, revision, now_ms())
    }

    pub fn proxies(&self) -> Vec<ProxySeen> {
        self.registry.all(now_ms())
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn audit_head(&self) -> Head {
        self.head.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn webhook_stats(&self) -> BTreeMap<String, webhook::HookStats> {
        self.notifier.stats()
    }

    pub fn source_health(&self) -> SourceHealth {
        self.source_health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks the metrics source whether it answers, within the metrics timeout.
    pub async fn check_source(&self) -> Result<(), String> {
        match tokio::time::timeout(self.settings.metrics_timeout, self.source.health()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "{} did not answer within {:?}",
                self.source.describe(),
                self.settings.metrics_timeout
            )),
        }
    }

    fn view(&self, s: &RolloutState, now: u64) -> StatusView {
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
            evidence_summary: s.evidence.summary(),
            evidence: s.evidence.clone(),
            revision: s.revision,
            proxies_applied: standing.applied,
            proxies_live: standing.live,
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

    pub fn verify_audit(&self) -> Result<Result<usize, crate::audit::ChainError>, ServiceError> {
        Ok(self.store.verify()?)
    }

    /// Writes a transition: store first (state + audit in one transaction),
    /// then memory and the served config, then webhooks. A store failure
    /// changes nothing. Every webhook of the rollout before and after the
    /// change hears it, so a delete reaches the receivers the spec named.
    #[allow(clippy::too_many_arguments)]
    fn transition(
        &self,
        state: &mut Rollouts,
        name: &str,
        mut next: Option<RolloutState>,
        bump: bool,
        actor: &str,
        action: &str,
        reason: &str,
        evidence: &Evidence,
    ) -> Result<(), ServiceError> {
        self.forget_holds(name);
        let before = state.rollouts.get(name);
        let from = before.map_or("none".into(), RolloutState::label);
        let to = next.as_ref().map_or("deleted".into(), RolloutState::label);
        let evidence_json = serde_json::to_value(evidence).unwrap_or_default();
        let mut hooks: Vec<String> = self.settings.webhooks.clone();
        for s in before.into_iter().chain(next.as_ref()) {
            for h in &s.spec.webhooks {
                if !hooks.contains(h) {
                    hooks.push(h.clone());
                }
            }
        }
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
        // A revision names one document: whatever changes what the filters
        // receive gets a new one, whoever asked for the change.
        let bump = bump || before.map(served) != next.as_ref().map(served);
        let revision = self
            .store
            .transition(name, next.as_mut(), bump, entry, now)?;
        state.revision = revision;
        match next {
            Some(s) => {
                self.record_point(&s, None, now);
                if action == "abort" {
                    self.note_abort(&s, actor, now);
                }
                state.rollouts.insert(name.to_owned(), s);
            }
            None => {
                state.rollouts.remove(name);
                state.last_analysis.remove(name);
                self.series
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .forget(name);
            }
        }
        let doc = config_of(state);
        *self.flags.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(FlagTable::new(&doc, &state.rollouts));
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(doc);
        let head = self.store.head()?;
        *self.head.write().unwrap_or_else(|e| e.into_inner()) = head.clone();
        tracing::info!(rollout = name, actor, action, %from, %to, reason, "transition");
        self.notifier.notify(
            &hooks,
            &serde_json::json!({
                "rollout": name, "action": action, "actor": actor, "from": from, "to": to,
                "reason": reason, "evidence": evidence_json, "at_ms": now, "revision": revision,
                "audit_head": {"seq": head.seq, "hash": head.hash},
            }),
        );
        Ok(())
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

/// A copy of `name`'s state.
fn current(state: &Rollouts, name: &str) -> Result<RolloutState, ServiceError> {
    state
        .rollouts
        .get(name)
        .cloned()
        .ok_or_else(|| ServiceError::NotFound(name.to_owned()))
}

fn config_of(state: &Rollouts) -> ConfigDoc {
    doc_of(state.revision, state.rollouts.values())
}

/// The document the filters receive for these rollouts and flags.
fn doc_of<'a>(revision: u64, states: impl Iterator<Item = &'a RolloutState>) -> ConfigDoc {
    let mut doc = ConfigDoc {
        revision,
        rollouts: Vec::new(),
        flags: Vec::new(),
    };
    // The arms of an A/B/n rollout, by it: they share one route.
    let mut groups: BTreeMap<&str, Vec<&RolloutState>> = BTreeMap::new();
    for s in states {
        if let Some(group) = &s.spec.arm_of {
            groups.entry(group).or_default().push(s);
            continue;
        }
        match served(s) {
            Served::Flag(flag) => doc.flags.push(flag),
            Served::Rollout(rollout) => doc.rollouts.push(rollout),
        }
    }
    for arms in groups.values() {
        if let Some(first) = arms.first() {
            doc.rollouts
                .push(first.spec.arms_rollout_at(&arm_weights(arms)));
        }
    }
    doc
}

/// Each arm's weight now, by its version.
fn arm_weights(arms: &[&RolloutState]) -> BTreeMap<String, u32> {
    arms.iter()
        .map(|s| (s.spec.canary.clone(), s.weight_bp))
        .collect()
}

/// The states of the arms of A/B/n `group`.
fn arms_of<'a>(state: &'a Rollouts, group: &str) -> Vec<&'a RolloutState> {
    state
        .rollouts
        .values()
        .filter(|s| s.spec.arm_of.as_deref() == Some(group))
        .collect()
}

/// What the filters receive of one rollout or flag.
#[derive(PartialEq)]
enum Served {
    Rollout(dimmer_core::Rollout),
    Flag(dimmer_core::Flag),
}

fn served(s: &RolloutState) -> Served {
    let state = if s.flag_off {
        FlagState::Disabled
    } else {
        FlagState::Enabled
    };
    match s.spec.flag_at(s.weight_bp, state) {
        Some(mut flag) => {
            // Latency per variant is for the analysis: a flag whose
            // rollout has ended costs the proxies no histogram call.
            flag.record_latency = !s.phase.is_final();
            Served::Flag(flag)
        }
        None => Served::Rollout(s.spec.rollout_at(s.weight_bp)),
    }
}

/// Whether the document with `changed` in place of (or without) `name`
/// is one the filters would take: flags bind each other through
/// prerequisites and exclusion groups, and a document the filters refuse
/// would freeze every proxy at its last good config.
fn check_doc(
    state: &Rollouts,
    name: &str,
    changed: Option<&RolloutState>,
) -> Result<(), ServiceError> {
    let others = state
        .rollouts
        .iter()
        .filter(|(n, _)| *n != name)
        .map(|(_, s)| s);
    let doc = doc_of(state.revision, others.chain(changed));
    dimmer_core::validate::validate_rollouts(&doc.rollouts, "rollouts")
        .and_then(|()| dimmer_core::validate::validate_flags(&doc.flags, &doc.rollouts, "flags"))
        .map_err(|e| ServiceError::Refused(e.to_string()))
}

#[cfg(test)]
mod tests;
