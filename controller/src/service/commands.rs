//! What people do: apply, delete, and the commands on a rollout. None waits
//! on the network: a step a person starts has no baseline until the
//! runner's next look, which takes one.

use super::clock::now_ms;
use super::error::ServiceError;
use super::state::{Pending, Service};
use super::view::{Applied, StatusView};
use dimmer_decide::analysis::Evidence;
use dimmer_decide::engine::{self, Decision, Phase, RolloutState};
use dimmer_decide::spec::RolloutSpec;

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

impl Service {
    /// Applies a spec. An unchanged spec changes nothing in any phase, so a
    /// GitOps loop may re-apply forever; a finished rollout runs again only
    /// for a changed spec or an explicit, audited `restart`.
    pub async fn apply(
        &self,
        spec: RolloutSpec,
        actor: &str,
        restart: bool,
    ) -> Result<StatusView, ServiceError> {
        let mut state = self.state.lock().await;
        if spec.arms.is_empty() || spec.arm_of.is_some() {
            return self.apply_one(&mut state, spec, actor, restart);
        }
        // A/B/n: every arm in one go, under one lock; arms the spec no
        // longer lists are deleted, the others applied as rollouts.
        let group = spec.name.clone();
        if state.rollouts.contains_key(&group) {
            return Err(ServiceError::Refused(format!(
                "{group:?} is a rollout with one canary; this spec is an A/B/n: delete it first, or use another name"
            )));
        }
        let arms = spec.arm_specs();
        let gone: Vec<String> = super::rollouts::arms_of(&state, &group)
            .iter()
            .map(|s| s.spec.name.clone())
            .filter(|n| !arms.iter().any(|a| &a.name == n))
            .collect();
        for name in gone {
            self.delete_one(
                &mut state,
                &name,
                actor,
                "no longer an arm of the applied spec",
            )?;
        }
        let mut views = Vec::new();
        for arm in arms {
            views.push(self.apply_one(&mut state, arm, actor, restart)?);
        }
        let mut view = views
            .first()
            .cloned()
            .ok_or(ServiceError::NotFound(group))?;
        view.arms = views;
        Ok(view)
    }

    fn apply_one(
        &self,
        state: &mut super::rollouts::Rollouts,
        spec: RolloutSpec,
        actor: &str,
        restart: bool,
    ) -> Result<StatusView, ServiceError> {
        let (name, applied, pending) = self.prepare(state, spec, actor, restart)?;
        if let Some(p) = pending {
            super::rollouts::check_doc(state, &name, p.next.as_ref())?;
            self.transition_many(state, vec![p], true, actor)?;
        }
        let Some(s) = state.rollouts.get(&name) else {
            return Err(ServiceError::NotFound(name));
        };
        let mut view = self.view(s, now_ms());
        view.applied = Some(applied);
        Ok(view)
    }

    /// What applying `spec` does: its name, created / changed / unchanged
    /// / restarted, and the transition to write (none if unchanged).
    pub(super) fn prepare(
        &self,
        state: &super::rollouts::Rollouts,
        spec: RolloutSpec,
        actor: &str,
        restart: bool,
    ) -> Result<(String, Applied, Option<Pending>), ServiceError> {
        let name = spec.name.clone();
        if spec.arm_of.is_none() && !super::rollouts::arms_of(state, &name).is_empty() {
            return Err(ServiceError::Refused(format!(
                "{name:?} is an A/B/n rollout; this spec has one canary: delete it first, or use another name"
            )));
        }
        let before = state.rollouts.get(&name);
        if let Some(b) = before {
            if b.spec.arm_of != spec.arm_of {
                return Err(ServiceError::Refused(format!(
                    "{name:?} is a rollout of its own, not an arm of this A/B/n: delete it first, or use another name"
                )));
            }
            if b.spec.is_flag() != spec.is_flag() {
                let (was, is) = if b.spec.is_flag() {
                    ("a flag", "a rollout")
                } else {
                    ("a rollout", "a flag")
                };
                return Err(ServiceError::Refused(format!(
                    "{name:?} is {was}; this spec is {is}: delete it first, or use another name"
                )));
            }
        }
        let flag_off = before.is_some_and(|b| b.flag_off);
        let applied = match before {
            None => Applied::Created,
            Some(s) if s.spec != spec => Applied::Changed,
            Some(_) if restart => Applied::Restarted,
            Some(_) => Applied::Unchanged,
        };
        if applied == Applied::Unchanged {
            return Ok((name, applied, None));
        }
        let mut next = RolloutState::new(spec, now_ms());
        // A flag a person turned off stays off until a person turns it on.
        next.flag_off = flag_off;
        let pct = next.weight_bp as f64 / 100.0;
        let (action, reason) = match applied {
            Applied::Created => ("apply", format!("applied; starting at {pct}%")),
            Applied::Changed => ("apply", format!("spec changed; restarting at {pct}%")),
            _ => (
                "restart",
                format!("restarted by {actor}; starting at {pct}%"),
            ),
        };
        next.reason = reason.clone();
        let pending = Pending {
            name: name.clone(),
            next: Some(next),
            action: action.to_owned(),
            reason,
            evidence: Evidence::default(),
        };
        Ok((name, applied, Some(pending)))
    }

