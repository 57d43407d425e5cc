//! The service: the rollouts in memory and in the store, the config the
//! proxies poll, and every change to them. Every change goes through
//! [`Service::transition`]: the store (state + audit, one transaction),
//! then memory and the config the proxies poll, then webhooks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dimmer_core::config::ConfigDoc;
use dimmer_decide::analysis::team_metrics::Reading;
use dimmer_decide::analysis::Evidence;
use dimmer_decide::counts::Snapshot;
use dimmer_decide::engine::RolloutState;
use tokio::sync::Mutex;

use crate::metrics::MetricsSource;
use crate::notify::webhook::{self, Notifier};
use crate::store::audit::{Entry, Head};
use crate::store::Change;
use crate::store::{Store, StoreError};

use super::clock::now_ms;
use super::error::ServiceError;
use super::flag_table::FlagTable;
use super::registry::{ProxySeen, Registry, RegistryError};
use super::role::Role;
use super::rollback::Rollback;
use super::rollouts::{config_of, served, Rollouts};
use super::series;
use super::settings::Settings;
use super::view::SourceHealth;

pub struct Service {
    pub(super) store: Store,
    pub(super) state: Mutex<Rollouts>,
    pub(super) config: RwLock<Arc<ConfigDoc>>,
    pub(super) flags: RwLock<Arc<FlagTable>>,
    /// Each flag's counts now and then, for evaluations in the last day.
    pub(super) flag_samples: std::sync::Mutex<BTreeMap<String, Vec<(u64, Snapshot)>>>,
    pub(super) last_flag_sample: std::sync::atomic::AtomicU64,
    pub(super) head: RwLock<Head>,
    pub(super) registry: Registry,
    pub(super) source: Arc<dyn MetricsSource>,
    pub(super) source_health: std::sync::Mutex<SourceHealth>,
    pub(super) notifier: Notifier,
    pub(super) settings: Settings,
    /// Each rollout at each look, for the web UI.
    pub(super) series: std::sync::Mutex<series::Series>,
    /// Each abort's way to the proxies: when decided, when the last live
    /// proxy had applied it.
    pub(super) rollbacks: std::sync::Mutex<BTreeMap<String, Rollback>>,
    /// The latest reading of each rollout's own metrics, taken in the
    /// background so a slow provider never delays a look.
    pub(super) readings: Arc<std::sync::Mutex<BTreeMap<String, Reading>>>,
    /// Rollouts whose reading is under way: one at a time each.
    pub(super) reading: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Each rollout's holds since its state was last written.
    pub(super) unsaved_looks: std::sync::Mutex<BTreeMap<String, u32>>,
    /// Why this controller's audit key cannot append to the chain, if it
    /// cannot: it then decides nothing and writes nothing.
    pub(super) key_problem: RwLock<Option<String>>,
    /// The spec's hooks, run in tasks of their own; their results.
    pub(super) hooks: super::hooks::HookRuns,
    pub(super) hook_http: reqwest::Client,
}

/// One rollout's part of a transition, before it is written.
pub(super) struct Pending {
    pub name: String,
    /// The new state; `None`: deleted.
    pub next: Option<RolloutState>,
    pub action: String,
    pub reason: String,
    pub evidence: Evidence,
}

