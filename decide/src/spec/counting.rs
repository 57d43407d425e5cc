//! The spec's `counting` section: who counts each version's requests (the
//! filter, or Envoy's own cluster stats), and its checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::context::Context;
use super::error::{invalid, SpecError};

/// Where a rollout's per-version counts come from. `envoy` reads Envoy's
/// own cluster stats (`upstream_rq_<class>xx`, `upstream_rq_time`), so the
/// filter reads no status and no clock per request; each version must have
/// a cluster of its own that carries only this rollout's traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counting {
    #[serde(default)]
    pub by: CountedBy,
    /// The Envoy cluster of each version, with `by: envoy`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clusters: BTreeMap<String, String>,
}

impl Counting {
    pub fn is_default(&self) -> bool {
        *self == Counting::default()
    }

    /// What `dimmer apply` tells the author of a rollout the filter counts:
    /// the cheap path is one setting away, and most never read the
    /// performance page. `None` where Envoy counts, and for flags (their
    /// variants share clusters, so only the filter can count them).
    pub fn filter_cost_note(&self, name: &str, is_flag: bool) -> Option<String> {
        (self.by == CountedBy::Filter && !is_flag).then(|| {
            format!(
                "{name} is counted by the filter, which reads every response's status and the clock \
                 (about 1.2× an empty wasm filter's cost a request); where each version has an Envoy \
                 cluster of its own, `counting: {{by: envoy, clusters: {{…}}}}` lets Envoy count \
                 (about 1.1×): docs/rollout-spec.md, \"Who counts\""
            )
        })
    }

    /// The clusters to read, with `by: envoy`.
    pub fn envoy_clusters(&self) -> Option<&BTreeMap<String, String>> {
        (self.by == CountedBy::Envoy).then_some(&self.clusters)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CountedBy {
    #[default]
    Filter,
    Envoy,
}

impl Counting {
    pub(super) fn validate(&self, ctx: &Context<'_>) -> Result<(), SpecError> {
        let c = self;
        if c.by == CountedBy::Filter {
            if !c.clusters.is_empty() {
                return Err(invalid(
                    "counting.clusters",
                    "only with `by: envoy`: the filter counts by version",
                ));
            }
            return Ok(());
        }
        if ctx.is_flag {
            return Err(invalid(
                "counting.by",
                "a flag's variants share clusters: the filter counts them",
            ));
        }
        for version in [ctx.stable, ctx.canary] {
            let Some(cluster) = c.clusters.get(version) else {
                return Err(invalid(
                    "counting.clusters",
                    format!("names no cluster for version {version:?}"),
                ));
            };
            let ok = (1..=255).contains(&cluster.len())
                && cluster.bytes().all(|b| {
                    b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b',' | b'{' | b'}')
                });
            if !ok {
                return Err(invalid(
                    format!("counting.clusters.{version}"),
                    "must be an Envoy cluster name: 1 to 255 visible characters, no quotes, commas or braces",
                ));
            }
        }
        if c.clusters.len() != 2 {
            return Err(invalid(
                "counting.clusters",
                format!(
                    "names exactly the versions {} and {}",
                    ctx.stable, ctx.canary
                ),
            ));
        }
        if c.clusters.get(ctx.stable) == c.clusters.get(ctx.canary) {
            return Err(invalid(
                "counting.clusters",
                "each version needs a cluster of its own",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_rollout_the_filter_counts_is_told_of_the_cheap_path() {
        let filter = Counting::default();
        let envoy = Counting {
            by: CountedBy::Envoy,
            clusters: [("v1".into(), "a".into()), ("v2".into(), "b".into())].into(),
        };
        let note = filter.filter_cost_note("checkout", false).unwrap();
        assert!(
            note.starts_with("checkout is counted by the filter"),
            "{note}"
        );
        assert!(note.contains("by: envoy"), "{note}");
        assert_eq!(envoy.filter_cost_note("checkout", false), None);
        assert_eq!(filter.filter_cost_note("new-cart", true), None, "a flag");
    }
}
