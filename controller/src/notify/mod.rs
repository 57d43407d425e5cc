//! The notify layer: state changes POSTed as JSON to the rollout's webhook
//! URLs, from a bounded queue with retries, so a slow or dead receiver never
//! delays a decision. May import: `dimmer_decide`; never the service,
//! fleet, API or CLI.

pub mod webhook;

pub use webhook::{HookStats, Notifier, Policy};
