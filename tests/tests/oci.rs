//! `make oci`'s image layout: well-formed, every digest right, the same
//! digest from the same module, and the one layer is the built module.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::io::Read;

use dimmer_e2e::oci::{sha256, write_layout, CONFIG_TYPE, LAYER_TYPE, MANIFEST_TYPE};
use dimmer_e2e::paths::filter_wasm;
use serde_json::Value;

fn blob(dir: &std::path::Path, digest: &str) -> Vec<u8> {
    let path = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        sha256(&bytes),
        digest,
        "{} is not what its name says",
        path.display()
    );
    bytes
}

#[test]
fn the_layout_holds_the_built_module_as_its_single_layer() -> anyhow::Result<()> {
    let wasm = std::fs::read(filter_wasm()?)?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("dimmer-filter");
    let digest = write_layout(&dir, &wasm, "0.1.0")?;

    let layout: Value = serde_json::from_slice(&std::fs::read(dir.join("oci-layout"))?)?;
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    let entry = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(entry["digest"], digest.as_str());
    assert_eq!(entry["mediaType"], MANIFEST_TYPE);
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "0.1.0"
    );

    let manifest_bytes = blob(&dir, &digest);
    assert_eq!(entry["size"], manifest_bytes.len());
    let manifest: Value = serde_json::from_slice(&manifest_bytes)?;
    assert_eq!(manifest["schemaVersion"], 2);
    let config_ref = &manifest["config"];
    assert_eq!(config_ref["mediaType"], CONFIG_TYPE);
    let config: Value =
        serde_json::from_slice(&blob(&dir, config_ref["digest"].as_str().unwrap()))?;
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "Istio's compat format: one layer");
    assert_eq!(layers[0]["mediaType"], LAYER_TYPE);
    let layer = blob(&dir, layers[0]["digest"].as_str().unwrap());
    assert_eq!(layers[0]["size"], layer.len());

    // The layer is a gzipped tar whose only file is plugin.wasm, the module.
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&layer[..]).read_to_end(&mut tar_bytes)?;
    assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&tar_bytes).as_str());
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut files = Vec::new();
    for entry in archive.entries()? {
        let mut e = entry?;
        let mut body = Vec::new();
        e.read_to_end(&mut body)?;
        files.push((e.path()?.display().to_string(), body));
    }
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "plugin.wasm");
    assert!(files[0].1 == wasm, "the layer is not the built module");

    // Built again from the same module: the same digest, so it can be pinned.
    assert_eq!(write_layout(&dir, &wasm, "0.1.0")?, digest);
    // Anything but a wasm module is refused.
    assert!(write_layout(&dir, b"not wasm", "0.1.0").is_err());
    Ok(())
}

#[test]
fn skopeo_reads_the_layout_with_the_same_digest() -> anyhow::Result<()> {
    let wasm = std::fs::read(filter_wasm()?)?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("dimmer-filter");
    let digest = write_layout(&dir, &wasm, "0.1.0")?;
    let reference = format!("oci:{}:0.1.0", dir.display());
    let out = std::process::Command::new("skopeo")
        .args(["inspect", &reference])
        .output()
        .map_err(|e| anyhow::anyhow!("skopeo ({e}): `make setup` installs it"))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(seen["Digest"], digest.as_str());
    assert_eq!(seen["Layers"].as_array().map(Vec::len), Some(1));
    // And copies it out, blob by blob, as a push would.
    let copy = tmp.path().join("copy");
    let status = std::process::Command::new("skopeo")
        .args(["copy", &reference, &format!("dir:{}", copy.display())])
        .output()?;
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    Ok(())
}
