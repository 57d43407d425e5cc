//! The benchmark's variants: the same Envoy, the same upstreams, one worker;
//! only the route table and the HTTP filters differ. Shared by the
//! wall-clock bench (`dimmer-bench`) and the instruction counts
//! (`dimmer-callgrind`).

use std::path::Path;

use crate::envoy::render;
use crate::fixtures::rollout;
use crate::paths::{filter_wasm, workspace_root};
use crate::ports::free_port;

/// The host every benchmark request carries; Dimmer's rollout matches it.
pub const HOST: &str = "app.example";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Variant {
    NoFilter,
    NoopWasm,
    NativeSplit,
    Dimmer,
    /// Another build of the filter, for A/B comparisons of a change.
    Alternative,
    /// Dimmer with the host matched by Envoy: the filter runs only where
    /// the route table put it (docs/filter.md, "Placing the filter"), so
    /// the rollout has no `match.host` and `:authority` is never read.
    DimmerEnvoyHost,
    /// The same routing as an Envoy dynamic module (`native/`): no VM.
    Native,
    /// Dimmer's rollout and ten feature flags evaluated on every request.
    DimmerFlags,
    /// Dimmer routing only: the host matched by Envoy, and the versions
    /// counted by Envoy's cluster stats (`counting: {by: envoy}`), so the
    /// filter reads no status and no clock.
    DimmerEnvoyCounts,
    /// What a newcomer gets from the docs: the rollout of
    /// `examples/checkout-rollout.yaml` as the controller serves it, in the
    /// shipped Envoy config's route table.
    Documented,
    /// The same, with the ten flags of [`Variant::DimmerFlags`].
    DocumentedFlags,
    /// The same ten flags all at rest, as the controller serves flags whose
    /// rollout has ended: statuses counted, no latency recorded.
    DocumentedFlagsAtRest,
}

pub const VARIANTS: [Variant; 12] = [
    Variant::NoFilter,
    Variant::NoopWasm,
    Variant::NativeSplit,
    Variant::Dimmer,
    Variant::Alternative,
    Variant::DimmerEnvoyHost,
    Variant::Native,
    Variant::DimmerFlags,
    Variant::DimmerEnvoyCounts,
    Variant::Documented,
    Variant::DocumentedFlags,
    Variant::DocumentedFlagsAtRest,
];

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::NoFilter => "no filter",
            Variant::NoopWasm => "no-op wasm filter",
            Variant::NativeSplit => "native weighted_clusters + hash",
            Variant::Dimmer => "dimmer",
            Variant::Alternative => "dimmer (--alternative build)",
            Variant::DimmerEnvoyHost => "dimmer, host matched by Envoy",
            Variant::Native => "dimmer as a dynamic module (native)",
            Variant::DimmerFlags => "dimmer + 10 flags",
            Variant::DimmerEnvoyCounts => "dimmer, host matched and versions counted by Envoy",
            Variant::Documented => "dimmer as documented (examples/checkout-rollout.yaml)",
            Variant::DocumentedFlags => "dimmer as documented + 10 flags",
            Variant::DocumentedFlagsAtRest => "dimmer as documented + 10 flags at rest",
        }
    }
}

pub const HEADER_ROUTES: &str = r#"              - match:
                  prefix: "/"
                  headers:
                  - name: x-dimmer-version
                    string_match: { exact: v2 }
                route: { cluster: app-v2 }
              - match: { prefix: "/" }
                route: { cluster: app-v1 }"#;

pub const NATIVE_ROUTES: &str = r#"              - match: { prefix: "/" }
                route:
                  hash_policy:
                  - header: { header_name: x-user-id }
                  weighted_clusters:
                    use_hash_policy: true
                    clusters:
                    - { name: app-v1, weight: 90 }
                    - { name: app-v2, weight: 10 }"#;

pub fn wasm_filter(name: &str, wasm: &str, config: &str) -> String {
    format!(
        r#"          - name: {name}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                root_id: {name}
                vm_config:
                  vm_id: {name}
                  runtime: envoy.wasm.runtime.v8
                  code:
                    local: {{ filename: "{wasm}" }}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {config}"#
    )
}

/// The dynamic-module filter; Envoy finds `libdimmer_native.so` through
/// `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` (see [`native_search_path`]).
pub fn native_filter(config: &str) -> String {
    format!(
        r#"          - name: dimmer-native
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {{ name: dimmer_native }}
              filter_name: dimmer
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: {config}"#
    )
}

/// Where a build of `native/` is: `$DIMMER_NATIVE_DIR`, else the release
/// build, else the `ci` one that `make test` makes.
pub fn native_search_path() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("DIMMER_NATIVE_DIR") {
        return dir.into();
    }
    let release = workspace_root().join("target/release");
    if release.join("libdimmer_native.so").exists() {
        return release;
    }
    workspace_root().join("target/ci")
}

/// Lets the Envoys this process starts find the dynamic-module build of the
/// filter: they inherit `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`.
pub fn find_native_module() {
    std::env::set_var("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", native_search_path());
}

