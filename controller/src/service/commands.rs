//! What people do: apply, delete, and the commands on a rollout. None waits
//! on the network: a step a person starts has no baseline until the
//! runner's next look, which takes one.

use serde::{Deserialize, Serialize};

use super::{now_ms, Service, ServiceError, StatusView};
use crate::analysis::Evidence;
use crate::engine::{self, Decision, Phase, RolloutState};
use crate::spec::RolloutSpec;

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

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Applied {
    /// A new rollout, at its first step.
    Created,
    /// A changed spec: restarted at its first step.
    Changed,
    /// The same spec: nothing changed, whatever the phase.
    Unchanged,
    /// The same spec, restarted on request (`--restart`).
    Restarted,
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
        let name = spec.name.clone();
        let before = state.rollouts.get(&name);
        if let Some(b) = before {
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
        if applied != Applied::Unchanged {
            let mut next = RolloutState::new(spec, now_ms());
            // A flag a person turned off stays off until a person turns it on.
            next.flag_off = flag_off;
            super::check_doc(&state, &name, Some(&next))?;
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
            self.transition(
                &mut state,
                &name,
                Some(next),
                true,
                actor,
                action,
                &reason,
                &Evidence::default(),
            )?;
        }
        let Some(s) = state.rollouts.get(&name) else {
            return Err(ServiceError::NotFound(name));
        };
        let mut view = self.view(s, now_ms());
        view.applied = Some(applied);
        Ok(view)
    }

    pub async fn delete(&self, name: &str, actor: &str, reason: &str) -> Result<(), ServiceError> {
        let mut state = self.state.lock().await;
        if !state.rollouts.contains_key(name) {
            return Err(ServiceError::NotFound(name.to_owned()));
        }
        super::check_doc(&state, name, None)?;
        self.transition(
            &mut state,
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
        let current = super::current(&state, name)?;
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
        self.transition(
            &mut state,
            name,
            Some(next),
            bump,
            actor,
            cmd.verb(),
            reason,
            &evidence,
        )?;
        Ok(self.view(&super::current(&state, name)?, now))
    }
}
