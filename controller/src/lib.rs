//! The `dimmer` controller: rollout specs, the step engine, canary analysis,
//! state in SQLite with a hash-chained audit log, the HTTP API the filters
//! poll and the CLI talks to.

pub mod analysis;
pub mod api;
pub mod audit;
pub mod auth;
pub mod client;
pub mod engine;
pub mod flag_spec;
pub mod fleet;
pub mod forward;
pub mod metric_spec;
pub mod metrics;
pub mod ofrep;
pub mod overview;
pub mod providers;
pub mod render;
pub mod self_metrics;
pub mod service;
pub mod simulate;
pub mod simulate_signals;
pub mod spec;
pub mod store;
pub mod store_etcd;
pub mod web;
pub mod webhook;
pub mod yaml_guard;
pub mod yaml_lines;
