//! Release strategies beyond the canary, end to end: a real Envoy with the
//! filter, real upstreams, the real `dimmer` binary, load from many users.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::atomic::Ordering;
use std::time::Duration;

use dimmer_e2e::fixtures::Stack;
use dimmer_e2e::load::{now_ms, Load};

/// `checkout`, v1 (blue) → v2 (green), previewed by `x-preview: qa`.
fn blue_green_yaml(keep: &str, approval: bool) -> String {
    format!(
        "name: checkout\nidentity:\n  - header: x-user-id\nsalt: checkout-7\nstable: v1\ncanary: v2\n\
         overrides:\n  - {{header: x-preview, values: [qa], version: v2}}\n\
         strategy:\n  blue_green: {{approval: {approval}, keep_previous_for: {keep}}}\n\
         analysis:\n  interval: 1s\n  min_requests: 150\n"
    )
}

fn preview_load(stack: &Stack) -> Load {
    Load::start_with(
        stack.lab.client.clone(),
        50,
        60,
        "qa",
        vec![("x-preview".into(), "qa".into())],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_previews_switches_once_and_switches_back_at_once() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let users = Load::start(stack.lab.client.clone(), 2000, 200);
    let preview = preview_load(&stack);
    let out = stack.apply(&blue_green_yaml("10m", true))?;
    // Envoy polls once a second.
    let config_taken = now_ms() + 1500;
    assert!(out.contains("previewing v2"), "{out}");

    // The preview passes its analysis and waits for the switch.
    let waiting = stack
        .controller
        .wait_for("checkout", Duration::from_secs(60), "waiting", |v| {
            v["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("approval")
        })
        .await?;
    assert_eq!(waiting["weight_bp"], 0, "{waiting}");
    let before_switch = now_ms();
    let users_on_green = users
        .served()
        .iter()
        .filter(|s| s.at_ms < before_switch && s.version == "v2")
        .count();
    assert_eq!(users_on_green, 0, "no user reaches green before the switch");
    let previews: Vec<_> = preview
        .served()
        .into_iter()
        .filter(|s| s.at_ms > config_taken)
        .collect();
    assert!(previews.len() > 40, "{}", previews.len());
    assert!(
        previews.iter().all(|s| s.version == "v2"),
        "every preview request reaches green"
    );

    // One audited switch to 100%.
    stack
        .controller
        .ok(&["promote", "checkout", "--reason", "preview looks good"])?;
    let switched_ms = now_ms();
    let status = stack.controller.ok(&["status", "checkout"])?;
    assert!(status.contains("switched to v2; v1 kept ready"), "{status}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late_blue = users
        .served()
        .iter()
        .filter(|s| s.at_ms > switched_ms + 2000 && s.status == 200 && s.version != "v2")
        .count();
    assert_eq!(late_blue, 0, "everyone is on green 2 s after the switch");

    // Within the window, blue is one command away, and it takes at once.
    stack
        .controller
        .ok(&["abort", "checkout", "--reason", "checkout totals are off"])?;
    let back_ms = now_ms();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let served = users.served();
    let late_green = served
        .iter()
        .filter(|s| s.at_ms > back_ms + 2000 && s.version == "v2")
        .count();
    let after: Vec<_> = served.iter().filter(|s| s.at_ms > back_ms + 2000).collect();
    assert!(!after.is_empty());
    assert_eq!(
        late_green, 0,
        "everyone is on blue 2 s after the switch back"
    );
    assert!(served.iter().all(|s| s.status == 200), "no request failed");

    let status = stack.controller.ok(&["status", "checkout"])?;
    assert!(status.contains("aborted (switched back to v1)"), "{status}");
    let history = stack.controller.ok(&["history", "checkout"])?;
    for line in [
        "promote",
        "preview looks good",
        "switched to v2; v1 kept ready",
        "abort",
        "switched back to v1",
    ] {
        assert!(history.contains(line), "{line} missing from:\n{history}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_green_that_fails_its_preview_is_never_switched_to() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.lab.v2.fault.error_bp.store(2500, Ordering::Relaxed);
    let users = Load::start(stack.lab.client.clone(), 2000, 200);
    let _preview = preview_load(&stack);
    // Without a gate: only the analysis stands between the preview and the switch.
    stack.apply(&blue_green_yaml("10m", false))?;
    let done = stack
        .controller
        .wait_decided("checkout", Duration::from_secs(60))
        .await?;
    assert_eq!(done["phase"], "aborted", "{done}");
    assert!(
        done["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("error rate"),
        "{done}"
    );
    let on_green: Vec<_> = users
        .served()
        .into_iter()
        .filter(|s| s.version == "v2")
        .collect();
    assert!(
        on_green.is_empty(),
        "no user ever reached the failing green: {:?}",
        &on_green[..on_green.len().min(5)]
    );
    let history = stack.controller.ok(&["history", "checkout"])?;
    assert!(!history.contains("0% → 100%"), "{history}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_green_switches_by_itself_and_completes_after_the_window() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let _users = Load::start(stack.lab.client.clone(), 2000, 200);
    let _preview = preview_load(&stack);
    stack.apply(&blue_green_yaml("3s", false))?;
    let done = stack
        .controller
        .wait_decided("checkout", Duration::from_secs(60))
        .await?;
    assert_eq!(done["phase"], "completed", "{done}");
    let history = stack.controller.ok(&["history", "checkout"])?;
    assert!(history.contains("analysis passed: 0% → 100%"), "{history}");
    let status = stack.controller.ok(&["status", "checkout"])?;
    assert!(
        status.contains("completed (switched to v2; v1 released)"),
        "{status}"
    );
    Ok(())
}
