//! Many Envoys, one controller, metrics through a real Prometheus.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use dimmer_e2e::controller::{Controller, MetricsFrom, ENVOY_TOKEN, VIEWER_TOKEN};
use dimmer_e2e::fixtures::{spec_yaml, Lab};
use dimmer_e2e::load::Load;
use dimmer_e2e::ports::free_port;
use dimmer_e2e::prometheus::Prometheus;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn two_envoys_one_controller_metrics_from_prometheus() -> anyhow::Result<()> {
    two_envoys("").await
}

/// The same, counted by Envoy's own cluster stats through Prometheus: the
/// evidence still sums both proxies.
#[tokio::test(flavor = "multi_thread")]
async fn two_envoys_counted_by_their_cluster_stats_through_prometheus() -> anyhow::Result<()> {
    two_envoys("counting:\n  by: envoy\n  clusters: {v1: app-v1, v2: app-v2}\n").await
}

async fn two_envoys(extra_spec: &str) -> anyhow::Result<()> {
    let admins = [free_port()?, free_port()?];
    let prom = Prometheus::start(&admins).await?;
    let controller = Controller::start(MetricsFrom::Prometheus(prom.url()), &[]).await?;
    let mut labs = Vec::new();
    for (i, admin) in admins.iter().enumerate() {
        let port = controller.port;
        let admin = *admin;
        let plugin = json!({"controller": {"cluster": "dimmer-controller", "poll_interval_ms": 1000, "token": ENVOY_TOKEN}});
        labs.push(
            Lab::start_with(plugin, |o| {
                o.controller_port = port;
                o.admin_port = admin;
                o.node_id = format!("edge-{}", i + 1);
            })
            .await?,
        );
    }
    let _loads: Vec<Load> = labs
        .iter()
        .map(|l| Load::start(l.client.clone(), 2000, 150))
        .collect();

    let path = controller.dir().join("spec.yaml");
    std::fs::write(
        &path,
        spec_yaml(&[(10.0, "2s"), (50.0, "2s"), (100.0, "2s")], 40) + extra_spec,
    )?;
    controller.ok(&["apply", "-f", &path.display().to_string()])?;
    let done = controller
        .wait_for("checkout", Duration::from_secs(120), "finished", |v| {
            v["phase"] != "progressing" && v["proxies_applied"] == 2
        })
        .await?;
    assert_eq!(done["phase"], "completed", "{done}");
    assert_eq!(done["proxies_live"], 2, "{done}");

    assert_eq!(controller.proxy_ids().await?, ["edge-1", "edge-2"]);

    // The decisions counted both proxies' requests: each step up needed 40
    // canary requests, and the evidence is the sum Prometheus returned.
    let history = controller
        .get("/v1/rollouts/checkout/history", VIEWER_TOKEN)
        .await?;
    let steps: Vec<_> = history
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["action"] == "step")
        .collect();
    assert_eq!(steps.len(), 2, "{history}");
    for s in steps {
        assert!(
            s["evidence"]["canary_requests"].as_f64().unwrap_or(0.0) >= 40.0,
            "{s}"
        );
    }
    Ok(())
}

/// A proxy outside the controller's reach (static weights, canary at 0) that
/// still reports to the same Prometheus: the canary gets half the share of
/// requests its weight says. The sample-ratio test holds the rollout and says
/// why, instead of promoting on skewed traffic.
#[tokio::test(flavor = "multi_thread")]
async fn a_sample_ratio_mismatch_holds_the_rollout() -> anyhow::Result<()> {
    let admins = [free_port()?, free_port()?];
    let prom = Prometheus::start(&admins).await?;
    let controller = Controller::start(MetricsFrom::Prometheus(prom.url()), &[]).await?;
    let port = controller.port;
    let polling = json!({"controller": {"cluster": "dimmer-controller", "poll_interval_ms": 1000, "token": ENVOY_TOKEN}});
    let managed = Lab::start_with(polling, |o| {
        o.controller_port = port;
        o.admin_port = admins[0];
        o.node_id = "edge-1".into();
    })
    .await?;
    let rogue_admin = admins[1];
    let rogue = Lab::start_with(
        dimmer_e2e::fixtures::static_config(vec![dimmer_e2e::fixtures::rollout(0)]),
        |o| {
            o.admin_port = rogue_admin;
            o.node_id = "rogue".into();
        },
    )
    .await?;
    let _loads = [
        Load::start(managed.client.clone(), 3000, 150),
        Load::start(rogue.client.clone(), 3000, 150),
    ];
    let path = controller.dir().join("spec.yaml");
    std::fs::write(&path, spec_yaml(&[(20.0, "10s"), (100.0, "0s")], 300))?;
    controller.ok(&["apply", "-f", &path.display().to_string()])?;
    let held = controller
        .wait_for(
            "checkout",
            Duration::from_secs(60),
            "holding on a ratio mismatch",
            |v| {
                v["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("sample ratio mismatch")
            },
        )
        .await?;
    assert_eq!(held["step"], 0, "{held}");
    assert_eq!(held["phase"], "progressing");
    Ok(())
}
