//! The `dimmer` controller and CLI, by layer: each layer a folder whose
//! `mod.rs` says what it owns and what it may import. The pure decisions
//! (specs, analysis, the rollout engine) are the `dimmer_decide` crate;
//! this crate does their I/O. From the bottom up:
//!
//! - `tls`: the HTTPS listener and the one maker of HTTP clients;
//! - `auth`: who is asking: tokens, OpenID Connect sign-in, sessions, roles;
//! - `store`: where the state and the audit chain live (SQLite, etcd);
//! - `metrics`: where counts and the team's metrics are read from;
//! - `notify`: webhooks;
//! - `service`: the state in memory and every change to it;
//! - `sync`: GitOps, a directory of specs converged on;
//! - `fleet`: several controllers on etcd, one leader;
//! - `api`: the HTTP API, OFREP, the web UI, sign-in routes, `/metrics`;
//! - `cli`: `dimmer serve` and the commands that talk to a controller.
//!
//! A layer imports only layers above it in this list; `make lint` refuses
//! an import that goes the other way or closes a circle
//! (docs/architecture.md).

pub mod api;
pub mod auth;
pub mod cli;
pub mod fleet;
pub mod metrics;
pub mod notify;
pub mod service;
pub mod store;
pub mod sync;
pub mod tls;
