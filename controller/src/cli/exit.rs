//! The exit codes a pipeline can trust (docs/pipeline.md): a release that
//! went out is 0; one rolled back, one still waiting when time ran out, one
//! waiting for a person's approval, and a controller that cannot be reached
//! each have a code of their own.

use std::process::ExitCode;

use super::client::ClientError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Done: completed, every live proxy applied (or a command that succeeded).
    Completed = 0,
    /// Any other error: a refused request, a bad spec, a bad argument.
    Failed = 1,
    /// The rollout was aborted: its canary is back at 0%.
    Aborted = 3,
    /// `--timeout` passed before the rollout was done.
    TimedOut = 4,
    /// The rollout waits for a person (`dimmer promote`) at an approval gate.
    AwaitingApproval = 5,
    /// The controller could not be reached.
    Unreachable = 6,
}

/// A command that ends with a code of its own; `message` says why, with the
/// reason and the evidence.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exited {
    pub code: Code,
    pub message: String,
}

impl Exited {
    pub fn new(code: Code, message: impl Into<String>) -> Exited {
        Exited {
            code,
            message: message.into(),
        }
    }
}

/// The code a command's error ends the process with.
pub fn code_of(e: &anyhow::Error) -> Code {
    if let Some(x) = e.downcast_ref::<Exited>() {
        return x.code;
    }
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Unreachable { .. }) => Code::Unreachable,
        _ => Code::Failed,
    }
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c as u8)
    }
}
