//! Flags at a real Envoy: the header the app receives, what clients may
//! not send, and the per-variant counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use dimmer_core::config::Flag;
use dimmer_core::flags::{header_value, HeaderContext};
use dimmer_core::{CompiledFlags, Request};
use dimmer_e2e::fixtures::{rollout, Lab};
use dimmer_e2e::stats::sample;
use dimmer_e2e::{Client, StubController};
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
    let results = c.evaluate(&HeaderContext::new(&c, &id), &mut || 0);
    header_value(&c, &results)
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
    // A flag at rest is counted by status only: no histogram call per request.
    let mut at_rest = flag("rest", 5000);
    at_rest["record_latency"] = json!(false);
    let flags = vec![flag("search", 5000), at_rest];
    let lab = Lab::start(json!({"flags": flags})).await?;
    let mut on = 0;
    for i in 0..300 {
        let user = format!("c{i}");
        let r = lab
            .client
            .get("/", &[("x-user-id", user.as_bytes())])
            .await?;
        on += usize::from(r.saw_flags.split(';').any(|kv| kv == "search=on"));
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
            assert!(text.contains("dimmer_requests{rollout=\"rest\""));
            assert!(!text.contains("dimmer_latency_ms_bucket{rollout=\"rest\""));
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

async fn rejected(lab: &Lab, at_least: f64) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    loop {
        let text = lab.envoy.prometheus().await?;
        if sample(&text, "dimmer_config_rejected", &[]) >= at_least {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "fewer than {at_least} configs rejected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_or_malformed_flag_configs_are_refused_and_the_last_good_one_kept(
) -> anyhow::Result<()> {
    let stub = StubController::start().await?;
    let good = json!({"revision": 1, "flags": [flag("search", 10_000)]});
    stub.set_config(&good);
    let port = stub.port;
    let lab = Lab::start_with(
        json!({"controller": {"cluster": "dimmer-controller", "poll_interval_ms": 1000, "timeout_ms": 500}}),
        |o| {
            o.controller_port = port;
            o.concurrency = 2;
        },
    )
    .await?;
    let fresh = Client::fresh_connections(lab.envoy.url(""));
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while fresh.get("/", &[("x-user-id", b"u")]).await?.saw_flags != "search=on" {
        anyhow::ensure!(std::time::Instant::now() < deadline, "never applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let too_many: Vec<Value> = (0..=dimmer_core::validate::MAX_FLAGS)
        .map(|i| flag(&format!("f{i}"), 1))
        .collect();
    let mut cycle_a = flag("a", 1);
    cycle_a["requires"] = json!([{"flag": "b", "variants": ["on"]}]);
    let mut cycle_b = flag("b", 1);
    cycle_b["requires"] = json!([{"flag": "a", "variants": ["on"]}]);
    let mut padded = flag("search", 0);
    padded["overrides"][0]["values"] = json!(vec!["x".repeat(1000); 1100]);
    let bad: Vec<Vec<u8>> = vec![
        b"{\"revision\": 2, \"flags\": [{\"key\": ".to_vec(),
        serde_json::to_vec(&json!({"revision": 3, "flags": too_many}))?,
        serde_json::to_vec(&json!({"revision": 4, "flags": [cycle_a, cycle_b]}))?,
        serde_json::to_vec(&json!({"revision": 5, "flags": [padded]}))?,
    ];
    for (i, body) in bad.into_iter().enumerate() {
        stub.set_body(body);
        rejected(&lab, (i + 1) as f64).await?;
    }
    let log = lab.envoy.log();
    for want in [
        "flags: at most 128 entries",
        "prerequisites form a cycle: a -> b -> a",
        "document larger than 1048576 bytes",
    ] {
        assert!(log.contains(want), "{want:?} not in the log:\n{log}");
    }
    // Every worker still serves the last good flags.
    for i in 0..40 {
        let user = format!("k{i}");
        let r = fresh.get("/", &[("x-user-id", user.as_bytes())]).await?;
        assert_eq!((r.status, r.saw_flags.as_str()), (200, "search=on"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn exclusion_groups_and_prerequisites_hold_at_the_proxy() -> anyhow::Result<()> {
    let exp = |key: &str, from: u32, to: u32| {
        let mut f = flag(key, 10_000);
        f["exclusion"] = json!({"group": "checkout-experiments", "from_bp": from, "to_bp": to});
        f
    };
    let mut child = flag("child", 10_000);
    child["requires"] = json!([{"flag": "parent", "variants": ["on"]}]);
    let mut parent_off = flag("parent", 10_000);
    parent_off["state"] = json!("disabled");
    let flags = vec![
        exp("exp-a", 0, 3000),
        exp("exp-b", 3000, 6000),
        exp("exp-c", 6000, 9000),
        child,
        parent_off,
    ];
    let lab = Lab::start(json!({"flags": flags})).await?;
    let mut outside = 0;
    for i in 0..2000 {
        let user = format!("x{i}");
        let r = lab
            .client
            .get("/", &[("x-user-id", user.as_bytes())])
            .await?;
        let on: Vec<&str> = r
            .saw_flags
            .split(';')
            .filter(|kv| kv.starts_with("exp-") && kv.ends_with("=on"))
            .collect();
        assert!(on.len() <= 1, "{user} is in {on:?}");
        outside += usize::from(on.is_empty());
        // The prerequisite is off: the dependent flag serves its default.
        assert!(
            r.saw_flags.contains("child=off;parent=off"),
            "{}",
            r.saw_flags
        );
        assert_eq!(r.saw_flags, expected(&flags, &user, "/"), "{user}");
    }
    // 10% of the group's buckets belong to no experiment.
    assert!((100..320).contains(&outside), "{outside}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_copy_of_either_header_never_survives() -> anyhow::Result<()> {
    let two = [
        ("x-user-id", &b"dup"[..]),
        ("x-dimmer-version", b"v2"),
        ("x-dimmer-version", b"v2"),
        ("x-dimmer-flags", b"search=on"),
        ("x-dimmer-flags", b"admin=on"),
    ];
    // Flags and a rollout configured: both headers written by the filter.
    let lab = Lab::start(json!({"rollouts": [rollout(0)], "flags": [flag("search", 0)]})).await?;
    let r = lab.client.get("/", &two).await?;
    assert_eq!(r.saw_copies, "1,1", "{r:?}");
    assert_eq!(
        (r.saw_route.as_str(), r.saw_flags.as_str()),
        ("v1", "search=off")
    );
    // Nothing configured that matches: both removed, every copy.
    let lab = Lab::start(json!({"rollouts": [{
        "name": "elsewhere", "match": {"host": "nowhere.example"}, "salt": "s", "stable": "v1",
        "versions": [{"name": "v1", "weight": 10000}]
    }]}))
    .await?;
    let r = lab.client.get("/", &two).await?;
    assert_eq!(r.saw_copies, "0,0", "{r:?}");
    Ok(())
}
