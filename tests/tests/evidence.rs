//! Promotion on evidence of safety, end to end: real Envoy routing real
//! requests, the apps' own conversion counters scraped by a real
//! Prometheus, the real controller. A step goes up only when the data show
//! the canary is at most its tolerance worse — not when its pause is over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::atomic::Ordering;
use std::time::Duration;

use dimmer_e2e::controller::VIEWER_TOKEN;
use dimmer_e2e::fixtures::Stack;
use dimmer_e2e::load::Load;
use dimmer_e2e::prometheus::Prometheus;

/// Short pauses, a conversion metric with a 20% tolerance: the spec that,
/// promoting on "no alarm yet", let a canary 40% worse through.
fn spec(prom: &str) -> String {
    format!(
        "name: checkout\nidentity:\n  - header: x-user-id\nsalt: checkout-7\nstable: v1\ncanary: v2\n\
         steps:\n  - {{percent: 20, pause: 5s}}\n  - {{percent: 50, pause: 5s}}\n  - {{percent: 100, pause: 1s}}\n\
         analysis:\n  interval: 1s\n  min_requests: 50\n  max_rate_increase_pp: 1\n\
         \x20 metrics:\n  - name: conversion\n    provider: {{prometheus: {{address: '{prom}'}}}}\n    kind: ratio\n    \
         successes: 'sum(shop_orders_total{{version=\"{{{{version}}}}\"}})'\n    \
         trials: 'sum(shop_checkouts_total{{version=\"{{{{version}}}}\"}})'\n    \
         direction: higher\n    tolerance: {{relative_percent: 20}}\n    min_count: 20\n"
    )
}

async fn shop() -> anyhow::Result<(Stack, Prometheus, Load)> {
    let stack = Stack::start().await?;
    let prom = Prometheus::start_scraping(&[], &[stack.lab.v1.port, stack.lab.v2.port]).await?;
    let load = Load::start(stack.lab.client.clone(), 3000, 300);
    Ok((stack, prom, load))
}

