//! A bad plugin configuration makes Envoy refuse the filter, naming the field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use dimmer_e2e::fixtures::{rollout, static_config, Lab};
use serde_json::json;

async fn refusal(config: serde_json::Value) -> String {
    match Lab::start(config).await {
        Ok(_) => String::from("envoy accepted it"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_refuses_a_bad_plugin_configuration_and_says_why() -> anyhow::Result<()> {
    let mut bad_weights = rollout(1000);
    bad_weights["versions"][0]["weight"] = json!(1);
    let err = refusal(static_config(vec![bad_weights])).await;
    assert!(
        err.contains("rollouts[0].versions: weights add up to 1001"),
        "{err}"
    );

    let mut no_salt = rollout(1000);
    no_salt["salt"] = json!("");
    let err = refusal(static_config(vec![rollout(0), no_salt])).await;
    assert!(err.contains("rollouts[1]"), "{err}");

    let err = refusal(json!({"rollouts": [], "route_heade": "x"})).await;
    assert!(err.contains("unknown field `route_heade`"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_rollout_names_are_refused() -> anyhow::Result<()> {
    let err = refusal(static_config(vec![rollout(0), rollout(0)])).await;
    assert!(
        err.contains("rollouts[1].name: duplicate name \"checkout\""),
        "{err}"
    );
    Ok(())
}
