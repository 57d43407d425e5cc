//! Routing rules seen from outside: the route header, overrides, identity
//! sources, anonymous modes and rollout matching.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::HashSet;

use dimmer_core::cohort::bucket;
use dimmer_e2e::fixtures::{rollout, static_config, Lab};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_client_sent_route_header_does_not_steer() -> anyhow::Result<()> {
    let lab = Lab::start(static_config(vec![rollout(0)])).await?;
    for i in 0..50 {
        let id = format!("u{i}");
        let r = lab
            .client
            .get(
                "/",
                &[("x-user-id", id.as_bytes()), ("x-dimmer-version", b"v2")],
            )
            .await?;
        assert_eq!(r.version, "v1");
        assert_eq!(r.saw_route, "v1", "the filter replaces the header");
    }
    // Anonymous requests too.
    let r = lab.client.get("/", &[("x-dimmer-version", b"v2")]).await?;
    assert_eq!(r.version, "v1");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_outside_every_rollout_lose_the_route_header() -> anyhow::Result<()> {
    let mut scoped = rollout(10_000);
    scoped["match"] = json!({"host": "checkout.example.com", "path_prefix": "/cart"});
    let lab = Lab::start(static_config(vec![scoped])).await?;
    let c = &lab.client;

    let inside = [
        ("host", &b"checkout.example.com:8080"[..]),
        ("x-user-id", b"a"),
    ];
    assert_eq!(c.get("/cart/items", &inside).await?.version, "v2");
    let upper = [("host", &b"CHECKOUT.example.com"[..]), ("x-user-id", b"a")];
    assert_eq!(c.get("/cart", &upper).await?.version, "v2");

    let other_path = [
        ("host", &b"checkout.example.com"[..]),
        ("x-dimmer-version", b"v2"),
    ];
    let r = c.get("/account", &other_path).await?;
    assert_eq!((r.version.as_str(), r.saw_route.as_str()), ("v1", ""));

    let other_host = [
        ("host", &b"shop.example.com"[..]),
        ("x-dimmer-version", b"v2"),
    ];
    let r = c.get("/cart", &other_host).await?;
    assert_eq!((r.version.as_str(), r.saw_route.as_str()), ("v1", ""));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn overrides_win_over_the_hash() -> anyhow::Result<()> {
    let lab = Lab::start(static_config(vec![rollout(0)])).await?;
    let r = lab
        .client
        .get(
            "/",
            &[("x-user-id", b"anyone"), ("x-tenant-id", b"acme-internal")],
        )
        .await?;
    assert_eq!(r.version, "v2");
    let r = lab
        .client
        .get("/", &[("x-user-id", b"anyone"), ("x-tenant-id", b"acme")])
        .await?;
    assert_eq!(r.version, "v1");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cookie_identity_is_used_when_the_header_is_absent() -> anyhow::Result<()> {
    let lab = Lab::start(static_config(vec![rollout(5000)])).await?;
    for i in 0..200 {
        let id = format!("sess-{i}");
        let want = if bucket("checkout-7", id.as_bytes()) < 5000 {
            "v1"
        } else {
            "v2"
        };
        let cookie = format!("theme=dark; session_id={id}; other=1");
        let r = lab
            .client
            .get("/", &[("cookie", cookie.as_bytes())])
            .await?;
        assert_eq!(r.version, want, "{id}");
        // The header comes first when both are present.
        let r = lab
            .client
            .get(
                "/",
                &[("cookie", cookie.as_bytes()), ("x-user-id", b"hdr-user")],
            )
            .await?;
        let want = if bucket("checkout-7", b"hdr-user") < 5000 {
            "v1"
        } else {
            "v2"
        };
        assert_eq!(r.version, want);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_stable_sends_everyone_without_identity_to_stable() -> anyhow::Result<()> {
    let lab = Lab::start(static_config(vec![rollout(9000)])).await?;
    for _ in 0..100 {
        let r = lab.client.get("/", &[("x-user-id", b"")]).await?;
        assert_eq!(r.version, "v1");
        assert!(r.set_cookie.is_none());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_random_splits_per_request() -> anyhow::Result<()> {
    let mut r = rollout(5000);
    r["anonymous"] = json!("random");
    let lab = Lab::start(static_config(vec![r])).await?;
    let mut v2 = 0;
    for _ in 0..400 {
        let reply = lab.client.get("/", &[]).await?;
        assert!(reply.set_cookie.is_none());
        if reply.version == "v2" {
            v2 += 1;
        }
    }
    // 400 fair coin flips: 200 ± 4 sd (sd = 10).
    assert!((160..=240).contains(&v2), "{v2} of 400 went to v2");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_cookie_sets_a_sticky_id() -> anyhow::Result<()> {
    let mut r = rollout(5000);
    r["anonymous"] = json!("cookie");
    r["anonymous_cookie"] = json!({"name": "dimmer_uid", "max_age_s": 3600});
    let lab = Lab::start(static_config(vec![r])).await?;
    let mut ids = HashSet::new();
    for _ in 0..100 {
        let first = lab.client.get("/", &[]).await?;
        let set = first.set_cookie.clone().unwrap_or_default();
        assert!(
            set.contains("; Max-Age=3600; HttpOnly; SameSite=Lax"),
            "{set}"
        );
        let pair = set.split(';').next().unwrap_or_default().to_owned();
        let id = pair.trim_start_matches("dimmer_uid=").to_owned();
        assert_eq!(id.len(), 32, "{set}");
        let want = if bucket("checkout-7", id.as_bytes()) < 5000 {
            "v1"
        } else {
            "v2"
        };
        assert_eq!(first.version, want);
        ids.insert(id);
        // Sent back, the cookie keeps the user where they were, and no new one is set.
        for _ in 0..3 {
            let again = lab.client.get("/", &[("cookie", pair.as_bytes())]).await?;
            assert_eq!(again.version, first.version);
            assert!(again.set_cookie.is_none());
        }
    }
    assert_eq!(ids.len(), 100, "every anonymous visitor gets a fresh id");
    Ok(())
}
