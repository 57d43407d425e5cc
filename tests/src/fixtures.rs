//! The usual test setup: two versions of an app behind an Envoy running the
//! filter with one rollout, `checkout`, split by `x-user-id`.

use serde_json::{json, Value};

use crate::{Client, Envoy, EnvoyOptions, Upstream};

/// A `checkout` rollout with `canary_bp` basis points on v2.
pub fn rollout(canary_bp: u32) -> Value {
    json!({
        "name": "checkout",
        "identity": [{"header": "x-user-id"}, {"cookie": "session_id"}],
        "salt": "checkout-7",
        "stable": "v1",
        "versions": [
            {"name": "v1", "weight": 10_000 - canary_bp},
            {"name": "v2", "weight": canary_bp}
        ],
        "overrides": [{"header": "x-tenant-id", "values": ["acme-internal"], "version": "v2"}]
    })
}

pub fn static_config(rollouts: Vec<Value>) -> Value {
    json!({ "rollouts": rollouts })
}

pub struct Lab {
    pub v1: Upstream,
    pub v2: Upstream,
    pub envoy: Envoy,
    pub client: Client,
}

impl Lab {
    pub async fn start(plugin_config: Value) -> anyhow::Result<Lab> {
        Self::start_with(plugin_config, |_| {}).await
    }

    pub async fn start_with(
        plugin_config: Value,
        tweak: impl FnOnce(&mut EnvoyOptions),
    ) -> anyhow::Result<Lab> {
        let v1 = Upstream::start("v1").await?;
        let v2 = Upstream::start("v2").await?;
        let mut opts = EnvoyOptions::new(plugin_config, v1.port, v2.port);
        tweak(&mut opts);
        let envoy = Envoy::start(opts).await?;
        let client = Client::new(envoy.url(""));
        Ok(Lab {
            v1,
            v2,
            envoy,
            client,
        })
    }
}

pub fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}
