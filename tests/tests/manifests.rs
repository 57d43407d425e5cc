//! The shipped manifests (`deploy/`) hold payloads that work: the filter
//! configuration of each Istio and Envoy Gateway manifest runs in a real
//! Envoy and routes real requests, and the controller's Deployment starts
//! the real `dimmer serve` with its arguments and its Secret's tokens.
//! No Kubernetes here: what Kubernetes itself does with them is not tested.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dimmer_core::cohort::bucket;
use dimmer_e2e::controller::dimmer_binary;
use dimmer_e2e::fixtures::Lab;
use dimmer_e2e::paths::workspace_root;
use dimmer_e2e::ports::free_port;
use serde::Deserialize;
use serde_json::Value;

/// Every document of a multi-document YAML file under `deploy/`, as JSON.
fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(workspace_root().join("deploy").join(path)).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| {
            let v = serde_norway::Value::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .collect()
}

fn of_kind(docs: &[Value], kind: &str) -> Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_istio_manifests_carry_a_config_that_routes() -> anyhow::Result<()> {
    let plugin = of_kind(&documents("istio/wasmplugin.yaml"), "WasmPlugin");
    let config = plugin["spec"]["pluginConfig"].clone();
    let filter = of_kind(&documents("istio/envoyfilter.yaml"), "EnvoyFilter");
    // Both sit on the caller's side (its outbound calls), never inbound.
    assert_eq!(
        plugin["spec"]["match"],
        serde_json::json!([{"mode": "CLIENT"}])
    );
    assert_eq!(
        filter["spec"]["configPatches"][0]["match"]["context"],
        "SIDECAR_OUTBOUND"
    );
    let value = &filter["spec"]["configPatches"][0]["patch"]["value"];
    let wasm = &value["typed_config"];
    assert_eq!(
        wasm["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
    );
    assert_eq!(
        wasm["config"]["vm_config"]["runtime"],
        "envoy.wasm.runtime.v8"
    );
    let text = wasm["config"]["configuration"]["value"].as_str().unwrap();
    let from_filter: Value = serde_json::from_str(text)?;
    // The two ways of loading it carry the same configuration (the
    // EnvoyFilter's leaves the flags header at its default).
    let mut expected = config.clone();
    expected.as_object_mut().unwrap().remove("flags_header");
    assert_eq!(from_filter, expected);

    for config in [config, from_filter] {
        // The controller's cluster is Istio's name, not in this Envoy: the
        // filter routes on the configured rollouts, polls fail and are counted.
        let lab = Lab::start(config).await?;
        for i in 0..50 {
            let id = format!("mesh-{i}");
            let r = lab.client.get("/", &[("x-user-id", id.as_bytes())]).await?;
            assert_eq!(
                (r.status, r.version.as_str(), r.saw_route.as_str()),
                (200, "v1", "v1")
            );
        }
        let r = lab
            .client
            .get(
                "/",
                &[("x-user-id", b"x"), ("x-tenant-id", b"acme-internal")],
            )
            .await?;
        assert_eq!(r.version, "v2", "the override routes");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_envoy_gateway_policy_carries_a_config_that_routes() -> anyhow::Result<()> {
    let policy = of_kind(
        &documents("envoy-gateway/envoyextensionpolicy.yaml"),
        "EnvoyExtensionPolicy",
    );
    let wasm = &policy["spec"]["wasm"][0];
    assert_eq!(wasm["code"]["type"], "Image");
    let config = wasm["config"].clone();
    let lab = Lab::start(config).await?;
    let host = [("host", &b"checkout.example.com"[..])];
    let mut v2 = 0;
    for i in 0..300 {
        let id = format!("gw-{i}");
        let r = lab
            .client
            .get(
                "/",
                &[
                    ("host", b"checkout.example.com"),
                    ("x-user-id", id.as_bytes()),
                ],
            )
            .await?;
        let want = if bucket("checkout", id.as_bytes()) < 9000 {
            "v1"
        } else {
            "v2"
        };
        assert_eq!(r.version, want, "{id}");
        v2 += usize::from(r.version == "v2");
    }
    assert!((10..60).contains(&v2), "{v2} of 300 on v2");
    // Anonymous visitors get a sticky cookie, `Secure` as configured.
    let r = lab.client.get("/", &host).await?;
    let cookie = r.set_cookie.unwrap_or_default();
    assert!(
        cookie.starts_with("dimmer_uid=") && cookie.contains("; Secure"),
        "{cookie}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_deployment_starts_dimmer_serve_with_its_secret() -> anyhow::Result<()> {
    let docs = documents("controller/dimmer.yaml");
    let secret = of_kind(&docs, "Secret");
    let deployment = of_kind(&docs, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let dir = tempfile::tempdir()?;
    let tokens = secret["stringData"]["tokens.yaml"].as_str().unwrap();
    std::fs::write(dir.path().join("tokens.yaml"), tokens)?;
    // The shipped key is a placeholder to replace; a real one here.
    assert_eq!(secret["stringData"]["audit.key"], "<64 hex digits>");
    let key: String = (0..64)
        .map(|i| b"0123456789abcdef"[i % 16] as char)
        .collect();
    std::fs::write(dir.path().join("audit.key"), key)?;
    let port = free_port()?;
    // The manifest's arguments, with the paths and the address moved here.
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            let tmp = |p: &str| dir.path().join(p).display().to_string();
            match a.split_once('=') {
                Some(("--listen", _)) => format!("--listen=127.0.0.1:{port}"),
                Some(("--db", _)) => format!("--db={}", tmp("dimmer.db")),
                Some(("--tokens", _)) => format!("--tokens={}", tmp("tokens.yaml")),
                Some(("--audit-key", _)) => format!("--audit-key={}", tmp("audit.key")),
                _ => a.to_owned(),
            }
        })
        .collect();
    assert_eq!(args[0], "serve");
    let mut child = Command::new(dimmer_binary()?)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let viewer = secret["stringData"]["viewer-token"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let answered = loop {
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err)?;
            panic!("dimmer serve {args:?} exited ({status}):\n{err}");
        }
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await {
            break r.status();
        }
        assert!(Instant::now() < deadline, "no answer on {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answered, 200);
    // The ServiceMonitor's token is a viewer's, which may read /metrics.
    let metrics = http
        .get(format!("{url}/metrics"))
        .bearer_auth(viewer)
        .send()
        .await?;
    assert_eq!(metrics.status(), 200);
    let monitor = of_kind(&docs, "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["bearerTokenSecret"]["key"],
        "viewer-token"
    );
    // The probes and the Service use the port the container listens on.
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
    // Liveness on a route that is up whatever the store does.
    let live = container["livenessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(live, "/livez");
    let alive = http.get(format!("{url}{live}")).send().await?;
    assert_eq!(alive.status(), 200);
    let service = of_kind(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
