//! Which of a rollout's hooks stand between it and its next step: pure, so
//! the runner only runs what this names and says what it waits for.

use crate::spec::{Hook, HookKind};

use super::state::RolloutState;

/// The hooks that must pass before `state` leaves its current step: every
/// `pre-step`, and the `confirm-promotion` ones when the canary is about to
/// take everyone (the next step is 100%, or there is none).
pub fn gates(state: &RolloutState) -> Vec<&Hook> {
    let next = state.spec.steps.get(state.step + 1);
    let to_everyone = next.is_none_or(|s| s.percent >= 100.0);
    state
        .spec
        .hooks
        .iter()
        .filter(|h| match h.kind {
            HookKind::PreStep => next.is_some(),
            HookKind::ConfirmPromotion => to_everyone && state.weight_bp < 10_000,
            _ => false,
        })
        .collect()
}

/// The `rollout` hooks: run once in each step; a failure aborts.
pub fn checks(state: &RolloutState) -> Vec<&Hook> {
    state
        .spec
        .hooks
        .iter()
        .filter(|h| h.kind == HookKind::Rollout)
        .collect()
}