    /// Several specs (a multi-document file) applied as one change: every
    /// one checked first, and the config they make together; then all
    /// written in one transaction and one revision, or none.
    pub async fn apply_many(
        &self,
        specs: Vec<RolloutSpec>,
        actor: &str,
    ) -> Result<Vec<StatusView>, ServiceError> {
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in specs.iter().enumerate() {
            if !s.arms.is_empty() {
                return Err(ServiceError::BadSpec(format!(
                    "document {i} ({}): an A/B/n spec is applied on its own, not with others; nothing applied",
                    s.name
                )));
            }
            if !names.insert(s.name.clone()) {
                return Err(ServiceError::BadSpec(format!(
                    "document {i} ({}): a second spec of that name; nothing applied",
                    s.name
                )));
            }
        }
        let mut state = self.state.lock().await;
        let mut prepared = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            let shown = spec.name.clone();
            let (name, applied, pending) =
                self.prepare(&state, spec, actor, false).map_err(|e| {
                    ServiceError::Refused(format!("document {i} ({shown}): {e}; nothing applied"))
                })?;
            prepared.push((name, applied, pending));
        }
        let changes: Vec<(&str, Option<&RolloutState>)> = prepared
            .iter()
            .filter_map(|(n, _, p)| Some((n.as_str(), p.as_ref()?.next.as_ref())))
            .collect();
        super::rollouts::check_docs(&state, &changes)?;
        let mut applied_of = Vec::with_capacity(prepared.len());
        let mut pending = Vec::new();
        for (name, applied, p) in prepared {
            applied_of.push((name, applied));
            pending.extend(p);
        }
        if !pending.is_empty() {
            self.transition_many(&mut state, pending, true, actor)?;
        }
        let now = now_ms();
        applied_of
            .into_iter()
            .map(|(name, applied)| {
                let s = state
                    .rollouts
                    .get(&name)
                    .ok_or_else(|| ServiceError::NotFound(name.clone()))?;
                let mut view = self.view(s, now);
                view.applied = Some(applied);
                Ok(view)
            })
            .collect()
    }

    pub async fn delete(&self, name: &str, actor: &str, reason: &str) -> Result<(), ServiceError> {
        let mut state = self.state.lock().await;
        // An A/B/n rollout's name deletes every arm.
        let names: Vec<String> = if state.rollouts.contains_key(name) {
            vec![name.to_owned()]
        } else {
            super::rollouts::arms_of(&state, name)
                .iter()
                .map(|s| s.spec.name.clone())
                .collect()
        };
        if names.is_empty() {
            return Err(ServiceError::NotFound(name.to_owned()));
        }
        for name in names {
            super::rollouts::check_doc(&state, &name, None)?;
            self.delete_one(&mut state, &name, actor, reason)?;
        }
        Ok(())
    }

    fn delete_one(
        &self,
        state: &mut super::rollouts::Rollouts,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(), ServiceError> {
        self.transition(
            state,
            name,
            None,
            true,
            actor,
            "delete",
            reason,
            &Evidence::default(),
        )
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
        let mut state = self.state.lock().await;
        if !state.rollouts.contains_key(name) && cmd != Command::Promote {
            // An A/B/n rollout's name: the command goes to every arm it fits.
            let arms: Vec<String> = super::rollouts::arms_of(&state, name)
                .iter()
                .filter(|s| !s.phase.is_final())
                .map(|s| s.spec.name.clone())
                .collect();
            if !arms.is_empty() {
                drop(state);
                let mut views = Vec::new();
                for arm in arms {
                    match Box::pin(self.command(&arm, cmd, actor, reason)).await {
                        Ok(v) => views.push(v),
                        Err(ServiceError::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                let mut view = views
                    .first()
                    .cloned()
                    .ok_or_else(|| ServiceError::NotFound(name.to_owned()))?;
                view.arms = views;
                return Ok(view);
            }
        }
        let current = super::rollouts::current(&state, name)?;
        let conflict = || ServiceError::Conflict {
            name: name.to_owned(),
            phase: current.phase,
            action: cmd.verb(),
        };
        let now = now_ms();
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
                bump = engine::apply(&mut next, &d, None, now);
            }
            // An A/B/n arm that passed every step wins: it takes everyone,
            // and every other arm ends at 0.
            Command::Promote
                if current.phase == Phase::Completed
                    && current.weight_bp < 10_000
                    && current.spec.arm_of.is_some() =>
            {
                next.weight_bp = 10_000;
                next.reason = format!("chosen as the winner by {actor}: {reason}");
                bump = true;
                let group = current.spec.arm_of.clone().unwrap_or_default();
                let losers: Vec<dimmer_decide::engine::RolloutState> =
                    super::rollouts::arms_of(&state, &group)
                        .into_iter()
                        .filter(|s| s.spec.name != name && s.weight_bp > 0)
                        .cloned()
                        .collect();
                for mut loser in losers {
                    let why = format!("{} won (chosen by {actor})", current.spec.canary);
                    let d = Decision::Abort {
                        reason: why.clone(),
                    };
                    engine::apply(&mut loser, &d, None, now);
                    let evidence = loser.evidence.clone();
                    let loser_name = loser.spec.name.clone();
                    self.transition(
                        &mut state,
                        &loser_name,
                        Some(loser),
                        true,
                        actor,
                        "abort",
                        &why,
                        &evidence,
                    )?;
                }
            }
            Command::Promote if !current.phase.is_final() => {
                // Skips the wait and the gate of the current step; the next
                // step is judged only on its own data, from a baseline the
                // runner takes at its next look.
                let why = format!("promoted by {actor}: {reason}");
                let d =
                    engine::next_step(&current, &why).unwrap_or(Decision::Complete { reason: why });
                bump = engine::apply(&mut next, &d, None, now);
            }
            _ => return Err(conflict()),
        }
        let evidence = current.evidence.clone();
        let recorded = if cmd == Command::Promote {
            without_evidence(reason, &evidence)
        } else {
            reason.to_owned()
        };
        self.transition(
            &mut state,
            name,
            Some(next),
            bump,
            actor,
            cmd.verb(),
            &recorded,
            &evidence,
        )?;
        Ok(self.view(&super::rollouts::current(&state, name)?, now))
    }
}

impl Service {
    /// The team a rollout, an A/B/n or a flag belongs to (`Some(None)`: to
    /// none); `None` when there is no such name. A flag's team is its owner.
    pub async fn team_of(&self, name: &str) -> Option<Option<String>> {
        let state = self.state.lock().await;
        let of = |s: &RolloutState| s.spec.team().map(str::to_owned);
        if let Some(s) = state.rollouts.get(name) {
            return Some(of(s));
        }
        super::rollouts::arms_of(&state, name)
            .first()
            .map(|s| of(s))
    }
}

/// A person's promote, recorded with what the data had not yet shown: the
/// audit says the canary went up without evidence of safety, and on which
/// bounds.
fn without_evidence(reason: &str, evidence: &Evidence) -> String {
    let missing: Vec<String> = evidence
        .safety
        .iter()
        .filter(|r| !r.within)
        .map(|r| format!("{} at most {} > {}", r.test, r.bound_text, r.tolerance_text))
        .collect();
    if missing.is_empty() {
        return reason.to_owned();
    }
    format!(
        "{reason} (promoted without evidence of safety: {})",
        missing.join(", ")
    )
}
