//! The controller's state and every change to it, shared by the API and the
//! analysis runner. Every change goes through [`Service::transition`]: the
//! store (state + audit, one transaction), then memory and the config the
//! proxies poll, then webhooks.
//!
//! No network I/O ever happens under the state lock: metrics are read by
//! the runner before it takes the lock, webhooks leave through a queue, and
//! config polls read a copy that is swapped whole after each change, so a
//! hanging metrics source or receiver cannot delay a poll or an abort.
//!
//! May import: `store`, `metrics`, `notify`, `dimmer_decide`; never the
//! fleet, the API or the CLI (the fleet sets this layer's [`Role`]).

mod clock;
mod commands;
mod error;
mod flag_table;
mod flags;
mod hooks;
pub mod overview;
pub mod registry;
mod role;
mod rollback;
mod rollouts;
mod runner;
pub mod series;
mod settings;
mod state;
mod status;
mod sync;
mod view;
mod watch;

#[cfg(test)]
mod tests;

pub use clock::now_ms;
pub use commands::Command;
pub use error::ServiceError;
pub use flag_table::{FlagTable, FlagView};
pub use registry::{Limits, ProxySeen, Registry, RegistryError};
pub use role::Role;
pub use rollback::Rollback;
pub use settings::Settings;
pub use state::{Service, SAVE_HOLDS_EVERY};
pub use sync::{SpecFile, SyncReport, MAX_FILES as SYNC_MAX_FILES};
pub use view::{Applied, SourceHealth, StatusView};
