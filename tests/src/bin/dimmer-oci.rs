//! `make oci`: writes the built filter as an OCI image layout and prints the
//! digest the manifests in `deploy/` pin.

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
        "push it: oras cp --from-oci-layout {}:{} registry.example.com/dimmer-filter:{}",
        out.display(),
        a.tag,
        a.tag
    );
    println!(
        "then pin `sha256: {}` in deploy/istio/wasmplugin.yaml",
        digest.trim_start_matches("sha256:")
    );
    Ok(())
}
