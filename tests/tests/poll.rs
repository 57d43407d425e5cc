//! The filter and its controller: one poller per Envoy, ETags, new weights
//! reaching every worker, bad configs refused, and fail-static routing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use dimmer_e2e::fixtures::{rollout, users, Lab};
use dimmer_e2e::stats::sample;
use dimmer_e2e::{Client, StubController};
use serde_json::{json, Value};

const POLL_MS: u64 = 1000;

fn with_controller(port_rollouts: Vec<Value>) -> Value {
    json!({
        "controller": {
            "cluster": "dimmer-controller",
            "poll_interval_ms": POLL_MS,
            "timeout_ms": 300,
            "token": "poll-secret"
        },
        "rollouts": port_rollouts
    })
}

fn doc(revision: u64, canary_bp: u32) -> Value {
    json!({"revision": revision, "rollouts": [rollout(canary_bp)]})
}

async fn start(stub: &StubController, workers: u32) -> anyhow::Result<Lab> {
    let port = stub.port;
    Lab::start_with(with_controller(vec![rollout(0)]), |o| {
        o.controller_port = port;
        o.concurrency = workers;
        o.node_id = "edge-1".into();
    })
    .await
}

/// Share of `ids` served by v2, over fresh connections (so every worker answers).
async fn v2_share(client: &Client, ids: &[String]) -> anyhow::Result<f64> {
    let mut v2 = 0;
    for id in ids {
        if client
            .get("/", &[("x-user-id", id.as_bytes())])
            .await?
            .version
            == "v2"
        {
            v2 += 1;
        }
    }
    Ok(v2 as f64 / ids.len() as f64)
}

async fn gauge(lab: &Lab, name: &str) -> anyhow::Result<f64> {
    Ok(sample(&lab.envoy.prometheus().await?, name, &[]))
}

