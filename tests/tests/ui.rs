//! The web UI in a real headless browser (Debian's chromium, driven by
//! playwright-core from `tests/browser/`), while a real rollout runs
//! against a real Envoy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Command;
use std::time::Duration;

use dimmer_e2e::controller::{OPERATOR_TOKEN, VIEWER_TOKEN};
use dimmer_e2e::fixtures::{spec_yaml, users, Stack};
use dimmer_e2e::load::Load;
use dimmer_e2e::paths::workspace_root;

#[tokio::test(flavor = "multi_thread")]
async fn the_on_call_view_advances_live_and_an_operator_aborts_from_it() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let _load = Load::start(stack.lab.client.clone(), 3000, 300);
    stack.apply(&spec_yaml(
        &[(5.0, "6s"), (20.0, "6s"), (50.0, "6s"), (100.0, "10m")],
        20,
    ))?;
    let browser = workspace_root().join("tests/browser");
    let shot = workspace_root().join("target/ui-oncall.png");
    let url = stack.controller.url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(browser.join("oncall.mjs"))
            .env("DIMMER_URL", url)
            .env("DIMMER_VIEWER_TOKEN", VIEWER_TOKEN)
            .env("DIMMER_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("DIMMER_SCREENSHOT", shot)
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(seen["viewer_abort_status"], 403, "{seen}");

    // The abort the operator clicked is the audit's, with its reason...
    let abort = stack.controller.first_record("checkout", "abort").await?;
    assert_eq!(abort["actor"], "deploy-bot", "{abort}");
    assert!(abort["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("from the web UI"));
    // ...and it reached Envoy: nobody is on the canary 2 s later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let versions = stack
        .lab
        .client
        .versions_of(&users("after", 300), 16)
        .await?;
    assert!(versions.iter().all(|v| v == "v1"), "{versions:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn under_stress_the_page_tells_the_truth_and_an_operator_keeps_the_abort_button(
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let _load = Load::start(stack.lab.client.clone(), 3000, 300);
    stack.apply(
        &spec_yaml(
            &[
                (1.0, "4s"),
                (5.0, "4s"),
                (10.0, "4s"),
                (20.0, "4s"),
                (50.0, "4s"),
                (100.0, "10m"),
            ],
            20,
        )
        .replace("name: checkout\n", "name: checkout\nteam: payments\n"),
    )?;
    // Another team's rollout, ended before the page opens: the overview's
    // team filter must hide one of the two.
    stack.apply(
        &spec_yaml(&[(5.0, "1m"), (100.0, "1m")], 20)
            .replace("name: checkout\n", "name: search-ui\nteam: search\n")
            .replace("salt: checkout-7", "salt: search-1"),
    )?;
    stack
        .controller
        .ok(&["abort", "search-ui", "--reason", "another team's"])?;
    let browser = workspace_root().join("tests/browser");
    let url = stack.controller.url();
    let pid = stack.controller.pid().expect("the controller runs");
    let out = tokio::task::spawn_blocking(move || {
        // Bounded: a browser step that never ends must fail the test, not hang it.
        Command::new("timeout")
            .args(["240", "node"])
            .arg(browser.join("stress.mjs"))
            .env("DIMMER_URL", url)
            .env("DIMMER_VIEWER_TOKEN", VIEWER_TOKEN)
            .env("DIMMER_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("DIMMER_CONTROLLER_PID", pid.to_string())
            .env(
                "DIMMER_STREAMS_PER_PRINCIPAL",
                dimmer::api::streams::StreamLimits::default()
                    .per_principal
                    .to_string(),
            )
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim())?;
    eprintln!("the page under stress: {seen}");
    assert_eq!(seen["lagging_seen"], serde_json::json!([]), "{seen}");
    // The abort clicked under stress is in the audit, by the operator.
    let abort = stack.controller.first_record("checkout", "abort").await?;
    assert_eq!(abort["actor"], "deploy-bot", "{abort}");
    Ok(())
}
