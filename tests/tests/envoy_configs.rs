//! The shipped Envoy configs carry the tag regexes the filter's stat names
//! are built for (`dimmer_core::stats::STATS_TAGS`, the one source).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use dimmer_core::stats::STATS_TAGS;
use dimmer_e2e::paths::workspace_root;

#[test]
fn every_shipped_envoy_config_has_the_filters_stat_tags() {
    // Every template in envoy-configs/, not a list that a new one can miss.
    let mut files: Vec<String> = std::fs::read_dir(workspace_root().join("envoy-configs"))
        .unwrap()
        .map(|e| format!("envoy-configs/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".tmpl"))
        .collect();
    assert!(files.len() >= 4, "{files:?}");
    files.push("bench/envoy-bench.yaml.tmpl".into());
    for file in files {
        let text = std::fs::read_to_string(workspace_root().join(&file)).unwrap_or_default();
        for (tag, regex) in STATS_TAGS {
            let entry = format!("- tag_name: {tag}\n    regex: '{regex}'");
            assert!(text.contains(&entry), "{file} lacks {entry}");
        }
    }
}