/// The store's verdict on this controller's key: `None` if it signs the
/// chain's head.
fn key_problem(store: &Store) -> Result<Option<String>, ServiceError> {
    match store.check_key() {
        Ok(()) => Ok(None),
        Err(e @ StoreError::KeyMismatch { .. }) => Ok(Some(e.to_string())),
        Err(e) => Err(e.into()),
    }
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
        let key = key_problem(&store)?;
        if let Some(why) = &key {
            tracing::error!(problem = %why, "refusing to decide or write");
        }
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
            key_problem: RwLock::new(key),
            hooks: super::hooks::HookRuns::default(),
            hook_http: crate::tls::client_builder().build().unwrap_or_default(),
        }))
    }

    /// Whether this controller decides: the only one, or the fleet's
    /// leader; never one whose audit key does not sign the chain.
    pub fn is_leader(&self) -> bool {
        self.key_problem().is_none() && self.settings.fleet.as_ref().is_none_or(|r| r.leading())
    }

    /// Why this controller may not write, if its audit key does not sign
    /// the chain's head (checked at start and at every reload).
    pub fn key_problem(&self) -> Option<String> {
        self.key_problem
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether this controller's state is current: always alone; in a fleet,
    /// while etcd answers its keep-alive.
    pub fn in_touch_with_store(&self) -> bool {
        self.settings.fleet.as_ref().is_none_or(|r| r.in_touch())
    }

    /// In a fleet, the role this controller plays.
    pub fn fleet(&self) -> Option<&Arc<Role>> {
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
        let key = key_problem(&self.store)?;
        {
            let mut known = self.key_problem.write().unwrap_or_else(|e| e.into_inner());
            if key.is_some() && *known != key {
                tracing::error!(problem = ?key, "refusing to decide or write");
            }
            *known = key;
        }
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
    pub(super) fn hold_to_save(&self, name: &str) -> bool {
        let mut looks = self.unsaved_looks.lock().unwrap_or_else(|e| e.into_inner());
        let n = looks.entry(name.to_owned()).or_insert(0);
        *n += 1;
        if *n >= SAVE_HOLDS_EVERY {
            *n = 0;
            return true;
        }
        false
    }

    pub(super) fn forget_holds(&self, name: &str) {
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

    /// Writes a transition: store first (state + audit in one transaction),
    /// then memory and the served config, then webhooks. A store failure
    /// changes nothing. Every webhook of the rollout before and after the
    /// change hears it, so a delete reaches the receivers the spec named.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn transition(
        &self,
        state: &mut Rollouts,
        name: &str,
        next: Option<RolloutState>,
        bump: bool,
        actor: &str,
        action: &str,
        reason: &str,
        evidence: &Evidence,
    ) -> Result<(), ServiceError> {
        let one = Pending {
            name: name.to_owned(),
            next,
            action: action.to_owned(),
            reason: reason.to_owned(),
            evidence: evidence.clone(),
        };
        self.transition_many(state, vec![one], bump, actor)
    }

    /// Several transitions made durable as one (one store transaction, one
    /// revision), then each applied to memory and announced as
    /// [`Service::transition`] does.
    pub(super) fn transition_many(
        &self,
        state: &mut Rollouts,
        pending: Vec<Pending>,
        bump: bool,
        actor: &str,
    ) -> Result<(), ServiceError> {
        struct Told {
            hooks: Vec<String>,
            from: String,
            to: String,
            evidence: serde_json::Value,
        }
        let mut told = Vec::with_capacity(pending.len());
        let mut bump = bump;
        for p in &pending {
            self.forget_holds(&p.name);
            let before = state.rollouts.get(&p.name);
            let mut hooks: Vec<String> = self.settings.webhooks.clone();
            for s in before.into_iter().chain(p.next.as_ref()) {
                for h in &s.spec.webhooks {
                    if !hooks.contains(h) {
                        hooks.push(h.clone());
                    }
                }
            }
            // A revision names one document: whatever changes what the
            // filters receive gets a new one, whoever asked for the change.
            bump = bump || before.map(served) != p.next.as_ref().map(served);
            told.push(Told {
                hooks,
                from: before.map_or("none".into(), RolloutState::label),
                to: p
                    .next
                    .as_ref()
                    .map_or("deleted".into(), RolloutState::label),
                evidence: serde_json::to_value(&p.evidence).unwrap_or_default(),
            });
        }
        let now = now_ms();
        let mut changes: Vec<Change<'_>> = pending
            .iter()
            .zip(&told)
            .map(|(p, t)| Change {
                name: &p.name,
                state: p.next.clone(),
                entry: Entry {
                    actor,
                    rollout: &p.name,
                    action: &p.action,
                    from: t.from.clone(),
                    to: t.to.clone(),
                    reason: &p.reason,
                    evidence: t.evidence.clone(),
                },
            })
            .collect();
        let revision = self.store.transition_many(&mut changes, bump, now)?;
        let saved: Vec<Option<RolloutState>> = changes.into_iter().map(|c| c.state).collect();
        state.revision = revision;
        for (p, next) in pending.iter().zip(saved) {
            match next {
                Some(s) => {
                    self.record_point(&s, None, now);
                    if p.action == "abort" {
                        self.note_abort(&s, actor, now);
                    }
                    state.rollouts.insert(p.name.clone(), s);
                }
                None => {
                    state.rollouts.remove(&p.name);
                    state.last_analysis.remove(&p.name);
                    self.hooks.forget(&p.name);
                    self.series
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .forget(&p.name);
                }
            }
        }
        let doc = config_of(state);
        *self.flags.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(FlagTable::new(&doc, &state.rollouts));
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(doc);
        let head = self.store.head()?;
        *self.head.write().unwrap_or_else(|e| e.into_inner()) = head.clone();
        for (p, t) in pending.iter().zip(told) {
            if let Some(next) = &p.next {
                self.hooks.tell(next, &p.action, &self.hook_http);
            }
            let (name, action, reason, from, to) = (&p.name, &p.action, &p.reason, &t.from, &t.to);
            tracing::info!(rollout = %name, actor, action = %action, %from, %to, reason = %reason, "transition");
            self.notifier.notify(
                &t.hooks,
                &serde_json::json!({
                    "rollout": name, "action": action, "actor": actor, "from": from, "to": to,
                    "reason": reason, "evidence": t.evidence, "at_ms": now, "revision": revision,
                    "audit_head": {"seq": head.seq, "hash": head.hash},
                }),
            );
        }
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
