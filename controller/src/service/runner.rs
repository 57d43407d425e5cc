//! The analysis runner: every progressing rollout whose interval has come is
//! measured and decided on. Metrics are read in one batch, under a timeout,
//! before the state lock is taken; the lock is held only to decide and
//! write.

use super::clock::now_ms;
use super::error::ServiceError;
use super::state::Service;
use dimmer_decide::engine::{self, Observation, Phase};
use std::collections::BTreeMap;

use dimmer_decide::counts::{Batch, Snapshot};

impl Service {
    /// One pass of the analysis loop.
    pub async fn tick(&self) {
        // A follower decides nothing: the leader does, and its writes reach
        // this controller through the store's watch.
        if !self.is_leader() {
            return;
        }
        let now = now_ms();
        self.sample_flags_now_and_then(now).await;
        self.time_rollbacks(now);
        // Each due rollout, and the clusters Envoy counts it by, if it is.
        struct Due {
            name: String,
            /// What the filter counts it by: an A/B/n arm's group.
            routed: String,
            revision: u64,
            step: usize,
            clusters: Option<BTreeMap<String, String>>,
            /// With `analysis.metrics`: the spec their queries come from.
            metrics: Option<dimmer_decide::spec::RolloutSpec>,
        }
        let due: Vec<Due> = {
            let mut state = self.state.lock().await;
            let super::rollouts::Rollouts {
                rollouts,
                last_analysis,
                ..
            } = &mut *state;
            let due: Vec<Due> = rollouts
                .values()
                .filter(|s| s.phase == Phase::Progressing)
                .filter(|s| {
                    let last = last_analysis.get(&s.spec.name).copied().unwrap_or(0);
                    now.saturating_sub(last) >= s.spec.analysis.interval.as_millis() as u64
                })
                .map(|s| Due {
                    name: s.spec.name.clone(),
                    routed: s.spec.routed_name().to_owned(),
                    revision: s.revision,
                    step: s.step,
                    clusters: s.spec.counting.envoy_clusters().cloned(),
                    metrics: (!s.spec.analysis.metrics.is_empty()).then(|| s.spec.clone()),
                })
                .collect();
            for d in &due {
                last_analysis.insert(d.name.clone(), now);
            }
            due
        };
        if due.is_empty() {
            return;
        }
        for d in &due {
            if let Some(spec) = &d.metrics {
                self.read_metrics_in_background(spec, now);
            }
        }
        let clustered: Vec<(String, BTreeMap<String, String>)> = due
            .iter()
            .filter_map(|d| Some((d.routed.clone(), d.clusters.clone()?)))
            .collect();
        let mut names: Vec<String> = due
            .iter()
            .filter(|d| d.clusters.is_none())
            .map(|d| d.routed.clone())
            .collect();
        names.sort();
        names.dedup();
        let fetched = self.fetch_with_clusters(&names, &clustered).await;
        for Due {
            name,
            routed,
            revision,
            step,
            ..
        } in due
        {
            let seen = match &fetched {
                Ok(batch) => Ok(batch.get(&routed).cloned().unwrap_or_default()),
                Err(e) => Err(e.clone()),
            };
            let reading = self
                .readings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .cloned();
            if let Err(e) = self
                .look(&name, revision, step, seen, reading.as_ref())
                .await
            {
                tracing::error!(rollout = %name, error = %e, "cannot record a decision");
            }
        }
    }

