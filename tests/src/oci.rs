//! `make oci`: the filter as an OCI image layout directory, in the format
//! Istio and Envoy Gateway pull ("compat": one `tar+gzip` layer holding
//! `plugin.wasm`, what `FROM scratch` + `COPY plugin.wasm ./` builds), so
//! it can be pushed with any OCI tool (`oras cp`, `skopeo copy`,
//! `crane push`). Built byte for byte the same from the same module: every
//! timestamp, owner and mode is fixed.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::json;
use sha2::{Digest, Sha256};

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A tar with one file, `plugin.wasm`, owned by root, dated 1970.
fn layer_tar(wasm: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("plugin.wasm")?;
    h.set_size(wasm.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append(&h, wasm)?;
    Ok(b.into_inner()?)
}

fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes)?;
    Ok(gz.finish()?)
}

/// Writes the layout for `wasm` into `dir` (created; an older layout there
/// is replaced) with `tag` as its reference name; returns the manifest's
/// digest, the one a `WasmPlugin` or `EnvoyExtensionPolicy` pins.
pub fn write_layout(dir: &Path, wasm: &[u8], tag: &str) -> anyhow::Result<String> {
    anyhow::ensure!(wasm.starts_with(b"\0asm"), "not a wasm module");
    let tar = layer_tar(wasm)?;
    let layer = gzip(&tar)?;
    let config = serde_json::to_vec(&json!({
        "architecture": "wasm",
        "os": "wasip1",
        "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]},
        "config": {},
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": LAYER_TYPE, "digest": sha256(&layer), "size": layer.len()}],
    }))?;
    let digest = sha256(&manifest);
    let index = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_TYPE, "digest": digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    for blob in [&layer, &config, &manifest] {
        let name = sha256(blob);
        std::fs::write(blobs.join(name.trim_start_matches("sha256:")), blob)?;
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    std::fs::write(dir.join("index.json"), index)?;
    Ok(digest)
}
