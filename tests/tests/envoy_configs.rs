//! The shipped Envoy configs carry the tag regexes the filter's stat names
//! are built for (`dimmer_core::stats::STATS_TAGS`, the one source).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use dimmer_core::stats::STATS_TAGS;
use dimmer_e2e::paths::workspace_root;

#[test]
fn every_shipped_envoy_config_has_the_filters_stat_tags() {
    for file in [
        "envoy-configs/envoy.yaml.tmpl",
        "envoy-configs/envoy-per-host.yaml.tmpl",
        "bench/envoy-bench.yaml.tmpl",
    ] {
        let text = std::fs::read_to_string(workspace_root().join(file)).unwrap_or_default();
        for (tag, regex) in STATS_TAGS {
            let entry = format!("- tag_name: {tag}\n    regex: '{regex}'");
            assert!(text.contains(&entry), "{file} lacks {entry}");
        }
    }
}
