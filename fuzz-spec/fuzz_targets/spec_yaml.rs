//! A rollout spec from arbitrary text: refused with an error, or valid and
//! the same after writing it out as YAML and reading it back; never a
//! panic, and never slow (the limits run before the parser).
#![no_main]

use dimmer_decide::spec::RolloutSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = RolloutSpec::from_yaml(text) else {
        return;
    };
    let yaml = spec.to_yaml().expect("a valid spec serialises");
    let again = RolloutSpec::from_yaml(&yaml)
        .unwrap_or_else(|e| panic!("a written spec must read back: {e}\n{yaml}"));
    assert_eq!(again, spec, "round trip changed the spec:\n{yaml}");
    for s in &spec.steps {
        assert!(s.weight_bp() >= 1 && s.weight_bp() <= 10_000);
    }
});