    /// Starts reading `spec`'s own metrics, unless a reading is under way;
    /// the next look uses it. Never awaited here: a provider that hangs
    /// costs its own timeout in its own task, and its metric holds.
    fn read_metrics_in_background(&self, spec: &dimmer_decide::spec::RolloutSpec, now: u64) {
        let name = spec.name.clone();
        {
            let mut busy = self.reading.lock().unwrap_or_else(|e| e.into_inner());
            if !busy.insert(name.clone()) {
                return;
            }
        }
        let (queries, readings, busy) = (
            std::sync::Arc::clone(&self.settings.queries),
            std::sync::Arc::clone(&self.readings),
            std::sync::Arc::clone(&self.reading),
        );
        let (spec, timeout) = (spec.clone(), self.settings.metrics_timeout);
        tokio::spawn(async move {
            let reading = crate::metrics::providers::read(&*queries, &spec, timeout, now).await;
            readings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone(), reading);
            busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
        });
    }

    /// Keeps the flags' evaluation counts sampled while nobody lists them.
    async fn sample_flags_now_and_then(&self, now: u64) {
        use std::sync::atomic::Ordering;
        let last = self.last_flag_sample.load(Ordering::Relaxed);
        if now.saturating_sub(last) < super::flags::SAMPLE_EVERY_MS {
            return;
        }
        self.last_flag_sample.store(now, Ordering::Relaxed);
        let keys = self.flag_keys().await;
        self.sample_flags(&keys, now).await;
    }

    /// One batch of counts, or why there is none; never longer than the
    /// metrics timeout.
    pub(super) async fn fetch(&self, names: &[String]) -> Result<Batch, String> {
        self.fetch_with_clusters(names, &[]).await
    }

    /// The same, with rollouts counted by Envoy: their clusters' counts,
    /// read beside the filter's under the same timeout, each version
    /// taking its cluster's.
    async fn fetch_with_clusters(
        &self,
        names: &[String],
        clustered: &[(String, BTreeMap<String, String>)],
    ) -> Result<Batch, String> {
        let limit = self.settings.metrics_timeout;
        let clusters: Vec<String> = clustered
            .iter()
            .flat_map(|(_, m)| m.values().cloned())
            .collect();
        let both = async {
            let filter = async {
                if names.is_empty() {
                    Ok(Batch::new())
                } else {
                    self.source.counts(names).await
                }
            };
            let envoy = async {
                if clusters.is_empty() {
                    Ok(Snapshot::default())
                } else {
                    self.source.cluster_counts(&clusters).await
                }
            };
            let (mut batch, by_cluster) = tokio::join!(filter, envoy);
            let by_cluster = by_cluster?;
            if let Ok(batch) = &mut batch {
                for (name, versions) in clustered {
                    batch.insert(name.clone(), Snapshot::of_clusters(&by_cluster, versions));
                }
            }
            batch
        };
        let result = match tokio::time::timeout(limit, both).await {
            Ok(Ok(batch)) => Ok(batch),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "{} did not answer within {:?}",
                self.source.describe(),
                limit
            )),
        };
        let mut h = self.source_health.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(_) => {
                h.last_ok_ms = Some(now_ms());
                h.last_error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "no metrics");
                h.failures += 1;
                h.last_error = Some(e.clone());
            }
        }
        result
    }

    async fn look(
        &self,
        name: &str,
        revision: u64,
        step: usize,
        seen: Result<dimmer_decide::counts::Snapshot, String>,
        reading: Option<&dimmer_decide::analysis::team_metrics::Reading>,
    ) -> Result<(), ServiceError> {
        let mut state = self.state.lock().await;
        let Some(mut current) = state.rollouts.get(name).cloned() else {
            return Ok(());
        };
        if let Some(group) = &current.spec.arm_of {
            current.peers_bp = super::rollouts::arms_of(&state, group)
                .iter()
                .filter(|s| s.spec.name != name)
                .map(|s| s.weight_bp)
                .sum();
        }
        // A person may have acted while the metrics were on their way.
        if current.phase != Phase::Progressing
            || current.revision != revision
            || current.step != step
        {
            return Ok(());
        }
        let now = now_ms();
        let standing = self
            .registry
            .standing(current.revision, current.revision_ms, now);
        // Applying or lagging, every live proxy is waited for.
        let waiting = standing.applying + standing.lagging;
        let mut waiting_named = standing.lagging_named.clone();
        waiting_named.extend(standing.applying_named.iter().cloned());
        waiting_named.sort();
        let lagging = (waiting > 0).then(|| {
            format!(
                "waiting for {} of {} proxies to apply revision {}: {} (each is waited for up to {}s, then reported stale)",
                waiting,
                standing.live,
                current.revision,
                super::registry::some_of(&waiting_named, waiting),
                self.registry.limits().stale_ms / 1000
            )
        });
        // A `rollout` hook that failed aborts at once; gates not yet passed
        // hold a step up like a lagging proxy does.
        if let Some(why) = self.hooks.failed_check(&current, &self.hook_http, now) {
            let mut next = current.clone();
            let bump = engine::apply(
                &mut next,
                &engine::Decision::Abort {
                    reason: why.clone(),
                },
                None,
                now,
            );
            let mut evidence = current.evidence.clone();
            evidence.hooks = self.hooks.results(&current);
            return self.transition(
                &mut state,
                name,
                Some(next),
                bump,
                "controller",
                "abort",
                &why,
                &evidence,
            );
        }
        let lagging = match (lagging, self.hooks.blocking(&current, &self.hook_http, now)) {
            (Some(l), Some(h)) => Some(format!("{l}; {h}")),
            (l, h) => l.or(h),
        };
        let observation = match &seen {
            Ok(snap) => Observation::Counts(snap),
            Err(why) => Observation::Lost(why),
        };
        let engine::Outcome {
            decision,
            mut evidence,
            next,
        } = engine::advance_with(&current, observation, reading, now, lagging);
        if decision.action().is_some() {
            evidence.hooks = self.hooks.results(&current);
        }
        match decision.action() {
            None => {
                // A transition records its own point.
                self.record_point(&next, seen.as_ref().ok(), now);
                // A step's baseline is kept at once: the traffic judged
                // starts where the step began, across a restart too.
                let baseline_taken =
                    current.step_baseline.is_none() && next.step_baseline.is_some();
                if self.hold_to_save(name) || baseline_taken {
                    self.store.save_quietly(&next)?;
                }
                state.rollouts.insert(name.to_owned(), next);
                Ok(())
            }
            Some(action) => {
                let bump = next.weight_bp != current.weight_bp;
                self.transition(
                    &mut state,
                    name,
                    Some(next),
                    bump,
                    "controller",
                    action,
                    decision.reason(),
                    &evidence,
                )
            }
        }
    }
}