async fn history(stack: &Stack) -> anyhow::Result<Vec<serde_json::Value>> {
    let h = stack
        .controller
        .get("/v1/rollouts/checkout/history", VIEWER_TOKEN)
        .await?;
    Ok(h.as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_40_percent_worse_in_conversion_never_reaches_100_percent() -> anyhow::Result<()> {
    let (stack, prom, _load) = shop().await?;
    // v1 converts 30% of checkouts, v2 18%: 40% worse, twice the tolerance.
    stack
        .lab
        .v2
        .fault
        .conversion_bp
        .store(1800, Ordering::Relaxed);
    stack.apply(&spec(&prom.url()))?;
    // Its pause (5 s) and min_requests are over within seconds; in 40 s a
    // rule of "no alarm yet" would have had eight chances to step up.
    let mut held_on_the_bound = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut last = serde_json::Value::Null;
    while tokio::time::Instant::now() < deadline {
        last = stack.controller.rollout("checkout").await?;
        let reason = last["reason"].as_str().unwrap_or_default().to_owned();
        if reason.contains("conversion: canary at most") {
            held_on_the_bound = Some(reason);
        }
        if last["phase"] != "progressing" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_ne!(last["phase"], "completed", "{last}");
    let records = history(&stack).await?;
    let ups: Vec<_> = records
        .iter()
        .filter(|r| r["action"] == "step" || r["action"] == "complete")
        .collect();
    assert!(ups.is_empty(), "never left 20%: {ups:?}");
    if last["phase"] == "aborted" {
        let reason = last["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("metric conversion"), "{last}");
    } else {
        assert_eq!(last["phase"], "progressing", "{last}");
    }
    // Until it aborted (or the whole time) it held naming conversion's
    // bound against its tolerance, and that the canary's own estimate is
    // beyond it.
    let held = held_on_the_bound.unwrap_or_default();
    assert!(
        held.starts_with("waiting for evidence of safety")
            && held.contains("(bound), tolerance 20% worse"),
        "{held}\n{last}"
    );
    // The bound is in the status document, beside the verdict.
    let safety = last["evidence"]["safety"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let conv = safety
        .iter()
        .find(|r| r["test"] == "conversion")
        .cloned()
        .unwrap_or_default();
    assert_eq!(conv["within"], false, "{last}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_spec_with_a_healthy_canary_completes_on_evidence() -> anyhow::Result<()> {
    let (stack, prom, _load) = shop().await?;
    stack.apply(&spec(&prom.url()))?;
    let done = stack
        .controller
        .wait_decided("checkout", Duration::from_secs(150))
        .await?;
    assert_eq!(done["phase"], "completed", "{done}");
    let records = history(&stack).await?;
    let ups: Vec<_> = records
        .iter()
        .filter(|r| r["action"] == "step" && r["actor"] == "controller")
        .collect();
    assert_eq!(ups.len(), 2, "{records:?}");
    for up in ups {
        let why = up["reason"].as_str().unwrap_or_default();
        assert!(why.starts_with("evidence of safety (errors +"), "{up}");
        // Every comparative test's bound within its tolerance, in the record.
        let rows = up["evidence"]["safety"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let tests: Vec<&str> = rows.iter().filter_map(|r| r["test"].as_str()).collect();
        assert_eq!(
            tests,
            [
                "errors",
                "latency > 250 ms",
                "latency > 1000 ms",
                "conversion"
            ],
            "{up}"
        );
        assert!(rows.iter().all(|r| r["within"] == true), "{up}");
    }
    Ok(())
}

/// A guardrail beyond its limit holds the step at once, whatever its
/// `consecutive`, and a provider that accepts connections but never answers
/// is reported as not answering — not as unreachable — while the step holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_gauge_over_its_limit_and_a_hanging_provider_each_hold_the_step() -> anyhow::Result<()> {
    let (stack, _prom, _load) = shop().await?;
    // Accepts, reads nothing, answers nothing.
    let hang = std::net::TcpListener::bind("127.0.0.1:0")?;
    let hang_port = hang.local_addr()?.port();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for s in hang.incoming().take(200).flatten() {
            open.push(s);
        }
    });
    let p2 = stack.lab.v2.port;
    let yaml = |gauge: &str| {
        format!(
            "name: checkout\nidentity:\n  - header: x-user-id\nsalt: checkout-7\nstable: v1\ncanary: v2\n\
             steps:\n  - {{percent: 20, pause: 1s}}\n  - {{percent: 100, pause: 1s}}\n\
             analysis:\n  interval: 1s\n  min_requests: 20\n  promote_on: no_alarm\n  metrics:\n{gauge}"
        )
    };
    // v2 has taken orders: a max of 0 is breached at once; 100 looks
    // in a row before an abort.
    stack.apply(&yaml(&format!(
        "  - name: canary_orders\n    provider: {{http: {{json_path: '$.orders.count'}}}}\n    kind: gauge\n    \
         query: 'http://127.0.0.1:{p2}/shop/stats.json'\n    max: 0\n    consecutive: 100\n"
    )))?;
    let v = stack
        .controller
        .wait_for(
            "checkout",
            Duration::from_secs(30),
            "held by the gauge",
            |v| {
                v["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("metric canary_orders (gauge) is"))
            },
        )
        .await?;
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("above its max 0") && reason.contains("no step up while it breaches"),
        "{v}"
    );
    // Its pause (1 s) and min_requests are long over: still at step 1.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = stack.controller.rollout("checkout").await?;
    assert_eq!(
        (v["step"].as_u64(), v["phase"].as_str()),
        (Some(0), Some("progressing")),
        "{v}"
    );

    // The same rollout, its gauge now read from a provider that hangs.
    stack.apply(&yaml(&format!(
        "  - name: canary_orders\n    provider: {{prometheus: {{address: 'http://127.0.0.1:{hang_port}'}}}}\n    kind: gauge\n    \
         query: 'sum(orders)'\n    max: 0\n"
    )))?;
    let v = stack
        .controller
        .wait_for(
            "checkout",
            Duration::from_secs(30),
            "holding on the hang",
            |v| {
                v["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("did not answer within"))
            },
        )
        .await?;
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("holding: metric canary_orders (prometheus provider) has no value")
            && !reason.contains("cannot reach"),
        "{v}"
    );
    assert_eq!(v["step"].as_u64(), Some(0), "{v}");
    drop(held);
    Ok(())
}
