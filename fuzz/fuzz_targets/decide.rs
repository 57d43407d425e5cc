//! The routing decision on arbitrary header bytes, under a config that has
//! every feature (host and path match, overrides, header and cookie
//! identity, each anonymous policy): never a panic, always a rollout and a
//! version in range, the same answer twice for the same request, and an
//! identified request routed by its cohort.
#![no_main]

use std::sync::OnceLock;

use dimmer_core::{decide, parse_plugin_config, Compiled, Decision, Request};
use libfuzzer_sys::fuzz_target;

mod shared;

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let config = format!(r#"{{"rollouts": {}}}"#, shared::ROLLOUTS);
        let cfg = parse_plugin_config(config.as_bytes()).expect("the fuzz config is valid");
        Compiled::new(1, &cfg.route_header, &cfg.rollouts)
    })
}

/// Headers from the fuzz input: `name\0value\0name\0value…`.
struct Headers(Vec<(String, Vec<u8>)>);

impl Request for Headers {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let mut headers = Vec::new();
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        let known = [
            ":authority",
            ":path",
            "x-user-id",
            "cookie",
            "x-tenant-id",
            "x-dimmer-version",
        ];
        let name = known[k.first().map_or(0, |b| *b as usize) % known.len()];
        headers.push((name.to_owned(), v.to_vec()));
    }
    let req = Headers(headers);
    let cfg = compiled();
    let first = decide(cfg, &req, &mut shared::lcg(7));
    let second = decide(cfg, &req, &mut shared::lcg(7));
    assert_eq!(first, second, "the same request, the same answer");
    if let Decision::Route(route) = first {
        let r = &cfg.rollouts[route.rollout];
        assert!(route.version < r.versions.len());
        if let Some(id) = req.header("x-user-id").filter(|v| !v.is_empty()) {
            if r.identity.iter().any(
                |s| matches!(s, dimmer_core::config::IdentitySource::Header(h) if h == "x-user-id"),
            ) && route.reason == dimmer_core::decide::Reason::Identity
            {
                assert_eq!(
                    route.version,
                    r.version_of_identity(&id),
                    "routed by its cohort"
                );
            }
        }
    }
});
