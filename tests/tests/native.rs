//! The dynamic-module experiment (`native/`) routes like the wasm filter:
//! the same cohorts, the client's route header replaced, stats counted. It
//! is measured in bench/RESULTS.md; this keeps that measurement honest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use dimmer_core::cohort::bucket;
use dimmer_e2e::bench::{envoy_yaml, native_search_path, Variant, HOST};
use dimmer_e2e::{Client, Envoy, Upstream};

#[tokio::test(flavor = "multi_thread")]
async fn the_native_module_routes_by_the_same_cohorts() -> anyhow::Result<()> {
    let dir = native_search_path();
    anyhow::ensure!(
        dir.join("libdimmer_native.so").exists(),
        "no {}/libdimmer_native.so (make test builds it)",
        dir.display()
    );
    dimmer_e2e::bench::find_native_module();
    let v1 = Upstream::start("v1").await?;
    let v2 = Upstream::start("v2").await?;
    let (yaml, listen, admin) = envoy_yaml(Variant::Native, None, v1.port, v2.port)?;
    let envoy = Envoy::start_with_yaml(&yaml, 2, listen, admin).await?;
    let c = Client::new(envoy.url(""));
    let mut on_canary = 0;
    for i in 0..200 {
        let id = format!("user-{i}");
        let r = c
            .get(
                "/",
                &[
                    ("host", HOST.as_bytes()),
                    ("x-user-id", id.as_bytes()),
                    ("x-dimmer-version", b"v2"),
                ],
            )
            .await?;
        // The bench rollout: 10% on v2, salt checkout-7.
        let expected = if bucket("checkout-7", id.as_bytes()) < 9000 {
            "v1"
        } else {
            "v2"
        };
        assert_eq!(r.version, expected, "{id}");
        on_canary += usize::from(r.version == "v2");
    }
    assert!((5..=40).contains(&on_canary), "{on_canary} of 200");
    // Another host: no rollout matches, the client's header is removed.
    let r = c
        .get(
            "/",
            &[("host", b"other.example"), ("x-dimmer-version", b"v2")],
        )
        .await?;
    assert_eq!((r.version.as_str(), r.saw_route.as_str()), ("v1", ""));
    let text = envoy.prometheus().await?;
    assert!(
        text.contains("checkout") && text.contains("2xx"),
        "stats counted:\n{}",
        text.lines()
            .filter(|l| l.contains("dimmer"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}
