//! The filter placed on one virtual host (`envoy-configs/envoy-per-host.yaml.tmpl`):
//! Envoy matches the rollout's host, the filter runs only there, and its
//! rollouts need no `match.host` — the cheaper placement (bench/RESULTS.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use dimmer_core::cohort::bucket;
use dimmer_e2e::fixtures::{rollout, static_config, Lab};
use dimmer_e2e::paths::workspace_root;
use dimmer_e2e::stats::sample;

#[tokio::test(flavor = "multi_thread")]
async fn the_filter_runs_only_on_the_rollouts_virtual_host() -> anyhow::Result<()> {
    let lab = Lab::start_with(static_config(vec![rollout(5000)]), |o| {
        o.template = Some(workspace_root().join("envoy-configs/envoy-per-host.yaml.tmpl"));
    })
    .await?;
    let c = &lab.client;
    let mut canary = 0;
    for i in 0..100 {
        let id = format!("user-{i}");
        let app = [
            ("host", &b"app.example"[..]),
            ("x-user-id", id.as_bytes()),
            ("x-dimmer-version", b"v1"),
        ];
        let r = c.get("/", &app).await?;
        let expected = if bucket("checkout-7", id.as_bytes()) < 5000 {
            "v1"
        } else {
            "v2"
        };
        assert_eq!(r.version, expected, "{id} on the rollout's host");
        assert_eq!(r.saw_route, expected, "the filter wrote the route header");
        canary += usize::from(r.version == "v2");
        // Elsewhere the filter does not run: stable serves, whatever the
        // client sends, and the app never sees a route header.
        let other = [
            ("host", &b"www.example"[..]),
            ("x-user-id", id.as_bytes()),
            ("x-dimmer-version", b"v2"),
        ];
        let r = c.get("/", &other).await?;
        assert_eq!(
            (r.version.as_str(), r.saw_route.as_str()),
            ("v1", ""),
            "{id} elsewhere"
        );
    }
    assert!((30..=70).contains(&canary), "{canary} of 100 on the canary");
    // Only the rollout's host was counted.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let text = lab.envoy.prometheus().await?;
    let counted: f64 = ["v1", "v2"]
        .iter()
        .map(|v| {
            sample(
                &text,
                "dimmer_requests",
                &[("rollout", "checkout"), ("version", v), ("class", "2xx")],
            )
        })
        .sum();
    assert_eq!(counted, 100.0, "{text}");
    Ok(())
}
