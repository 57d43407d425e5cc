//! The shipped alert rules and Grafana dashboard (`deploy/prometheus/`,
//! `deploy/grafana/`): the rules pass `promtool check rules` and their own
//! `promtool test rules`, and every series a rule or a panel queries is one
//! a real Envoy with the filter, or the real controller, exports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use dimmer_e2e::controller::VIEWER_TOKEN;
use dimmer_e2e::fixtures::Stack;
use dimmer_e2e::load::Load;
use dimmer_e2e::paths::workspace_root;

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(workspace_root().join("deploy/prometheus"))
        .output()
        .expect("promtool (make setup installs Debian's prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_rules_pass_promtool_and_their_own_tests() {
    let check = promtool(&["check", "rules", "dimmer-rules.yaml"]);
    assert!(check.contains("SUCCESS"), "{check}");
    let test = promtool(&["test", "rules", "dimmer-rules.test.yaml"]);
    assert!(test.contains("SUCCESS"), "{test}");
}

/// The `dimmer…` series names in a PromQL expression.
fn series_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.starts_with("dimmer") {
                names.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    names
}

/// Series names in Prometheus text.
fn names_in(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_series_a_rule_or_a_panel_queries_exists() -> anyhow::Result<()> {
    let rules_text =
        std::fs::read_to_string(workspace_root().join("deploy/prometheus/dimmer-rules.yaml"))?;
    let rules: serde_norway::Value = serde_norway::from_str(&rules_text)?;
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        workspace_root().join("deploy/grafana/dimmer-dashboard.json"),
    )?)?;

    // A rollout with a shadow step (so the filter defines its shadow
    // counters), judged for a while, then aborted by a person, so that
    // every family has a sample.
    let stack = Stack::start().await?;
    let _load = Load::start(stack.lab.client.clone(), 2000, 200);
    stack.apply(
        "name: checkout\nidentity:\n  - header: x-user-id\nstable: v1\ncanary: v2\n\
         steps:\n  - {percent: 0, traffic: shadow}\n  - {percent: 10}\n\
         analysis:\n  promote_on: no_alarm\n  interval: 1s\n  min_requests: 10\n",
    )?;
    stack
        .controller
        .wait_for("checkout", Duration::from_secs(30), "judged", |v| {
            v["evidence"]["e_threshold"].is_number()
        })
        .await?;
    stack
        .controller
        .ok(&["abort", "checkout", "--reason", "for the metrics"])?;
    let http = reqwest::Client::new();
    let metrics_url = format!("{}/metrics", stack.controller.url());
    let mut controller = String::new();
    for _ in 0..50 {
        controller = http
            .get(&metrics_url)
            .bearer_auth(VIEWER_TOKEN)
            .send()
            .await?
            .text()
            .await?;
        if controller.contains("dimmer_rollback_seconds{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        controller.contains("dimmer_rollback_seconds{rollout=\"checkout\",actor_kind=\"person\"}"),
        "{controller}"
    );
    let envoy = stack.lab.envoy.prometheus().await?;
    // The controller's exposition is one Prometheus's own linter accepts.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), controller.as_bytes())?;
    let lint = lint.wait_with_output()?;
    assert!(
        lint.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let mut exist = names_in(&controller);
    exist.extend(names_in(&envoy));
    let mut queried = BTreeSet::new();
    for group in rules["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            if let Some(record) = rule["record"].as_str() {
                exist.insert(record.to_owned());
            }
            queried.extend(series_in(rule["expr"].as_str().unwrap_or_default()));
        }
    }
    let mut panels = 0;
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        panels += 1;
        for t in panel["targets"].as_array().into_iter().flatten() {
            queried.extend(series_in(t["expr"].as_str().unwrap_or_default()));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        queried.extend(series_in(v["definition"].as_str().unwrap_or_default()));
    }
    assert!(panels >= 10 && queried.len() >= 15, "{queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|q| !exist.contains(*q)).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {exist:?}"
    );
    Ok(())
}
