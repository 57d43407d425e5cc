//! The shipped manifests (`deploy/`) hold payloads that work: the filter
//! configuration of each Istio and Envoy Gateway manifest runs in a real
//! Envoy and routes real requests. The controller's install (kustomize,
//! schemas, Pod Security, starting from the rendered objects) is
//! tests/tests/kubernetes.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use dimmer_core::cohort::bucket;
use dimmer_e2e::fixtures::Lab;
use dimmer_e2e::paths::workspace_root;
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
