//! The API layer: everything that speaks HTTP to the outside. The state
//! every handler is given and the errors it answers with (`state`); the
//! handlers, one module per audience (the proxies' poll, rollouts and
//! flags, the controller's own health, OFREP, the web UI, sign-in);
//! `/metrics` (`self_metrics`); and the router, the one place that names
//! every handler. Who is asking is the `auth` layer's to say.
//!
//! Handlers import the state, the router imports the handlers. May import:
//! `auth`, `service`, `fleet` (forwarding to the leader), `store` (audit types),
//! `dimmer_decide`; never the CLI.

mod headers;
mod health;
mod login;
mod ofrep;
mod poll;
mod rollouts;
mod router;
pub mod self_metrics;
mod state;
pub mod streams;
mod warning;
mod web;

pub use router::router;
pub use state::{ApiError, App, CSRF_HEADER};
pub use warning::HEADER as WARNING_HEADER;
