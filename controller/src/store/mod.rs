//! The store layer: where the controller's state lives and how every
//! decision is made durable with its audit record. The [`StateStore`] trait
//! and its error; two back-ends that implement it (one SQLite file, or
//! etcd for a fleet, with every write fenced on the leader's lease); and
//! the audit chain (hash-chained, keyed records and the head checkpoint).
//!
//! Back-ends import the trait, never the reverse; [`Store`] is the one
//! place that names them. May import: `dimmer_decide` (the state it keeps),
//! never the service, fleet, API or CLI.

pub mod audit;
mod backend;
pub mod etcd;
mod handle;
pub mod sqlite;

pub use audit::{AuditKey, AuditRecord, Entry, Head};
pub use backend::{Change, StateStore, StoreError};
pub use handle::Store;
pub use sqlite::{default_key_path, head_path, read_head, SqliteStore};
