//! Dimmer's pure logic, shared by the proxy-wasm filter and the `dimmer`
//! controller: the config schema and its validation, the cohort function, the
//! routing decision and the names of the stats the filter records.
//!
//! Nothing here talks to a host: the filter reaches Envoy through the small
//! [`decide::Request`] trait, so every rule is tested on the host with `cargo test`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod cohort;
pub mod compiled;
pub mod config;
pub mod cookie;
pub mod decide;
pub mod error;
pub mod flags;
pub mod matching;
pub mod mix;
pub mod request;
pub mod shared;
pub mod stats;
pub mod validate;

pub use validate::{parse_config_doc, parse_plugin_config};

pub use cohort::{bucket, Cohort, BUCKETS};
pub use compiled::{Compiled, CompiledRollout};
pub use config::{ConfigDoc, Flag, PluginConfig, Rollout};
pub use decide::{decide, Decision, HeaderPairs, Reason, Request, Route};
pub use error::{ConfigError, Problem};
pub use flags::{CompiledFlags, Evaluation, FlagContext, FlagReason};
