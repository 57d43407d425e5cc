//! `dimmer serve --sync DIR`: the directory read every few seconds and
//! converged on while this controller leads. A directory that did not
//! change is not synced again, so what a person did by hand (an abort, a
//! pause, a flag switched off, a delete) stands until the specs change.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::service::{Service, SpecFile};

/// Who the audit log names for the controller's own syncs.
pub const ACTOR: &str = "sync";

fn fingerprint(files: &[SpecFile]) -> u64 {
    let mut h = DefaultHasher::new();
    for f in files {
        f.path.hash(&mut h);
        f.text.hash(&mut h);
    }
    h.finish()
}

/// Runs until the process ends.
pub async fn watch(service: Arc<Service>, dir: PathBuf, prune: bool, every: Duration) {
    let mut synced: Option<u64> = None;
    let mut last_problem = String::new();
    loop {
        tokio::time::sleep(every).await;
        if !service.is_leader() {
            // A new leader syncs from scratch.
            synced = None;
            continue;
        }
        let files = match super::dir::read(&dir) {
            Ok(f) => f,
            Err(e) => {
                let problem = e.to_string();
                if problem != last_problem {
                    tracing::error!(dir = %dir.display(), problem = %problem, "sync: nothing applied");
                    last_problem = problem;
                }
                continue;
            }
        };
        let print = fingerprint(&files);
        if synced == Some(print) {
            continue;
        }
        match service.sync(files, prune, false, ACTOR).await {
            Ok(r) => {
                synced = Some(print);
                last_problem.clear();
                tracing::info!(
                    dir = %dir.display(),
                    created = ?r.created,
                    changed = ?r.changed,
                    deleted = ?r.deleted,
                    kept = ?r.kept,
                    "synced"
                );
            }
            Err(e) => {
                let problem = e.to_string();
                if problem != last_problem {
                    tracing::error!(dir = %dir.display(), problem = %problem, "sync: not applied");
                    last_problem = problem;
                }
            }
        }
    }
}
