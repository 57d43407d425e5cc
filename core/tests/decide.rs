//! The routing decision against a plain map of headers: the mock host.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::HashMap;

use dimmer_core::cohort::bucket;
use dimmer_core::config::ConfigDoc;
use dimmer_core::decide::{set_cookie_value, Reason};
use dimmer_core::{decide, Compiled, Decision, Request};
use serde_json::json;

#[derive(Default)]
struct Headers(HashMap<&'static str, Vec<u8>>);

impl Request for Headers {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.0.get(name).cloned()
    }
}

fn headers(pairs: &[(&'static str, &[u8])]) -> Headers {
    Headers(pairs.iter().map(|(k, v)| (*k, v.to_vec())).collect())
}

fn compiled(anonymous: &str, canary_bp: u32) -> Compiled {
    let doc: ConfigDoc = serde_json::from_value(json!({
        "revision": 1,
        "rollouts": [
            {
                "name": "api",
                "match": {"host": "api.example.com", "path_prefix": "/v2/"},
                "salt": "api", "stable": "a",
                "versions": [{"name": "a", "weight": 10000}]
            },
            {
                "name": "checkout",
                "identity": [{"header": "x-user-id"}, {"cookie": "session_id"}],
                "anonymous": anonymous,
                "salt": "checkout-7", "stable": "v1",
                "versions": [{"name": "v1", "weight": 10000 - canary_bp}, {"name": "v2", "weight": canary_bp}],
                "overrides": [{"header": "x-tenant-id", "values": ["acme-internal", "beta"], "version": "v2"}]
            }
        ]
    }))
    .unwrap();
    Compiled::new(doc.revision, "x-dimmer-version", &doc.rollouts)
}

fn route(cfg: &Compiled, h: &Headers) -> (usize, usize, Reason, Option<String>) {
    let mut n = 0u64;
    let mut rng = || {
        n += 1;
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    };
    match decide(cfg, h, &mut rng) {
        Decision::Route(r) => (r.rollout, r.version, r.reason, r.new_cookie),
        other => panic!("not routed: {other:?}"),
    }
}

fn expected(id: &[u8], canary_bp: u16) -> usize {
    usize::from(bucket("checkout-7", id) >= 10_000 - canary_bp)
}

#[test]
fn the_first_matching_rollout_wins() {
    let cfg = compiled("stable", 5000);
    let api = headers(&[(":authority", b"API.example.com:443"), (":path", b"/v2/x")]);
    assert_eq!(route(&cfg, &api).0, 0);
    let other = headers(&[(":authority", b"api.example.com"), (":path", b"/v1/x")]);
    assert_eq!(route(&cfg, &other).0, 1);
}

#[test]
fn no_rollouts_means_no_match() {
    let cfg = Compiled::new(0, "x-dimmer-version", &[]);
    assert_eq!(
        decide(&cfg, &Headers::default(), &mut || 0),
        Decision::NoMatch
    );
}

#[test]
fn overrides_then_header_then_cookie() {
    let cfg = compiled("stable", 5000);
    let h = headers(&[("x-tenant-id", b"beta"), ("x-user-id", b"u1")]);
    let (_, version, reason, _) = route(&cfg, &h);
    assert_eq!((version, reason), (1, Reason::Override));
    for i in 0..500 {
        let id = format!("user-{i}");
        let h = headers(&[
            ("x-user-id", id.as_bytes()),
            ("cookie", b"session_id=other"),
        ]);
        assert_eq!(route(&cfg, &h).1, expected(id.as_bytes(), 5000));
        let cookie = format!("a=b; session_id={id}");
        let h = headers(&[("x-user-id", b""), ("cookie", cookie.as_bytes())]);
        let (_, version, reason, _) = route(&cfg, &h);
        assert_eq!(
            (version, reason),
            (expected(id.as_bytes(), 5000), Reason::Identity)
        );
    }
}

#[test]
fn anonymous_modes() {
    let stable = compiled("stable", 10_000);
    assert_eq!(route(&stable, &Headers::default()).1, 0);
    assert_eq!(
        route(&stable, &Headers::default()).2,
        Reason::AnonymousStable
    );

    let random = compiled("random", 10_000);
    let (_, v, reason, cookie) = route(&random, &Headers::default());
    assert_eq!((v, reason, cookie), (1, Reason::AnonymousRandom, None));

    let cookie = compiled("cookie", 5000);
    let (_, v, reason, id) = route(&cookie, &Headers::default());
    let id = id.unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(reason, Reason::AnonymousCookie);
    assert_eq!(v, expected(id.as_bytes(), 5000));
    let back = format!("dimmer_uid={id}");
    let (_, again, reason, new) = route(&cookie, &headers(&[("cookie", back.as_bytes())]));
    assert_eq!((again, reason, new), (v, Reason::Identity, None));
    assert_eq!(
        set_cookie_value(&cookie.rollouts[1], &id),
        format!("dimmer_uid={id}; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax")
    );
}

#[test]
fn a_mirror_joins_no_cohort_and_goes_to_the_shadow_version() {
    let doc: ConfigDoc = serde_json::from_value(json!({
        "revision": 1,
        "rollouts": [
            {
                "name": "api", "match": {"host": "api.example.com"},
                "salt": "api", "stable": "a",
                "versions": [{"name": "a", "weight": 10000}]
            },
            {
                "name": "checkout",
                "identity": [{"header": "x-user-id"}],
                "anonymous": "cookie",
                "salt": "checkout-7", "stable": "v1",
                "versions": [{"name": "v1", "weight": 5000}, {"name": "v2", "weight": 5000}],
                "overrides": [{"header": "x-tenant-id", "values": ["acme-internal"], "version": "v1"}],
                "shadow": "v2"
            }
        ]
    }))
    .unwrap();
    let cfg = Compiled::new(1, "x-dimmer-version", &doc.rollouts);
    assert!(cfg.needs_host);
    let mut never = || -> u64 { panic!("a mirror draws no random id") };
    for h in [
        headers(&[(":authority", b"shop-shadow:8080"), ("x-user-id", b"alice")]),
        // An override, no identity, an anonymous cookie mode: none applies.
        headers(&[
            (":authority", b"shop-SHADOW"),
            ("x-tenant-id", b"acme-internal"),
        ]),
        headers(&[(":authority", b"shop-shadow")]),
    ] {
        assert_eq!(
            decide(&cfg, &h, &mut never),
            Decision::Shadow {
                rollout: 1,
                version: Some(1)
            }
        );
    }
    // The host it was meant for picks the rollout, which need not name a shadow.
    let h = headers(&[(":authority", b"api.example.com-shadow:443")]);
    assert_eq!(
        decide(&cfg, &h, &mut never),
        Decision::Shadow {
            rollout: 0,
            version: None
        }
    );
    // Not a mirror: routed as ever.
    let h = headers(&[
        (":authority", b"shadow.example.com"),
        ("x-user-id", b"alice"),
    ]);
    assert!(matches!(decide(&cfg, &h, &mut never), Decision::Route(_)));
    // A shadow version must be one of the rollout's.
    let mut bad = doc.rollouts.clone();
    bad[1].shadow = Some("v3".into());
    let err = dimmer_core::validate::validate_rollouts(&bad, "rollouts").unwrap_err();
    assert!(err.to_string().contains("rollouts[1].shadow"), "{err}");
}
