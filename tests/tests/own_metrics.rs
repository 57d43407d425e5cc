//! The team's own metrics (`analysis.metrics`), end to end: the apps expose
//! their own business counters per version, a real Prometheus scrapes them
//! (and the HTTP JSON provider reads the apps directly), the real controller
//! judges canary against baseline on them while Envoy routes real requests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::atomic::Ordering;
use std::time::Duration;

use dimmer_e2e::controller::VIEWER_TOKEN;
use dimmer_e2e::fixtures::{spec_yaml, Stack};
use dimmer_e2e::load::Load;
use dimmer_e2e::prometheus::Prometheus;

/// The shop's conversion (orders per checkout), read from Prometheus.
fn conversion(prom: &str, tolerance: &str) -> String {
    format!(
        "  metrics:\n  - name: conversion\n    provider: {{prometheus: {{address: '{prom}'}}}}\n    kind: ratio\n    \
         successes: 'sum(shop_orders_total{{version=\"{{{{version}}}}\"}})'\n    \
         trials: 'sum(shop_checkouts_total{{version=\"{{{{version}}}}\"}})'\n    \
         direction: higher\n    tolerance: {tolerance}\n    min_count: 20\n"
    )
}

async fn shop() -> anyhow::Result<(Stack, Prometheus, Load)> {
    let stack = Stack::start().await?;
    let prom = Prometheus::start_scraping(&[], &[stack.lab.v1.port, stack.lab.v2.port]).await?;
    let load = Load::start(stack.lab.client.clone(), 3000, 150);
    Ok((stack, prom, load))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_whose_conversion_drops_is_aborted_with_the_metric_named() -> anyhow::Result<()> {
    let (stack, prom, _load) = shop().await?;
    // v1 converts 30% of checkouts; v2 fails to turn most of them into orders.
    stack
        .lab
        .v2
        .fault
        .conversion_bp
        .store(800, Ordering::Relaxed);
    let yaml = spec_yaml(&[(20.0, "600s"), (100.0, "1s")], 20)
        + &conversion(&prom.url(), "{relative_percent: 5}");
    stack.apply(&yaml)?;
    let done = stack
        .controller
        .wait_decided("checkout", Duration::from_secs(120))
        .await?;
    assert_eq!(done["phase"], "aborted", "{done}");
    let reason = done["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("metric conversion (ratio, higher is better) is worse on the canary"),
        "{reason}"
    );
    assert!(
        reason.contains("e-value") && reason.contains("/α"),
        "{reason}"
    );
    // The audit record says the same, with the metric's numbers.
    let history = stack
        .controller
        .get("/v1/rollouts/checkout/history", VIEWER_TOKEN)
        .await?;
    let abort = history
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["action"] == "abort")
        .cloned()
        .unwrap_or_default();
    assert_eq!(abort["actor"], "controller", "{history}");
    let m = &abort["evidence"]["metrics"][0];
    assert_eq!(m["name"], "conversion", "{abort}");
    assert!(
        m["canary"].as_f64().unwrap() < 0.15 && m["baseline"].as_f64().unwrap() > 0.2,
        "{abort}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_canary_is_promoted_on_every_kind_and_both_providers() -> anyhow::Result<()> {
    let (stack, prom, _load) = shop().await?;
    // Prometheus for the ratio and the mean; the HTTP JSON provider reads
    // each version's own stats endpoint for two gauges (here each version
    // listens on a port of its own, so each gauge names its URL).
    let (p1, p2) = (stack.lab.v1.port, stack.lab.v2.port);
    // Everyone's mix is the same on both versions: the dimensions must
    // not hold a healthy canary.
    let yaml = spec_yaml(&[(20.0, "3s"), (50.0, "3s"), (100.0, "2s")], 20)
        + "  dimensions: [{user_agent: class}, {header: x-country}]\n"
        + &conversion(&prom.url(), "{relative_percent: 20}")
        + &format!(
            "  - name: order_value\n    provider: {{prometheus: {{address: '{}'}}}}\n    kind: mean\n    \
             sum: 'sum(shop_order_value_cents_total{{version=\"{{{{version}}}}\"}})'\n    \
             count: 'sum(shop_orders_total{{version=\"{{{{version}}}}\"}})'\n    \
             direction: higher\n    tolerance: {{relative_percent: 20}}\n    min_count: 20\n\
             \x20 - name: orders_seen_by_v1\n    provider: {{http: {{json_path: '$.orders.count'}}}}\n    kind: gauge\n    \
             query: 'http://127.0.0.1:{p1}/shop/stats.json?rollout={{{{rollout}}}}'\n    min: 1\n\
             \x20 - name: orders_seen_by_v2\n    provider: {{http: {{json_path: '$.orders.count', headers: {{x-asked-by: dimmer}}}}}}\n    kind: gauge\n    \
             query: 'http://127.0.0.1:{p2}/shop/stats.json?canary={{{{canary}}}}'\n    min: 0\n",
            prom.url()
        );
    stack.apply(&yaml)?;
    let done = stack
        .controller
        .wait_decided("checkout", Duration::from_secs(150))
        .await?;
    assert_eq!(done["phase"], "completed", "{done}");
    // Every step up was decided with all four metrics' values in hand.
    let history = stack
        .controller
        .get("/v1/rollouts/checkout/history", VIEWER_TOKEN)
        .await?;
    let ups: Vec<_> = history
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["action"] == "step" && r["actor"] == "controller")
        .collect();
    assert!(!ups.is_empty(), "{history}");
    for up in ups {
        let names: Vec<&str> = up["evidence"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "conversion",
                "order_value",
                "orders_seen_by_v1",
                "orders_seen_by_v2"
            ],
            "{up}"
        );
        let ov = &up["evidence"]["metrics"][1];
        // Orders average 5000 cents on both versions.
        for side in ["canary", "baseline"] {
            let v = ov[side].as_f64().unwrap_or(0.0);
            assert!((3000.0..8000.0).contains(&v), "{side}: {up}");
        }
        assert!(
            up["evidence"]["metrics"][2]["canary"].as_f64().unwrap() >= 1.0,
            "{up}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prometheus_that_is_down_makes_the_rollout_hold_naming_the_metric() -> anyhow::Result<()>
{
    let (stack, prom, _load) = shop().await?;
    let yaml = spec_yaml(&[(20.0, "1s"), (100.0, "1s")], 20)
        + &conversion(&prom.url(), "{relative_percent: 20}");
    // Prometheus stops answering before the first step can be judged.
    drop(prom);
    stack.apply(&yaml)?;
    let held = stack
        .controller
        .wait_for(
            "checkout",
            Duration::from_secs(60),
            "held on the metric",
            |v| {
                v["reason"].as_str().is_some_and(|r| {
                    r.contains("metric conversion (prometheus provider) has no value")
                })
            },
        )
        .await?;
    let reason = held["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("cannot reach prometheus"), "{reason}");
    // It stays held: the filter's own counts are healthy and plenty, yet the
    // step does not go up without the metric.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let v = stack.controller.rollout("checkout").await?;
    assert_eq!(v["phase"], "progressing", "{v}");
    assert_eq!(v["step"], 0, "{v}");
    assert_eq!(v["weight_bp"], 2000, "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_whose_cohort_skews_is_held_naming_the_dimension() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let c = || stack.lab.client.clone();
    let h = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let _us = Load::start_with(c(), 3000, 90, "us", vec![h("x-country", "us")]);
    let _de = Load::start_with(c(), 3000, 45, "de", vec![h("x-country", "de")]);
    // A load balancer's mistake: every French user lands on the canary.
    let _fr = Load::start_with(
        c(),
        300,
        20,
        "fr",
        vec![h("x-country", "fr"), h("x-tenant-id", "acme-internal")],
    );
    // A step long enough to judge: a hold test, like the sample ratio, holds
    // once it has the evidence, and the step needs a few seconds of it.
    let yaml = spec_yaml(&[(10.0, "15s"), (100.0, "1s")], 150)
        + "  dimensions: [{header: x-country}, {user_agent: class}]\n"
        + "overrides:\n  - {header: x-tenant-id, values: [acme-internal], version: v2}\n";
    stack.apply(&yaml)?;
    let held = stack
        .controller
        .wait_for(
            "checkout",
            Duration::from_secs(60),
            "held on its mix",
            |v| {
                v["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("cohort mismatch on x-country: fr is"))
            },
        )
        .await?;
    let reason = held["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("over-represented"), "{reason}");
    assert!(reason.contains("of the baseline's"), "{reason}");
    // Held, not aborted and not promoted; status shows the mix side by side.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let v = stack.controller.rollout("checkout").await?;
    assert_eq!(v["phase"], "progressing", "{v}");
    assert_eq!(v["step"], 0, "{v}");
    let summary = v["evidence_summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("mix x-country (canary vs baseline):"),
        "{summary}"
    );
    let rows = v["evidence"]["mix"].as_array().cloned().unwrap_or_default();
    let fr = rows
        .iter()
        .find(|r| r["dimension"] == "x-country" && r["value"] == "fr")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(fr["baseline_percent"].as_f64(), Some(0.0), "{v}");
    assert!(fr["canary_percent"].as_f64().unwrap() > 20.0, "{v}");
    // Envoy counted what the controller read: bounded values per dimension.
    let text = stack.lab.envoy.prometheus().await?;
    assert!(
        text.contains(
            r#"dimmer_mix{rollout="checkout",version="v2",dimension="x-country",value="fr"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"dimension="user_agent",value="_none""#),
        "{text}"
    );
    Ok(())
}

/// Clients choose the values: whatever they send, the filter's mix
/// counters stay bounded, and a value that could reach into a stat's name
/// is `_other`.
#[tokio::test(flavor = "multi_thread")]
async fn invented_values_do_not_grow_the_mix_counters() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let yaml = spec_yaml(&[(50.0, "600s"), (100.0, "1s")], 20)
        + "  dimensions: [{header: x-country, max_values: 3}, {cookie: plan, max_values: 2}]\n";
    stack.apply(&yaml)?;
    let client = &stack.lab.client;
    // Wait for the filter to take the rollout.
    stack
        .controller
        .wait_for("checkout", Duration::from_secs(30), "applied", |v| {
            v["proxies_applied"] == 1
        })
        .await?;
    for i in 0..1500u32 {
        let user = format!("u{}", i % 200);
        let junk = format!("c{i}");
        let hostile = format!("x;.;version=.=v9;.;{i}");
        let country: &[u8] = match i % 5 {
            0 | 1 => b"us",
            2 => junk.as_bytes(),
            3 => hostile.as_bytes(),
            _ => b"DE",
        };
        let cookie = format!("plan=p{}; other=1", i % 700);
        client
            .get(
                "/",
                &[
                    ("x-user-id", user.as_bytes()),
                    ("x-country", country),
                    ("cookie", cookie.as_bytes()),
                ],
            )
            .await?;
    }
    let text = stack.lab.envoy.prometheus().await?;
    let series = |dim: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("dimmer_mix{") && l.contains(&format!("dimension=\"{dim}\"")))
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
            .collect()
    };
    let countries = series("x-country");
    // us and de (lowercased), _other and _none, per version; the hostile
    // value was never a name: no version v9, no stray tags.
    for v in ["v1", "v2"] {
        for value in ["us", "de", "_other", "_none"] {
            let want = format!(
                r#"dimmer_mix{{rollout="checkout",version="{v}",dimension="x-country",value="{value}"}}"#
            );
            assert!(countries.contains(&want), "{want} missing: {countries:#?}");
        }
    }
    assert!(!text.contains("v9"), "a client's value reached a stat name");
    // Each version: at most max_values values plus _other and _none, per
    // worker (Envoy's workers each keep a sketch).
    let workers = 2;
    assert!(countries.len() <= 2 * (3 * workers + 2), "{countries:#?}");
    let plans = series("cookie.plan");
    assert!(plans.len() <= 2 * (2 * workers + 2), "{plans:#?}");
    let other = |dim: &str, v: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    r#"dimmer_mix{{rollout="checkout",version="{v}",dimension="{dim}",value="_other"}}"#
                ))
            })
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0)
    };
    // 700 plans each seen about twice: none is frequent, all are _other.
    assert!(
        other("cookie.plan", "v1") + other("cookie.plan", "v2") > 1400.0,
        "{plans:#?}"
    );
    Ok(())
}
