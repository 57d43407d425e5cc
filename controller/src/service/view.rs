//! What `dimmer status` and the health endpoint show: a rollout's view,
//! built from its state and the proxies' standing, and the metrics
//! source's health.

use dimmer_decide::analysis::Evidence;
use dimmer_decide::engine::Phase;
use serde::{Deserialize, Serialize};

use crate::store::audit::Head;

/// What `dimmer status` shows of a rollout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub name: String,
    pub phase: Phase,
    pub label: String,
    pub stable: String,
    pub canary: String,
    pub step: usize,
    pub steps: Vec<f64>,
    /// Each step's pause, in ms: the least time it is held.
    #[serde(default)]
    pub step_pauses_ms: Vec<u64>,
    pub weight_bp: u32,
    pub reason: String,
    /// Held at an approval gate, waiting for nothing but `dimmer promote`.
    #[serde(default)]
    pub awaiting_approval: bool,
    pub evidence: Evidence,
    pub evidence_summary: String,
    pub revision: u64,
    /// Live proxies that have applied this rollout's current weight, of all live.
    pub proxies_applied: usize,
    pub proxies_live: usize,
    /// The live proxies that have not yet, within the time a proxy needs
    /// to apply and report a revision (two of its poll intervals): the
    /// normal case right after a change (the first 20).
    #[serde(default)]
    pub proxies_applying: Vec<String>,
    /// The live proxies that have not past that time, still waited for
    /// (the first 20).
    #[serde(default)]
    pub proxies_lagging: Vec<String>,
    /// The live proxies that have not for longer than the limit: reported,
    /// no longer waited for (the first 20, and how many in all).
    #[serde(default)]
    pub proxies_stale: Vec<String>,
    #[serde(default)]
    pub proxies_stale_count: usize,
    /// How long a lagging proxy may hold a step before it counts as stale.
    #[serde(default)]
    pub proxy_stale_after_ms: u64,
    pub step_started_ms: u64,
    /// Since when no metrics could be read, if they cannot now.
    #[serde(default)]
    pub metrics_lost_since_ms: Option<u64>,
    /// The audit log's head, to pin elsewhere.
    #[serde(default)]
    pub audit_head: Head,
    /// A flag's rollout: stable is the default variant, canary the variant
    /// rolled out.
    #[serde(default)]
    pub is_flag: bool,
    /// A flag a person turned off: everyone gets the default variant.
    #[serde(default)]
    pub flag_off: bool,
    /// For `apply`: what the apply did (created, changed, unchanged, restarted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    /// An A/B/n arm: the A/B/n rollout it is an arm of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm_of: Option<String>,
    /// For `apply` of an A/B/n spec: every arm, as applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arms: Vec<StatusView>,
}

/// The last look at the metrics source, for `/metrics` and `/v1/health`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceHealth {
    pub source: String,
    pub last_ok_ms: Option<u64>,
    pub last_error: Option<String>,
    pub failures: u64,
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Applied {
    /// A new rollout, at its first step.
    Created,
    /// A changed spec: restarted at its first step.
    Changed,
    /// The same spec: nothing changed, whatever the phase.
    Unchanged,
    /// The same spec, restarted on request (`--restart`).
    Restarted,
}
