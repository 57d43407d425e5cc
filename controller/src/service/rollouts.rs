//! The rollouts in memory, and the config document the proxies poll, built
//! from their states, with the check that a change leaves one the filters
//! accept.

use std::collections::{BTreeMap, HashMap};

use dimmer_core::config::{ConfigDoc, FlagState};
use dimmer_decide::engine::RolloutState;

use super::error::ServiceError;

/// Every rollout as this controller holds it, and the config revision.
pub(super) struct Rollouts {
    pub(super) rollouts: BTreeMap<String, RolloutState>,
    pub(super) revision: u64,
    /// When each progressing rollout was last analysed.
    pub(super) last_analysis: HashMap<String, u64>,
}

/// A copy of `name`'s state.
pub(super) fn current(state: &Rollouts, name: &str) -> Result<RolloutState, ServiceError> {
    state
        .rollouts
        .get(name)
        .cloned()
        .ok_or_else(|| ServiceError::NotFound(name.to_owned()))
}

pub(super) fn config_of(state: &Rollouts) -> ConfigDoc {
    doc_of(state.revision, state.rollouts.values())
}

/// The document the filters receive for these rollouts and flags.
pub(super) fn doc_of<'a>(
    revision: u64,
    states: impl Iterator<Item = &'a RolloutState>,
) -> ConfigDoc {
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
pub(super) fn arm_weights(arms: &[&RolloutState]) -> BTreeMap<String, u32> {
    arms.iter()
        .map(|s| (s.spec.canary.clone(), s.weight_bp))
        .collect()
}

/// The states of the arms of A/B/n `group`.
pub(super) fn arms_of<'a>(state: &'a Rollouts, group: &str) -> Vec<&'a RolloutState> {
    state
        .rollouts
        .values()
        .filter(|s| s.spec.arm_of.as_deref() == Some(group))
        .collect()
}

/// What the filters receive of one rollout or flag.
#[derive(PartialEq)]
pub(super) enum Served {
    Rollout(dimmer_core::Rollout),
    Flag(dimmer_core::Flag),
}

pub(super) fn served(s: &RolloutState) -> Served {
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
pub(super) fn check_doc(
    state: &Rollouts,
    name: &str,
    changed: Option<&RolloutState>,
) -> Result<(), ServiceError> {
    check_docs(state, &[(name, changed)])
}

/// The same for several rollouts changed at once.
pub(super) fn check_docs(
    state: &Rollouts,
    changes: &[(&str, Option<&RolloutState>)],
) -> Result<(), ServiceError> {
    let others = state
        .rollouts
        .iter()
        .filter(|(n, _)| !changes.iter().any(|(c, _)| c == n))
        .map(|(_, s)| s);
    let changed = changes.iter().filter_map(|(_, s)| *s);
    let doc = doc_of(state.revision, others.chain(changed));
    dimmer_core::validate::validate_rollouts(&doc.rollouts, "rollouts")
        .and_then(|()| dimmer_core::validate::validate_flags(&doc.flags, &doc.rollouts, "flags"))
        .map_err(|e| ServiceError::Refused(e.to_string()))
}
