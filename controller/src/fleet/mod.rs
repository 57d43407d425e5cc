//! The fleet layer: several controllers on one etcd. The election (one
//! leader under a lease decides; every controller follows the state by a
//! watch and shares which proxies poll it) and the forwarding of a mutating
//! call from a follower to the leader.
//!
//! The role a controller plays is the service's (`crate::service::Role`):
//! the service reads it, the election sets it, so neither imports the
//! other's back. May import: `service`, `store`, `dimmer_decide`; never
//! the API or the CLI.

mod election;
mod forward;

pub use election::Fleet;
pub use forward::to_leader;
