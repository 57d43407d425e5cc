//! The narrow trait every place the state can live in implements (one
//! SQLite file, or etcd for a fleet), and its error. Back-ends import this;
//! it imports none of them.
//!
//! Every transition is one transaction that writes the new state and its
//! audit record together, so a SIGKILL at any moment leaves either both or
//! neither.

use dimmer_decide::engine::RolloutState;

use super::audit::{AuditKey, AuditRecord, ChainError, Entry, Head};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("etcd: {0}")]
    Etcd(String),
    /// The write was refused because this controller does not hold the
    /// leader's lease (or never did): it must not decide.
    #[error("not written: this controller is not the leader ({0})")]
    Fenced(String),
    #[error("state database holds unreadable state for {name}: {source}")]
    Corrupt {
        name: String,
        source: serde_json::Error,
    },
    #[error("audit head file {path}: {reason}")]
    HeadFile { path: String, reason: String },
    /// The chain's head was checkpointed with another key: appending with
    /// this one would leave a record no other controller can verify.
    #[error("audit key does not match the chain's: record {seq} was checkpointed with another key; this controller will not write (it still serves reads); start it with the fleet's --audit-key")]
    KeyMismatch { seq: i64 },
}

/// One rollout's part of a transition: its new state (`None`: deleted)
/// and the audit record that says why.
pub struct Change<'a> {
    pub name: &'a str,
    pub state: Option<RolloutState>,
    pub entry: Entry<'a>,
}

pub trait StateStore: Send + Sync {
    /// The key this store checkpoints the chain with.
    fn audit_key(&self) -> &AuditKey;
    /// Whether this store's audit key signs the chain's head; if not,
    /// [`StoreError::KeyMismatch`], and every write is refused.
    fn check_key(&self) -> Result<(), StoreError> {
        let head = self.head()?;
        if self.audit_key().signs(&head) {
            Ok(())
        } else {
            Err(StoreError::KeyMismatch { seq: head.seq })
        }
    }
    /// The audit chain's head as the log has it.
    fn head(&self) -> Result<Head, StoreError>;
    /// The head checkpoint kept apart from the log, `None` if there is none.
    fn head_file(&self) -> Result<Option<Head>, StoreError>;
    /// The chain verified from genesis: its length, or where it breaks.
    fn verify(&self) -> Result<Result<usize, ChainError>, StoreError>;
    /// The config revision the proxies poll for.
    fn revision(&self) -> Result<u64, StoreError>;
    fn rollouts(&self) -> Result<Vec<RolloutState>, StoreError>;
    /// One decision made durable: `state` saved (or the rollout `name`
    /// deleted when `None`), the revision bumped if `bump`, and `entry`
    /// chained onto the audit log, all at once. Returns the revision.
    fn transition(
        &self,
        name: &str,
        state: Option<&mut RolloutState>,
        bump: bool,
        entry: Entry<'_>,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut changes = [Change {
            name,
            state: state.as_deref().cloned(),
            entry,
        }];
        let revision = self.transition_many(&mut changes, bump, now_ms)?;
        if let (
            Some(s),
            [Change {
                state: Some(saved), ..
            }],
        ) = (state, &changes)
        {
            *s = saved.clone();
        }
        Ok(revision)
    }
    /// Several decisions made durable as one: every state saved or deleted,
    /// the revision bumped once if `bump` (each saved state then carries
    /// it), and every entry chained in order — all at once, or none.
    fn transition_many(
        &self,
        changes: &mut [Change<'_>],
        bump: bool,
        now_ms: u64,
    ) -> Result<u64, StoreError>;
    /// The state saved without an audit record: the evidence a hold adds.
    fn save_quietly(&self, state: &RolloutState) -> Result<(), StoreError>;
    /// The audit log, of one rollout or all.
    fn audit(&self, rollout: Option<&str>) -> Result<Vec<AuditRecord>, StoreError>;
}
