//! The counts the controller judges are the requests that were sent: per
//! version, exactly, whether the filter counts them or Envoy's cluster stats
//! do (`counting: {by: envoy}`, the documented default's cheap path).
//! A real Envoy with the filter, the real controller reading Envoy's admin.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::atomic::Ordering;
use std::time::Duration;

use dimmer_e2e::controller::OPERATOR_TOKEN;
use dimmer_e2e::fixtures::{spec_yaml, Stack};
use dimmer_e2e::paths::workspace_root;

/// Sends `n` requests, one per new user, and returns what the clients saw:
/// `(v1 requests, v2 requests, v2 5xx)`.
async fn send(stack: &Stack, n: usize) -> anyhow::Result<(u64, u64, u64)> {
    let (mut v1, mut v2, mut v2_errors) = (0, 0, 0);
    for i in 0..n {
        let id = format!("counted-{i}");
        let r = stack
            .lab
            .client
            .get("/", &[("x-user-id", id.as_bytes())])
            .await?;
        match r.version.as_str() {
            "v1" => v1 += 1,
            "v2" => {
                v2 += 1;
                if r.status >= 500 {
                    v2_errors += 1;
                }
            }
            other => anyhow::bail!("request {i} served by {other:?} (status {})", r.status),
        }
    }
    Ok((v1, v2, v2_errors))
}

async fn counts_equal_requests(counting: &str) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    // Some of the canary's answers fail, so errors are counted too; few
    // enough that the error test never aborts in the few hundred requests.
    stack.lab.v2.fault.error_bp.store(300, Ordering::Relaxed);
    stack.apply(&(spec_yaml(&[(50.0, "10m"), (100.0, "10m")], 100_000) + counting))?;
    // The step's baseline is taken at the first look, and the proxy must
    // route by the step's weights: wait for both, so that every request
    // sent after is the step's (nothing was sent before).
    stack
        .controller
        .wait_for(
            "checkout",
            Duration::from_secs(10),
            "a first look, applied",
            |s| {
                let reason = s["reason"].as_str().unwrap_or_default();
                s["evidence"]["canary_requests"].as_f64() == Some(0.0)
                    && !reason.contains("no counts reported")
                    && s["proxies_applied"].as_u64() >= Some(1)
                    && s["proxies_applied"] == s["proxies_live"]
            },
        )
        .await?;
    // Every worker takes the weights on its next tick.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (v1, v2, v2_errors) = send(&stack, 600).await?;
    assert!(v1 > 200 && v2 > 200, "a 50% split: {v1} on v1, {v2} on v2");
    let seen = stack
        .controller
        .wait_for(
            "checkout",
            Duration::from_secs(10),
            "every request counted",
            |s| {
                let e = &s["evidence"];
                e["canary_requests"].as_f64().unwrap_or(0.0)
                    + e["baseline_requests"].as_f64().unwrap_or(0.0)
                    >= (v1 + v2) as f64
            },
        )
        .await?;
    // One more look, so a count that would overshoot has had its chance.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let seen = stack.controller.rollout("checkout").await.unwrap_or(seen);
    let e = &seen["evidence"];
    assert_eq!(e["baseline_requests"].as_f64(), Some(v1 as f64), "{e}");
    assert_eq!(e["canary_requests"].as_f64(), Some(v2 as f64), "{e}");
    assert_eq!(e["canary_errors"].as_f64(), Some(v2_errors as f64), "{e}");
    assert_eq!(e["baseline_errors"].as_f64(), Some(0.0), "{e}");
    Ok(())
}

/// `dimmer apply` tells the author of a rollout the filter counts that
/// Envoy could count it more cheaply, and says nothing of one Envoy counts
/// (the documented example).
#[tokio::test(flavor = "multi_thread")]
async fn apply_names_the_cheap_path_to_a_rollout_the_filter_counts() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let dir = stack.controller.dir().to_path_buf();
    let filter_counted = dir.join("filter-counted.yaml");
    std::fs::write(
        &filter_counted,
        spec_yaml(&[(10.0, "1m"), (100.0, "1m")], 20),
    )?;
    let example = workspace_root().join("examples/checkout-rollout.yaml");
    let run = |args: &[&str]| -> anyhow::Result<(String, String)> {
        let out = stack.controller.cli(Some(OPERATOR_TOKEN), args)?;
        anyhow::ensure!(out.status.success(), "{args:?}: {out:?}");
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (plan, _) = run(&[
        "apply",
        "--dry-run",
        "-f",
        &filter_counted.display().to_string(),
    ])?;
    assert!(
        plan.contains("note: checkout is counted by the filter") && plan.contains("by: envoy"),
        "{plan}"
    );
    let (plan, _) = run(&["apply", "--dry-run", "-f", &example.display().to_string()])?;
    assert!(!plan.contains("note:"), "{plan}");
    let (_, told) = run(&["apply", "-f", &filter_counted.display().to_string()])?;
    assert!(
        told.contains("note: checkout is counted by the filter"),
        "{told}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_counts_what_was_sent_when_the_filter_counts() -> anyhow::Result<()> {
    counts_equal_requests("").await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_counts_what_was_sent_when_envoy_counts() -> anyhow::Result<()> {
    counts_equal_requests("counting:\n  by: envoy\n  clusters: {v1: app-v1, v2: app-v2}\n").await
}
