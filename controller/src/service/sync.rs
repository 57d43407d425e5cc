//! GitOps: a directory of specs is the truth, and the service converges on
//! it. Every file is checked first — one bad file and nothing is applied;
//! then each spec is applied as `dimmer apply` would (an unchanged spec
//! writes no record and no revision, so a person's abort, pause or flag
//! switch stands until the spec itself changes); a rollout the directory no
//! longer holds is deleted only when asked to prune.

use std::collections::BTreeSet;

use dimmer_decide::spec::RolloutSpec;
use serde::{Deserialize, Serialize};

use super::error::ServiceError;
use super::state::Service;
use super::view::Applied;

/// Most files one sync takes.
pub const MAX_FILES: usize = 256;

/// One spec file as read from the directory: its path (for errors) and text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecFile {
    pub path: String,
    pub text: String,
}

/// What a sync did, or (dry run) would do, by rollout name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncReport {
    pub created: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
    /// Deleted (with prune), or that prune would delete.
    pub deleted: Vec<String>,
    /// Not in the directory and kept, because prune was not asked.
    pub kept: Vec<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    Create,
    Change,
    Keep,
}

impl Service {
    /// Converges on `files`; `actor` names who synced (`sync` for the
    /// controller's own `--sync`, the token's name for `dimmer sync`).
    pub async fn sync(
        &self,
        files: Vec<SpecFile>,
        prune: bool,
        dry_run: bool,
        actor: &str,
    ) -> Result<SyncReport, ServiceError> {
        if files.len() > MAX_FILES {
            return Err(ServiceError::BadSpec(format!(
                "{} spec files: at most {MAX_FILES} a sync",
                files.len()
            )));
        }
        // Every file checked before anything is applied.
        let mut specs: Vec<RolloutSpec> = Vec::with_capacity(files.len());
        let mut seen = BTreeSet::new();
        for f in &files {
            let spec = RolloutSpec::from_yaml(&f.text)
                .map_err(|e| ServiceError::BadSpec(format!("{}: {e}; nothing applied", f.path)))?;
            if !seen.insert(spec.name.clone()) {
                return Err(ServiceError::BadSpec(format!(
                    "{}: a second spec named {:?}; nothing applied",
                    f.path, spec.name
                )));
            }
            specs.push(spec);
        }
        let mut report = SyncReport {
            dry_run,
            ..SyncReport::default()
        };
        let plans: Vec<Plan> = {
            let state = self.state.lock().await;
            let plans = specs
                .iter()
                .map(|s| self.plan(&state, s, actor))
                .collect::<Result<Vec<_>, _>>()?;
            // What the directory no longer holds, by the name it was applied as.
            let held: BTreeSet<String> = state
                .rollouts
                .values()
                .map(|s| s.spec.routed_name().to_owned())
                .collect();
            for name in held.difference(&seen) {
                if prune {
                    report.deleted.push(name.clone());
                } else {
                    report.kept.push(name.clone());
                }
            }
            plans
        };
        for (spec, plan) in specs.into_iter().zip(plans) {
            let name = spec.name.clone();
            match plan {
                Plan::Keep => report.unchanged.push(name),
                Plan::Create | Plan::Change => {
                    if !dry_run {
                        self.apply(spec, actor, false).await?;
                    }
                    if plan == Plan::Create {
                        report.created.push(name);
                    } else {
                        report.changed.push(name);
                    }
                }
            }
        }
        if !dry_run {
            for name in &report.deleted {
                self.delete(name, actor, "no longer in the synced directory (--prune)")
                    .await?;
            }
        }
        Ok(report)
    }
}

impl Service {
    /// What applying `spec` would do, as `apply` itself decides it (an
    /// A/B/n spec by its arms); a spec `apply` would refuse is refused here.
    fn plan(
        &self,
        state: &super::rollouts::Rollouts,
        spec: &RolloutSpec,
        actor: &str,
    ) -> Result<Plan, ServiceError> {
        let applied = |s: RolloutSpec| self.prepare(state, s, actor, false).map(|p| p.1);
        if spec.arms.is_empty() {
            return Ok(match applied(spec.clone())? {
                Applied::Created => Plan::Create,
                Applied::Unchanged => Plan::Keep,
                Applied::Changed | Applied::Restarted => Plan::Change,
            });
        }
        let arms = spec.arm_specs();
        let now = super::rollouts::arms_of(state, &spec.name).len();
        if now == 0 {
            return Ok(Plan::Create);
        }
        let mut same = now == arms.len();
        for arm in arms {
            same &= applied(arm)? == Applied::Unchanged;
        }
        Ok(if same { Plan::Keep } else { Plan::Change })
    }
}
