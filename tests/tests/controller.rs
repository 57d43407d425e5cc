//! The controller end to end: a real Envoy with the filter, real upstreams,
//! the real `dimmer` binary, load from many users.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::atomic::Ordering;
use std::time::Duration;

use dimmer_e2e::controller::{ADMIN_TOKEN, VIEWER_TOKEN};
use dimmer_e2e::fixtures::{spec_yaml, Stack};
use dimmer_e2e::load::Load;

fn phase(v: &serde_json::Value) -> &str {
    v["phase"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_canary_goes_1_10_50_100_and_is_promoted() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let _load = Load::start(stack.lab.client.clone(), 3000, 400);
    let out = stack.apply(&spec_yaml(
        &[(1.0, "1s"), (10.0, "1s"), (50.0, "1s"), (100.0, "1s")],
        20,
    ))?;
    assert!(
        out.contains("checkout: progressing at step 1/4 (1%)"),
        "{out}"
    );
    let done = stack
        .controller
        .wait_decided("checkout", Duration::from_secs(90))
        .await?;
    assert_eq!(phase(&done), "completed", "{done}");
    assert_eq!(done["weight_bp"], 10_000);

    let history = stack.controller.ok(&["history", "checkout"])?;
    for step in ["1% → 10%", "10% → 50%", "50% → 100%"] {
        assert!(history.contains(step), "{step} missing from:\n{history}");
    }
    assert!(history.contains("complete"), "{history}");
    assert!(
        history.contains("deploy-bot"),
        "the applier is named:\n{history}"
    );

    // Everyone is on the canary now, in Envoy.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..50 {
        assert_eq!(
            stack.lab.client.version_of(&format!("after-{i}")).await?,
            "v2"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_faulty_canary_is_aborted_and_its_share_is_zero_within_2s() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.lab.v2.fault.error_bp.store(2000, Ordering::Relaxed);
    let load = Load::start(stack.lab.client.clone(), 3000, 300);
    stack.apply(&spec_yaml(
        &[(10.0, "30s"), (50.0, "30s"), (100.0, "30s")],
        50,
    ))?;
    let aborted = stack
        .controller
        .wait_decided("checkout", Duration::from_secs(60))
        .await?;
    assert_eq!(phase(&aborted), "aborted", "{aborted}");
    assert_eq!(aborted["weight_bp"], 0);
    assert!(
        aborted["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("error rate"),
        "{aborted}"
    );

    let abort = stack.controller.first_record("checkout", "abort").await?;
    assert_eq!(abort["actor"], "controller");
    assert!(
        abort["evidence"]["canary_errors"].as_f64().unwrap_or(0.0) > 0.0,
        "{abort}"
    );
    let decided_ms = abort["at_ms"].as_u64().unwrap_or(0);

    tokio::time::sleep(Duration::from_secs(3)).await;
    let served = load.served();
    let late: Vec<_> = served
        .iter()
        .filter(|s| s.at_ms > decided_ms + 2000 && s.version == "v2")
        .collect();
    let after = served
        .iter()
        .filter(|s| s.at_ms > decided_ms + 2000)
        .count();
    assert!(
        after > 100,
        "too little traffic after the decision to judge: {after}"
    );
    assert!(
        late.is_empty(),
        "{} of {after} requests still went to the canary 2 s after the abort",
        late.len()
    );
    // And the last canary request was served within 2 s of the decision.
    let last_canary = served
        .iter()
        .filter(|s| s.version == "v2")
        .map(|s| s.at_ms)
        .max()
        .unwrap_or(0);
    eprintln!(
        "last canary request {} ms after the abort decision",
        last_canary as i64 - decided_ms as i64
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_without_traffic_holds_and_never_promotes() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let _load = Load::start(stack.lab.client.clone(), 1000, 100);
    // The load goes to a host this rollout does not match.
    let spec = spec_yaml(&[(50.0, "0s"), (100.0, "0s")], 20).replace(
        "salt: checkout-7\n",
        "salt: checkout-7\nmatch: {host: nobody.example.com}\n",
    );
    stack.apply(&spec)?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let v = stack.controller.rollout("checkout").await?;
    assert_eq!(phase(&v), "progressing");
    assert_eq!(v["step"], 0);
    assert_eq!(v["reason"], "canary has 0 of 20 requests needed", "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_and_restart_resumes_the_same_step_and_loses_no_record() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let _load = Load::start(stack.lab.client.clone(), 2000, 300);
    stack.apply(&spec_yaml(&[(1.0, "0s"), (10.0, "1h"), (100.0, "0s")], 10))?;
    let before = stack
        .controller
        .wait_for("checkout", Duration::from_secs(60), "at 10%", |v| {
            v["step"] == 1
        })
        .await?;
    let config_before = stack.controller.get("/v1/config", VIEWER_TOKEN).await?;
    let history_before = stack
        .controller
        .get("/v1/rollouts/checkout/history", VIEWER_TOKEN)
        .await?;

    stack.controller.kill();
    // Routing goes on while the controller is down.
    assert!(stack
        .lab
        .client
        .version_of("user-1")
        .await?
        .starts_with('v'));
    stack.controller.restart().await?;

    let after = stack.controller.rollout("checkout").await?;
    for field in ["phase", "step", "weight_bp", "revision", "step_started_ms"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    assert_eq!(
        stack.controller.get("/v1/config", VIEWER_TOKEN).await?,
        config_before
    );
    let history_after = stack
        .controller
        .get("/v1/rollouts/checkout/history", VIEWER_TOKEN)
        .await?;
    assert_eq!(history_after, history_before);
    let verify = stack
        .controller
        .get("/v1/audit/verify", ADMIN_TOKEN)
        .await?;
    assert_eq!(verify["ok"], true, "{verify}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn people_pause_resume_promote_and_abort_with_reasons() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let c = &stack.controller;
    stack.apply(&spec_yaml(&[(1.0, "1h"), (10.0, "1h"), (100.0, "1h")], 10))?;
    let out = c.ok(&["pause", "checkout", "--reason", "waiting for the DBA"])?;
    assert!(out.contains("paused at step 1/3"), "{out}");
    c.ok(&["resume", "checkout", "--reason", "DBA is happy"])?;
    let out = c.ok(&[
        "promote",
        "checkout",
        "--reason",
        "looks fine in the dashboards",
    ])?;
    assert!(out.contains("step 2/3 (10%)"), "{out}");
    let out = c.ok(&["abort", "checkout", "--reason", "customer report"])?;
    assert!(out.contains("aborted (canary at 0%)"), "{out}");
    let refused = c.cli(
        Some(dimmer_e2e::controller::OPERATOR_TOKEN),
        &["resume", "checkout", "--reason", "x"],
    )?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("409"));

    let history = c.ok(&["history", "checkout"])?;
    for line in [
        "pause",
        "waiting for the DBA",
        "resume",
        "promote",
        "looks fine",
        "abort",
        "customer report",
    ] {
        assert!(history.contains(line), "{line} missing:\n{history}");
    }
    let which = c.ok(&["which", "checkout", "user-42"])?;
    assert!(which.starts_with("v1 (bucket "), "{which}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_up_waits_for_every_live_proxy_and_names_the_laggard() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let _load = Load::start(stack.lab.client.clone(), 3000, 400);
    // A proxy that polls but never applies anything: stuck on revision 0.
    let url = format!("{}/v1/config", stack.controller.url());
    let stale = tokio::spawn(async move {
        let http = reqwest::Client::new();
        loop {
            let _ = http
                .get(&url)
                .bearer_auth(dimmer_e2e::controller::ENVOY_TOKEN)
                .header("x-dimmer-proxy-id", "stale-edge")
                .header("x-dimmer-revision", "0")
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    stack.apply(&spec_yaml(&[(10.0, "0s"), (100.0, "0s")], 20))?;
    let held = stack
        .controller
        .wait_for(
            "checkout",
            Duration::from_secs(30),
            "waiting for the laggard",
            // Applying for its first two polls, then lagging.
            |v| {
                v["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("waiting for 1 of 2 proxies")
                    && v["proxies_lagging"] == serde_json::json!(["stale-edge"])
            },
        )
        .await?;
    assert!(
        held["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("stale-edge"),
        "{held}"
    );
    assert_eq!(held["proxies_lagging"], serde_json::json!(["stale-edge"]));
    assert_eq!(held["step"], 0);

    // Once it stops polling it is no longer live, and the rollout goes on.
    stale.abort();
    stack
        .controller
        .wait_for(
            "checkout",
            Duration::from_secs(40),
            "past the first step",
            |v| v["step"] != 0 || phase(v) == "completed",
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_counted_by_envoys_cluster_stats_is_judged_and_aborted() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.lab.v2.fault.error_bp.store(2000, Ordering::Relaxed);
    let load = Load::start(stack.lab.client.clone(), 3000, 300);
    let spec = spec_yaml(&[(10.0, "30s"), (50.0, "30s"), (100.0, "30s")], 50)
        + "counting:\n  by: envoy\n  clusters: {v1: app-v1, v2: app-v2}\n";
    stack.apply(&spec)?;
    let aborted = stack
        .controller
        .wait_decided("checkout", Duration::from_secs(60))
        .await?;
    assert_eq!(phase(&aborted), "aborted", "{aborted}");
    assert!(
        aborted["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("error rate"),
        "{aborted}"
    );
    // The counts were Envoy's: the filter recorded nothing for this rollout.
    let text = stack.lab.envoy.prometheus().await?;
    assert!(
        !text.contains("dimmer_requests{rollout=\"checkout\""),
        "the filter counted a rollout Envoy counts"
    );
    // Routing is still the filter's: the canary had its cohort while it ran.
    assert!(load.served().iter().any(|s| s.version == "v2"));
    Ok(())
}

/// One controller on SQLite, restarted over its state file with another
/// audit key: it serves reads and status, writes nothing, and says why to
/// every CLI command; the chain verifies with the key that wrote it.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_another_audit_key_serves_reads_and_writes_nothing() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.apply(&spec_yaml(&[(10.0, "1h"), (100.0, "1h")], 10))?;
    let c = &mut stack.controller;
    let head = c.get("/v1/audit/head", VIEWER_TOKEN).await?;
    let key_path = c.dir().join("dimmer.db.key");
    let right_key = std::fs::read_to_string(&key_path)?;
    std::fs::write(&key_path, "ab".repeat(32))?;
    c.restart().await?;
    let status = c.cli(Some(VIEWER_TOKEN), &["status", "checkout"])?;
    assert!(status.status.success(), "{status:?}");
    let said = String::from_utf8_lossy(&status.stderr);
    assert!(
        said.contains("audit key does not match the chain's"),
        "{said}"
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("checkout"));
    let abort = c.cli(
        Some(dimmer_e2e::controller::OPERATOR_TOKEN),
        &["abort", "checkout", "--reason", "wrong key"],
    )?;
    assert!(!abort.status.success());
    let said = String::from_utf8_lossy(&abort.stderr);
    assert!(
        said.contains("409") && said.contains("will not write"),
        "{said}"
    );
    let health = c.get("/v1/health", VIEWER_TOKEN).await?;
    assert_eq!(health["audit_key_matches"], false, "{health}");
    assert_eq!(health["leading"], false, "{health}");
    assert_eq!(c.get("/v1/audit/head", VIEWER_TOKEN).await?, head);
    // With the right key again, nothing is missing and it writes.
    std::fs::write(&key_path, right_key)?;
    c.restart().await?;
    let verify = c.get("/v1/audit/verify", ADMIN_TOKEN).await?;
    assert_eq!(verify["ok"], true, "{verify}");
    c.ok(&["abort", "checkout", "--reason", "right key"])?;
    Ok(())
}
