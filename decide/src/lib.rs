//! Dimmer's decisions, pure: what a spec means and whether it is valid,
//! what the counts say about the canary, and what the rollout does next.
//!
//! Nothing here performs I/O, spawns tasks or reads a clock: the
//! controller reads the metrics, passes the time in, and stores and
//! announces what is decided. Its dependency list keeps that promise (no
//! async runtime, HTTP stack or database), so every rule is tested on the
//! host in seconds. docs/architecture.md draws where it sits.
//!
//! Layers, each importing only those above it in this list:
//! `counts` (per-version counts) → `spec` (the specs and their checks) →
//! `analysis` (the statistical tests) → `engine` (the rollout state
//! machine) → `simulate` (many synthetic rollouts through the same code).

pub mod analysis;
pub mod counts;
pub mod engine;
pub mod simulate;
pub mod spec;
