//! What a change to the service can fail with.

use dimmer_decide::engine::Phase;

use crate::store::StoreError;

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
    /// A spec among several (a sync) does not parse or is invalid: the
    /// message names its file and field.
    #[error("{0}")]
    BadSpec(String),
    /// The change would leave a config the filters refuse.
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
