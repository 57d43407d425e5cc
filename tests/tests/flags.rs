//! Flags at a real Envoy: the header the app receives, what clients may
//! not send, and the per-variant counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use dimmer_core::config::Flag;
use dimmer_core::flags::{header_value, HeaderContext};
use dimmer_core::{CompiledFlags, Request};
use dimmer_e2e::fixtures::{rollout, Lab};
use serde_json::{json, Value};

fn flag(key: &str, on_bp: u32) -> Value {
    json!({
        "key": key,
        "identity": [{"header": "x-user-id"}],
        "default_variant": "off",
        "variants": [{"name": "off", "weight": 10000 - on_bp}, {"name": "on", "weight": on_bp}],
        "overrides": [{"header": "x-beta", "values": ["yes"], "variant": "on"}],
    })
}

struct Id<'a>(&'a str, &'a str);

impl Request for Id<'_> {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        match name {
            "x-user-id" => Some(self.0.as_bytes().to_vec()),
            ":path" => Some(self.1.as_bytes().to_vec()),
            _ => None,
        }
    }
}

/// What the core says the header for `user` at `path` is.
fn expected(flags: &[Value], user: &str, path: &str) -> String {
    let flags: Vec<Flag> = serde_json::from_value(json!(flags)).unwrap();
    let c = CompiledFlags::new(&flags);
    let id = Id(user, path);
    header_value(&c, &c.evaluate(&HeaderContext::new(&c, &id), &mut || 0))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_gets_every_flag_in_one_header_and_never_the_clients() -> anyhow::Result<()> {
    let mut scoped = flag("cart", 10_000);
    scoped["match"] = json!({"path_prefix": "/cart"});
    let flags = vec![flag("search", 3000), flag("dark", 0), scoped];
    let lab = Lab::start(json!({"rollouts": [rollout(5000)], "flags": flags})).await?;
    let c = &lab.client;
    for i in 0..200 {
        let user = format!("u{i}");
        let r = c
            .get(
                "/cart/1",
                &[
                    ("x-user-id", user.as_bytes()),
                    ("x-dimmer-flags", b"dark=on;cart=off"),
                ],
            )
            .await?;
        assert_eq!(r.saw_flags, expected(&flags, &user, "/cart/1"), "{user}");
        assert!(r.saw_flags.ends_with(";cart=on"), "{}", r.saw_flags);
    }
    // A flag whose match does not fit is left out.
    let r = c.get("/account", &[("x-user-id", b"u1")]).await?;
    assert!(!r.saw_flags.contains("cart="), "{}", r.saw_flags);
    // Targeting overrides come before the hash.
    let r = c
        .get("/", &[("x-user-id", b"u1"), ("x-beta", b"yes")])
        .await?;
    assert!(r.saw_flags.contains("dark=on"), "{}", r.saw_flags);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_sent_flags_header_is_removed_with_no_flags_configured() -> anyhow::Result<()> {
    let lab = Lab::start(json!({"rollouts": [rollout(0)]})).await?;
    let r = lab
        .client
        .get("/", &[("x-user-id", b"u"), ("x-dimmer-flags", b"admin=on")])
        .await?;
    assert_eq!(r.saw_flags, "");
    // Outside every rollout too.
    let lab = Lab::start(json!({"flags": [{
        "key": "scoped", "match": {"host": "nowhere.example"}, "default_variant": "off",
        "variants": [{"name": "off", "weight": 10000}]
    }]}))
    .await?;
    let r = lab
        .client
        .get("/", &[("x-dimmer-flags", b"admin=on")])
        .await?;
    assert_eq!(r.saw_flags, "");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_variant_is_counted_like_a_rollout_version() -> anyhow::Result<()> {
    let flags = vec![flag("search", 5000)];
    let lab = Lab::start(json!({"flags": flags})).await?;
    let mut on = 0;
    for i in 0..300 {
        let user = format!("c{i}");
        let r = lab
            .client
            .get("/", &[("x-user-id", user.as_bytes())])
            .await?;
        on += usize::from(r.saw_flags == "search=on");
    }
    // Counts leave the VM on its next tick.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = lab.envoy.prometheus().await?;
        let count = |variant: &str| -> f64 {
            text.lines()
                .filter(|l| {
                    l.starts_with("dimmer_requests{")
                        && l.contains("rollout=\"search\"")
                        && l.contains(&format!("version=\"{variant}\""))
                        && l.contains("class=\"2xx\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        if count("on") == on as f64 && count("off") == (300 - on) as f64 {
            assert!(text.contains("dimmer_latency_ms_bucket{rollout=\"search\",version=\"on\""));
            return Ok(());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "on {} of {on}, off {} of {}",
            count("on"),
            count("off"),
            300 - on
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_flag_in_the_plugin_config_is_refused_naming_the_field() -> anyhow::Result<()> {
    let mut bad = flag("a", 10);
    bad["default_variant"] = json!("nope");
    let err = Lab::start(json!({"flags": [bad]})).await;
    let Err(e) = err else {
        panic!("Envoy took a flag with an unknown default variant")
    };
    let text = format!("{e:#}");
    assert!(text.contains("flags[0].default_variant"), "{text}");
    Ok(())
}