async fn wait_for(lab: &Lab, name: &str, at_least: f64, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while gauge(lab, name).await? < at_least {
        anyhow::ensure!(Instant::now() < deadline, "{name} never reached {at_least}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits until the poller has applied `revision`, then one interval more: the
/// other workers follow within one interval.
async fn applied(lab: &Lab, revision: f64) -> anyhow::Result<()> {
    wait_for(
        lab,
        "dimmer_config_revision",
        revision,
        Duration::from_secs(5),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn new_weights_reach_every_worker_within_one_poll_interval() -> anyhow::Result<()> {
    let stub = StubController::start().await?;
    stub.set_config(&doc(1, 0));
    let lab = start(&stub, 4).await?;
    applied(&lab, 1.0).await?;
    let fresh = Client::fresh_connections(lab.envoy.url(""));
    let ids = users("w", 40);
    assert_eq!(v2_share(&fresh, &ids).await?, 0.0);

    stub.set_config(&doc(2, 10_000));
    let changed = Instant::now();
    // Wait for the poll that serves revision 2...
    let served = loop {
        let polls = stub.polls();
        if let Some(p) = polls
            .iter()
            .find(|p| p.at > changed && p.if_none_match != stub.state().etag)
        {
            break p.at;
        }
        anyhow::ensure!(
            changed.elapsed() < Duration::from_secs(3),
            "no poll after the change"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // ...then every worker must route by it within one interval of that poll.
    loop {
        if v2_share(&fresh, &ids).await? == 1.0 {
            break;
        }
        let late = served.elapsed();
        anyhow::ensure!(
            late < Duration::from_millis(POLL_MS),
            "workers still on old weights {late:?} after the poll"
        );
    }
    let took = served.elapsed();
    eprintln!(
        "all workers switched {took:?} after the poll, {:?} after the change",
        changed.elapsed()
    );
    assert!(took < Duration::from_millis(POLL_MS), "{took:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_poll_per_envoy_per_interval_with_etag_proxy_id_and_revision() -> anyhow::Result<()> {
    let stub = StubController::start().await?;
    stub.set_config(&doc(7, 1000));
    let lab = start(&stub, 4).await?;
    applied(&lab, 7.0).await?;
    let from = Instant::now();
    tokio::time::sleep(Duration::from_millis(5 * POLL_MS + 200)).await;
    let polls: Vec<_> = stub.polls().into_iter().filter(|p| p.at > from).collect();
    // Five VMs tick (main thread + four workers); one of them polls.
    assert!(
        (4..=6).contains(&polls.len()),
        "{} polls in 5.2 intervals",
        polls.len()
    );
    let etag = stub.state().etag.clone();
    for p in &polls {
        assert_eq!(p.proxy_id, "edge-1");
        assert_eq!(p.revision, "7");
        assert_eq!(p.if_none_match, etag, "unchanged polls are conditional");
        assert_eq!(p.authorization, "Bearer poll-secret");
    }
    let text = lab.envoy.prometheus().await?;
    assert_eq!(
        sample(&text, "dimmer_config_updates", &[]),
        1.0,
        "304s are not updates"
    );
    assert_eq!(sample(&text, "dimmer_poll_failures", &[]), 0.0);
    assert!(sample(&text, "dimmer_config_age_seconds", &[]) <= 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_invalid_configs_are_counted_and_ignored() -> anyhow::Result<()> {
    let stub = StubController::start().await?;
    stub.set_config(&doc(1, 10_000));
    let lab = start(&stub, 2).await?;
    applied(&lab, 1.0).await?;
    let ids = users("bad", 30);
    let fresh = Client::fresh_connections(lab.envoy.url(""));
    assert_eq!(v2_share(&fresh, &ids).await?, 1.0);

    stub.set_body("{\"revision\": 2, \"rollouts\": [");
    wait_for(&lab, "dimmer_config_rejected", 1.0, Duration::from_secs(5)).await?;
    let mut invalid = doc(3, 0);
    invalid["rollouts"][0]["versions"][1]["weight"] = json!(500);
    stub.set_config(&invalid);
    wait_for(&lab, "dimmer_config_rejected", 2.0, Duration::from_secs(5)).await?;
    let mut unknown = doc(4, 0);
    unknown["rollouts"][0]["overrides"][0]["version"] = json!("v9");
    stub.set_config(&unknown);
    wait_for(&lab, "dimmer_config_rejected", 3.0, Duration::from_secs(5)).await?;

    assert_eq!(gauge(&lab, "dimmer_config_revision").await?, 1.0);
    assert_eq!(
        v2_share(&fresh, &ids).await?,
        1.0,
        "still on the last good weights"
    );
    let log = lab.envoy.log();
    assert!(
        log.contains("rollouts[0].versions: weights add up to 10500"),
        "{log}"
    );
    assert!(log.contains("rollouts[0].overrides[0].version"), "{log}");

    // A good config after bad ones is taken.
    stub.set_config(&doc(5, 0));
    applied(&lab, 5.0).await?;
    assert_eq!(v2_share(&fresh, &ids).await?, 0.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_survives_the_controller_going_away() -> anyhow::Result<()> {
    let mut stub = StubController::start().await?;
    stub.set_config(&doc(1, 5000));
    let lab = start(&stub, 2).await?;
    applied(&lab, 1.0).await?;
    let ids = users("away", 200);
    let before = lab.client.versions_of(&ids, 16).await?;
    assert!(before.iter().any(|v| v == "v2") && before.iter().any(|v| v == "v1"));

    stub.go_away();
    wait_for(&lab, "dimmer_poll_failures", 2.0, Duration::from_secs(5)).await?;
    assert_eq!(lab.client.versions_of(&ids, 16).await?, before);
    stub.state().fail_with = Some(500);
    stub.come_back().await?;
    let failures = gauge(&lab, "dimmer_poll_failures").await?;
    wait_for(
        &lab,
        "dimmer_poll_failures",
        failures + 2.0,
        Duration::from_secs(5),
    )
    .await?;
    assert_eq!(lab.client.versions_of(&ids, 16).await?, before);
    assert!(gauge(&lab, "dimmer_config_age_seconds").await? >= 2.0);
    Ok(())
}
