//! The observed split, stickiness across Envoys, and monotone growth.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use dimmer_core::compiled::Compiled;
use dimmer_core::config::Rollout;
use dimmer_e2e::fixtures::{rollout, static_config, users, Lab};

const USERS: usize = 4000;

#[tokio::test(flavor = "multi_thread")]
async fn observed_split_matches_weights_and_the_cohort_function() -> anyhow::Result<()> {
    let lab = Lab::start(static_config(vec![rollout(2000)])).await?;
    let ids = users("user", USERS);
    let seen = lab.client.versions_of(&ids, 32).await?;

    // Every user lands exactly where the cohort function says.
    let spec: Rollout = serde_json::from_value(rollout(2000))?;
    let compiled = Compiled::new(0, "x-dimmer-version", &[spec]);
    let r = &compiled.rollouts[0];
    for (id, got) in ids.iter().zip(&seen) {
        let want = &r.versions[r.version_of_identity(id.as_bytes())];
        assert_eq!(got, want, "user {id}");
    }

    // And the share is within 4 standard deviations of 20%.
    let canary = seen.iter().filter(|v| *v == "v2").count() as f64 / USERS as f64;
    let sd = (0.2 * 0.8 / USERS as f64).sqrt();
    assert!((canary - 0.2).abs() < 4.0 * sd, "canary share {canary}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_envoys_agree_on_every_user() -> anyhow::Result<()> {
    let a = Lab::start(static_config(vec![rollout(5000)])).await?;
    let b = Lab::start(static_config(vec![rollout(5000)])).await?;
    let ids = users("sticky", 1000);
    let from_a = a.client.versions_of(&ids, 32).await?;
    let from_b = b.client.versions_of(&ids, 32).await?;
    assert_eq!(from_a, from_b);
    // The same Envoy, asked again (other workers, other connections), agrees too.
    assert_eq!(from_a, a.client.versions_of(&ids, 7).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn raising_the_weight_moves_no_canary_user_back() -> anyhow::Result<()> {
    let ids = users("grow", 2000);
    let mut before: Option<Vec<String>> = None;
    for bp in [100, 1000, 5000, 10_000] {
        let lab = Lab::start(static_config(vec![rollout(bp)])).await?;
        let now = lab.client.versions_of(&ids, 32).await?;
        if let Some(prev) = &before {
            for ((id, was), is) in ids.iter().zip(prev).zip(&now) {
                assert!(!(was == "v2" && is == "v1"), "{id} went back to v1 at {bp}");
            }
        }
        before = Some(now);
    }
    assert!(before.unwrap_or_default().iter().all(|v| v == "v2"));
    Ok(())
}
