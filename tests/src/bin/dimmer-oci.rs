//! `make oci`: writes the built filter as an OCI image layout, prints its
//! digest, and pins it in the manifests in `deploy/`: the Istio overlay's
//! and Envoy Gateway's patches (`wasm-digest.yaml`) name the module by
//! `@sha256:`, so what a cluster loads is exactly what was built.

use std::path::PathBuf;

use clap::Parser;
use dimmer_e2e::paths::{filter_wasm, workspace_root};

#[derive(Parser)]
struct Args {
    /// The module (default: the release build of the filter).
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// The layout directory (default: target/oci/dimmer-filter).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The reference name of the image in the layout.
    #[arg(long, default_value = "0.1.0")]
    tag: String,
    /// Where the image is pushed (its repository, without tag or digest).
    #[arg(long, default_value = "registry.example.com/dimmer-filter")]
    repository: String,
    /// The `deploy/` tree whose manifests get the digest (default: this
    /// checkout's).
    #[arg(long)]
    deploy: Option<PathBuf>,
}

/// Writes the digest into the Istio overlay's and Envoy Gateway's patches.
fn pin(deploy: &std::path::Path, repository: &str, digest: &str) -> anyhow::Result<()> {
    let hex = digest.trim_start_matches("sha256:");
    let istio = format!(
        "# Written by `make oci`: the module the WasmPlugin loads, pinned by its\n\
         # digest (Istio checks the pulled image against `sha256`).\n\
         - op: replace\n  path: /spec/url\n  value: oci://{repository}@sha256:{hex}\n\
         - op: add\n  path: /spec/sha256\n  value: \"{hex}\"\n"
    );
    std::fs::write(deploy.join("overlays/istio/wasm-digest.yaml"), istio)?;
    let gateway = format!(
        "# Written by `make oci`: the module Envoy Gateway loads, pinned by its\n\
         # digest.\n\
         - op: replace\n  path: /spec/wasm/0/code/image/url\n  value: {repository}@sha256:{hex}\n"
    );
    std::fs::write(deploy.join("envoy-gateway/wasm-digest.yaml"), gateway)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider: one for the process.
    dimmer::tls::install_provider();
    let a = Args::parse();
    let wasm_path = match a.wasm {
        Some(p) => p,
        None => filter_wasm()?,
    };
    let out = a
        .out
        .unwrap_or_else(|| workspace_root().join("target/oci/dimmer-filter"));
    let wasm = std::fs::read(&wasm_path)?;
    let digest = dimmer_e2e::oci::write_layout(&out, &wasm, &a.tag)?;
    println!(
        "{}: {} bytes of {}",
        out.display(),
        wasm.len(),
        wasm_path.display()
    );
    println!("digest {digest}");
    println!(
        "push it: oras cp --from-oci-layout {}:{} {}:{}",
        out.display(),
        a.tag,
        a.repository,
        a.tag
    );
    let deploy = a.deploy.unwrap_or_else(|| workspace_root().join("deploy"));
    pin(&deploy, &a.repository, &digest)?;
    println!(
        "pinned {}@{digest} in {}/overlays/istio and {}/envoy-gateway (wasm-digest.yaml); commit them with the release",
        a.repository,
        deploy.display(),
        deploy.display()
    );
    Ok(())
}
