//! The sync layer: GitOps from a directory. Reading a directory of specs
//! (`dir`), for `dimmer sync`/`diff` and the controller's own `--sync`
//! (`watch`, which converges every few seconds while it leads). What a sync
//! does with the specs is the service's (`Service::sync`).
//!
//! May import: `service`, `dimmer_decide`; never the fleet, API or CLI.

pub mod dir;
mod watch;

pub use dir::{read, DirError};
pub use watch::watch;
