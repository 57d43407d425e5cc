//! The rollout engine: a rollout's state, and the pure transition from a
//! state and what was just seen (fresh counts, a lost source, a person's
//! command) to a decision and the next state. Nothing here reads a clock
//! or writes anything: the caller passes the time in and applies the
//! decision (store, audit, webhooks).
//!
//! May import: `spec`, `analysis`, `counts`.

mod advance;
pub mod gates;
mod state;
#[cfg(test)]
mod tests;

pub use advance::{
    advance, advance_with, apply, awaits_approval, is_inconclusive, next_step, Decision,
    Observation, Outcome, AWAITING_APPROVAL, INCONCLUSIVE,
};
pub use state::{Phase, RolloutState};
