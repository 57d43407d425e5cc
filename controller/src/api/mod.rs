//! The API layer: everything that speaks HTTP to the outside. The state
//! every handler is given and the errors it answers with (`state`); the
//! handlers, one module per audience (the proxies' poll, rollouts and
//! flags, the controller's own health, OFREP, the web UI); bearer tokens
//! and roles (`auth`); `/metrics` (`self_metrics`); and the router, the one
//! place that names every handler.
//!
//! Handlers import the state, the router imports the handlers. May import:
//! `service`, `fleet` (forwarding to the leader), `store` (audit types),
//! `dimmer_decide`; never the CLI.

pub mod auth;
mod headers;
mod health;
mod ofrep;
mod poll;
mod rollouts;
mod router;
pub mod self_metrics;
mod state;
pub mod streams;
mod warning;
mod web;

pub use auth::{Auth, AuthError, Principal, Role};
pub use router::router;
pub use state::{ApiError, App};
pub use warning::HEADER as WARNING_HEADER;