/// The `i`-th of the bench's flags: split by the rollout's identity, half
/// of them with a targeting override on one header, weights from 5% to 95%;
/// unless `all_at_rest`, the first is being rolled out (its latency
/// recorded); the others are at rest, as the controller serves them.
fn bench_flag(i: usize, all_at_rest: bool) -> serde_json::Value {
    let on = 500 + 1000 * i as u32;
    let mut f = serde_json::json!({
        "key": format!("flag-{i}"),
        "identity": [{"header": "x-user-id"}],
        "default_variant": "off",
        "variants": [{"name": "off", "weight": 10_000 - on}, {"name": "on", "weight": on}],
    });
    if i > 0 || all_at_rest {
        f["record_latency"] = serde_json::json!(false);
    }
    if i.is_multiple_of(2) {
        f["overrides"] =
            serde_json::json!([{"header": "x-beta-tester", "values": ["yes"], "variant": "on"}]);
    }
    f
}

/// The filter's rollout for `examples/checkout-rollout.yaml` at 10% (the
/// weight the other rows use; it costs nothing a request), compiled by the
/// controller's own code, so the row follows the example as it changes.
fn documented_rollout() -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(workspace_root().join("examples/checkout-rollout.yaml"))?;
    let spec = dimmer_decide::spec::RolloutSpec::from_yaml(&text)?;
    Ok(serde_json::to_value(spec.rollout_at(1000))?)
}

/// An Envoy bootstrap for `v`: `(yaml, listen port, admin port)`.
/// `alternative` is the second filter build of an A/B.
pub fn envoy_yaml(
    v: Variant,
    alternative: Option<&Path>,
    v1: u16,
    v2: u16,
) -> anyhow::Result<(String, u16, u16)> {
    envoy_yaml_with(v, alternative, false, v1, v2)
}

/// The same; with `alternative_flags`, the alternative build runs with the
/// ten flags too, for an A/B of a change to flag evaluation.
pub fn envoy_yaml_with(
    v: Variant,
    alternative: Option<&Path>,
    alternative_flags: bool,
    v1: u16,
    v2: u16,
) -> anyhow::Result<(String, u16, u16)> {
    let root = workspace_root();
    let template = std::fs::read_to_string(root.join("bench/envoy-bench.yaml.tmpl"))?;
    let noop = root.join("target/wasm32-wasip1/release/dimmer_noop_filter.wasm");
    let documented = matches!(
        v,
        Variant::Documented | Variant::DocumentedFlags | Variant::DocumentedFlagsAtRest
    );
    let mut bench_rollout = if documented {
        documented_rollout()?
    } else {
        rollout(1000)
    };
    if !documented && !matches!(v, Variant::DimmerEnvoyHost | Variant::DimmerEnvoyCounts) {
        bench_rollout["match"] = serde_json::json!({"host": HOST});
    }
    if v == Variant::DimmerEnvoyCounts {
        bench_rollout["count"] = serde_json::json!(false);
    }
    let with_flags = matches!(
        v,
        Variant::DimmerFlags | Variant::DocumentedFlags | Variant::DocumentedFlagsAtRest
    ) || (alternative_flags && v == Variant::Alternative);
    let at_rest = v == Variant::DocumentedFlagsAtRest;
    let flags: Vec<serde_json::Value> = if with_flags {
        (0..10).map(|i| bench_flag(i, at_rest)).collect()
    } else {
        Vec::new()
    };
    let dimmer_config =
        serde_json::json!({"rollouts": [bench_rollout], "flags": flags}).to_string();
    let (routes, filters) = match v {
        Variant::NoFilter => (HEADER_ROUTES, String::new()),
        Variant::NoopWasm => (
            HEADER_ROUTES,
            wasm_filter("noop", &noop.display().to_string(), "\"\""),
        ),
        Variant::NativeSplit => (NATIVE_ROUTES, String::new()),
        Variant::Native => (
            HEADER_ROUTES,
            native_filter(&serde_json::to_string(&dimmer_config)?),
        ),
        Variant::Dimmer
        | Variant::Alternative
        | Variant::DimmerEnvoyHost
        | Variant::DimmerFlags
        | Variant::DimmerEnvoyCounts
        | Variant::Documented
        | Variant::DocumentedFlags
        | Variant::DocumentedFlagsAtRest => {
            let wasm = match (alternative, v) {
                (Some(alt), Variant::Alternative) => alt.to_path_buf(),
                _ => filter_wasm()?,
            };
            (
                HEADER_ROUTES,
                wasm_filter(
                    "dimmer",
                    &wasm.display().to_string(),
                    &serde_json::to_string(&dimmer_config)?,
                ),
            )
        }
    };
    let (listen, admin) = (free_port()?, free_port()?);
    let yaml = render(
        &template,
        &[
            ("ADMIN_PORT", admin.to_string()),
            ("LISTEN_PORT", listen.to_string()),
            ("ROUTES", routes.to_string()),
            ("HTTP_FILTERS", filters),
            ("V1_PORT", v1.to_string()),
            ("V2_PORT", v2.to_string()),
        ],
    )?;
    Ok((yaml, listen, admin))
}
