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

/// The filter's plugin config of a [`Stack`]: polling the controller's
/// cluster every second with the proxy token.
fn polling_config() -> Value {
    json!({
        "controller": {
            "cluster": "dimmer-controller",
            "poll_interval_ms": 1000,
            "timeout_ms": 500,
            "token": crate::controller::ENVOY_TOKEN
        }
    })
}

/// Envoy with the filter polling a real `dimmer serve`, which reads that
/// Envoy's admin stats: the single-proxy setup (docs/controller.md, "One proxy or many").
pub struct Stack {
    pub lab: Lab,
    pub controller: crate::controller::Controller,
    /// With [`Stack::start_gated`]: the gate the controller reads metrics through.
    pub gate: Option<crate::faults::MetricsGate>,
    /// With [`Stack::start_tls`]: where the test CA and certificate are.
    pub certs: Option<(tempfile::TempDir, crate::tls::TestCerts)>,
}

impl Stack {
    /// With [`Stack::start_tls`]: the test CA and the controller's certificate.
    pub fn tls_certs(&self) -> Option<&crate::tls::TestCerts> {
        self.certs.as_ref().map(|(_, c)| c)
    }

    pub async fn start() -> anyhow::Result<Stack> {
        Self::start_with(&[]).await
    }

    pub async fn start_with(controller_args: &[&str]) -> anyhow::Result<Stack> {
        Self::start_inner(controller_args, false).await
    }

    /// The same over TLS, as `make demo` runs: the controller serves HTTPS
    /// with a certificate from a test CA, the CLI verifies it, and Envoy's
    /// filter polls it through `envoy-configs/envoy-tls.yaml.tmpl`.
    pub async fn start_tls() -> anyhow::Result<Stack> {
        let dir = tempfile::tempdir()?;
        let certs = crate::tls::TestCerts::new(dir.path())?;
        let admin = crate::ports::free_port()?;
        let controller = crate::controller::Controller::start_tls(
            crate::controller::MetricsFrom::EnvoyAdmin(admin),
            &certs,
            &[],
        )
        .await?;
        let port = controller.port;
        let (ca, name) = (certs.ca.display().to_string(), crate::tls::SERVER_NAME);
        let mut config = polling_config();
        config["controller"]["authority"] = json!(name);
        let lab = Lab::start_with(config, |o| {
            o.controller_port = port;
            o.admin_port = admin;
            o.node_id = "edge-1".into();
            o.template =
                Some(crate::paths::workspace_root().join("envoy-configs/envoy-tls.yaml.tmpl"));
            o.vars = vec![("CONTROLLER_CA", ca), ("CONTROLLER_NAME", name.to_string())];
        })
        .await?;
        Ok(Stack {
            lab,
            controller,
            gate: None,
            certs: Some((dir, certs)),
        })
    }

    /// The controller reads Envoy's admin through a [`crate::faults::MetricsGate`]
    /// the test can close, hang or make flap.
    pub async fn start_gated(controller_args: &[&str]) -> anyhow::Result<Stack> {
        Self::start_inner(controller_args, true).await
    }

    async fn start_inner(controller_args: &[&str], gated: bool) -> anyhow::Result<Stack> {
        let admin = crate::ports::free_port()?;
        let gate = if gated {
            Some(crate::faults::MetricsGate::start(admin).await?)
        } else {
            None
        };
        let metrics_port = gate.as_ref().map_or(admin, |g| g.port);
        let controller = crate::controller::Controller::start(
            crate::controller::MetricsFrom::EnvoyAdmin(metrics_port),
            controller_args,
        )
        .await?;
        let port = controller.port;
        let lab = Lab::start_with(polling_config(), |o| {
            o.controller_port = port;
            o.admin_port = admin;
            o.node_id = "edge-1".into();
        })
        .await?;
        Ok(Stack {
            lab,
            controller,
            gate,
            certs: None,
        })
    }

    /// Writes `yaml` to a file and `dimmer apply`s it as the operator.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        let path = self
            .controller
            .dir()
            .join(format!("spec-{}.yaml", fastrand::u32(..)));
        std::fs::write(&path, yaml)?;
        self.controller
            .ok(&["apply", "-f", &path.display().to_string()])
    }
}

/// A rollout spec for `checkout` (v1 → v2) by `x-user-id`, stepping through
/// `steps` (percent, pause) with quick analysis suited to tests.
pub fn spec_yaml(steps: &[(f64, &str)], min_requests: u64) -> String {
    let steps: String = steps
        .iter()
        .map(|(p, pause)| format!("  - {{percent: {p}, pause: {pause}}}\n"))
        .collect();
    format!(
        "name: checkout\nidentity:\n  - header: x-user-id\nsalt: checkout-7\nstable: v1\ncanary: v2\n\
         steps:\n{steps}analysis:\n  promote_on: no_alarm\n  interval: 1s\n  min_requests: {min_requests}\n"
    )
}
