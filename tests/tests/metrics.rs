//! The filter's stats reach `/stats/prometheus` with rollout, version and
//! class labels, and agree with the requests sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use dimmer_e2e::fixtures::{rollout, static_config, users, Lab};
use dimmer_e2e::stats::sample;

#[tokio::test(flavor = "multi_thread")]
async fn counters_and_histograms_agree_with_requests_sent() -> anyhow::Result<()> {
    let lab = Lab::start(static_config(vec![rollout(3000)])).await?;
    // v2 fails every request, so its 5xx count is known exactly.
    lab.v2
        .fault
        .error_bp
        .store(10_000, std::sync::atomic::Ordering::Relaxed);
    let seen = lab.client.versions_of(&users("m", 600), 16).await?;
    let v1 = seen.iter().filter(|v| *v == "v1").count() as f64;
    let v2 = seen.iter().filter(|v| *v == "v2").count() as f64;

    // on_log runs after the response is sent; give the last ones a moment.
    let mut text = String::new();
    for _ in 0..50 {
        text = lab.envoy.prometheus().await?;
        let counted = sample(&text, "dimmer_requests", &[("rollout", "checkout")]);
        let timed = sample(&text, "dimmer_latency_ms_count", &[("rollout", "checkout")]);
        if counted >= v1 + v2 && timed >= v1 + v2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let count = |version: &str, class: &str| {
        sample(
            &text,
            "dimmer_requests",
            &[
                ("rollout", "checkout"),
                ("version", version),
                ("class", class),
            ],
        )
    };
    assert_eq!(count("v1", "2xx"), v1, "{text}");
    assert_eq!(count("v2", "5xx"), v2, "{text}");
    assert_eq!(count("v1", "5xx"), 0.0);
    assert_eq!(count("v2", "2xx"), 0.0);
    let latency = |version: &str| {
        sample(
            &text,
            "dimmer_latency_ms_count",
            &[("rollout", "checkout"), ("version", version)],
        )
    };
    assert_eq!(latency("v1"), v1, "{text}");
    assert_eq!(latency("v2"), v2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_histogram_sees_a_slow_version() -> anyhow::Result<()> {
    let lab = Lab::start(static_config(vec![rollout(10_000)])).await?;
    lab.v2
        .fault
        .delay_ms
        .store(300, std::sync::atomic::Ordering::Relaxed);
    lab.client.versions_of(&users("slow", 20), 20).await?;
    let labels = [("rollout", "checkout"), ("version", "v2")];
    let mut text = String::new();
    for _ in 0..50 {
        text = lab.envoy.prometheus().await?;
        if sample(&text, "dimmer_latency_ms_count", &labels) >= 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let under_250 = sample(
        &text,
        "dimmer_latency_ms_bucket",
        &[labels[0], labels[1], ("le", "250")],
    );
    let under_500 = sample(
        &text,
        "dimmer_latency_ms_bucket",
        &[labels[0], labels[1], ("le", "500")],
    );
    assert_eq!(under_250, 0.0, "{text}");
    assert_eq!(under_500, 20.0, "{text}");
    Ok(())
}
