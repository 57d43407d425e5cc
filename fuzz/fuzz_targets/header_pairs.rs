//! The filter's view of a request: Envoy's serialized header map (the
//! proxy-wasm ABI's), read in place by `HeaderPairs`, under the `decide`
//! target's rollouts and flags that read identities, cookies and override
//! headers.
//! On any bytes at all: never a panic, a version and variants in range, and
//! the same answers twice.
#![no_main]

use std::sync::OnceLock;

use dimmer_core::flags::{header_value, HeaderContext};
use dimmer_core::{decide, parse_plugin_config, Compiled, Decision, HeaderPairs};
use libfuzzer_sys::fuzz_target;

mod shared;

const FLAGS: &str = r#"[
  {"key": "a", "identity": [{"header": "x-user-id"}], "default_variant": "off",
   "variants": [{"name": "off", "weight": 7000}, {"name": "on", "weight": 3000}],
   "overrides": [{"header": "x-beta", "values": ["yes"], "variant": "on"}]},
  {"key": "b", "identity": [{"header": "x-org-id"}, {"cookie": "session_id"}], "anonymous": "random",
   "default_variant": "x", "variants": [{"name": "x", "weight": 5000}, {"name": "y", "weight": 5000}],
   "requires": [{"flag": "a", "variants": ["on"]}]},
  {"key": "c", "match": {"path_prefix": "/checkout"}, "identity": [{"header": "x-user-id"}],
   "default_variant": "p", "variants": [{"name": "p", "weight": 10000}, {"name": "q", "weight": 0}],
   "overrides": [{"header": "x-beta", "values": ["no"], "variant": "q"}]}
 ]"#;

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let config = format!(r#"{{"rollouts": {}, "flags": {FLAGS}}}"#, shared::ROLLOUTS);
        let cfg = parse_plugin_config(config.as_bytes()).expect("the fuzz config is valid");
        Compiled::new(1, &cfg.route_header, &cfg.rollouts).with_flags(&cfg.flags_header, &cfg.flags)
    })
}

fuzz_target!(|data: &[u8]| {
    let cfg = compiled();
    let req = HeaderPairs::new(data.to_vec());
    let one = decide(cfg, &req, &mut shared::lcg(7));
    let two = decide(cfg, &req, &mut shared::lcg(7));
    assert_eq!(format!("{one:?}"), format!("{two:?}"));
    if let Decision::Route(r) = &one {
        assert!(r.version < cfg.rollouts[r.rollout].versions.len());
    }
    let flags = &cfg.flags;
    let evaluate = || flags.evaluate(&HeaderContext::new(flags, &req), &mut || 3);
    let (a, b) = (evaluate(), evaluate());
    assert_eq!(a, b);
    for (f, e) in flags.flags.iter().zip(&a) {
        if let Some(e) = e {
            assert!(e.variant < f.variants.len());
        }
    }
    assert_eq!(header_value(flags, &a), header_value(flags, &b));
});
