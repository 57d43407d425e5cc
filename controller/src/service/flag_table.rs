//! The flags as the service serves them: each flag's compiled form for
//! OFREP evaluations, and what `dimmer flags` shows of each.

use std::collections::BTreeMap;

use dimmer_core::config::ConfigDoc;
use dimmer_core::CompiledFlags;
use dimmer_decide::engine::{Phase, RolloutState};
use dimmer_decide::spec::flag::Lifecycle;
use serde::{Deserialize, Serialize};

/// The flags of the served document, compiled once per change, with what
/// each variant answers over OFREP.
pub struct FlagTable {
    pub revision: u64,
    pub compiled: CompiledFlags,
    /// `values[flag index][variant index]`.
    pub values: Vec<Vec<serde_json::Value>>,
}

impl FlagTable {
    pub(super) fn new(doc: &ConfigDoc, states: &BTreeMap<String, RolloutState>) -> Self {
        let compiled = CompiledFlags::new(&doc.flags);
        let values = compiled
            .flags
            .iter()
            .map(|f| {
                let meta = states.get(&f.key).and_then(|s| s.spec.flag.as_ref());
                f.variants
                    .iter()
                    .map(|v| {
                        meta.and_then(|m| m.values.get(v).cloned())
                            .unwrap_or_else(|| serde_json::Value::String(v.clone()))
                    })
                    .collect()
            })
            .collect();
        FlagTable {
            revision: doc.revision,
            compiled,
            values,
        }
    }
}

/// One line of `dimmer flags`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlagView {
    pub key: String,
    pub owner: String,
    pub lifecycle: Lifecycle,
    pub expires: Option<String>,
    pub description: Option<String>,
    /// `on` unless a person turned it off.
    pub on: bool,
    pub phase: Phase,
    pub label: String,
    pub default_variant: String,
    pub variant: String,
    pub weight_bp: u32,
    pub created_ms: u64,
    /// Requests that evaluated the flag in the window below (all variants),
    /// or `None` if the proxies' counts could not be read.
    pub evaluations: Option<f64>,
    /// The window `evaluations` covers: a day, or less while the controller
    /// has not watched for a day; 0 for everything the proxies counted since
    /// they started.
    pub evaluations_window_ms: u64,
    pub toggles_7d: usize,
    /// `expired`, `ready for code removal`, `never evaluated`.
    pub marks: Vec<String>,
}
