//! The plugin configuration: any bytes either parse into a valid config
//! that survives a JSON round trip and compiles, or are refused with an
//! error that names a field or the syntax; never a panic.
#![no_main]

use dimmer_core::{parse_plugin_config, Compiled};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = parse_plugin_config(data) else {
        return;
    };
    let text = serde_json::to_vec(&cfg).expect("a parsed config serialises");
    let again = parse_plugin_config(&text).expect("a serialised config parses again");
    assert_eq!(again, cfg, "round trip changed the config");
    let compiled = Compiled::new(0, &cfg.route_header, &cfg.rollouts);
    assert_eq!(compiled.rollouts.len(), cfg.rollouts.len());
    for r in &compiled.rollouts {
        assert_eq!(
            r.ends.last().copied(),
            Some(10_000),
            "weights cover every bucket"
        );
        assert!(r.stable < r.versions.len());
    }
});
