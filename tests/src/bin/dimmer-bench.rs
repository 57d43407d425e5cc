//! `make bench`: Envoy's CPU per request with no filter, a no-op wasm filter,
//! Envoy's native sticky split, and Dimmer, side by side in one run, under
//! load from many distinct identities. See bench/README.md.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use dimmer_e2e::envoy::render;
use dimmer_e2e::fixtures::rollout;
use dimmer_e2e::paths::{filter_wasm, workspace_root};
use dimmer_e2e::ports::free_port;
use dimmer_e2e::stats::sample;
use dimmer_e2e::{Envoy, Upstream};

#[derive(Parser)]
struct Args {
    /// Rounds; each runs every variant once, in rotated order.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of measured load per variant and round.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Run only these variants (by index: 0 none, 1 no-op, 2 native, 3 dimmer).
    #[arg(long, value_delimiter = ',')]
    only: Vec<usize>,
    /// A second build of the filter to measure beside the first (A/B).
    #[arg(long)]
    alternative: Option<PathBuf>,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    NoFilter,
    NoopWasm,
    NativeSplit,
    Dimmer,
    /// Another build of the filter, for A/B comparisons of a change.
    Alternative,
}

const VARIANTS: [Variant; 5] = [
    Variant::NoFilter,
    Variant::NoopWasm,
    Variant::NativeSplit,
    Variant::Dimmer,
    Variant::Alternative,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::NoFilter => "no filter",
            Variant::NoopWasm => "no-op wasm filter",
            Variant::NativeSplit => "native weighted_clusters + hash",
            Variant::Dimmer => "dimmer",
            Variant::Alternative => "dimmer (--alternative build)",
        }
    }
}

const HEADER_ROUTES: &str = r#"              - match:
                  prefix: "/"
                  headers:
                  - name: x-dimmer-version
                    string_match: { exact: v2 }
                route: { cluster: app-v2 }
              - match: { prefix: "/" }
                route: { cluster: app-v1 }"#;

const NATIVE_ROUTES: &str = r#"              - match: { prefix: "/" }
                route:
                  hash_policy:
                  - header: { header_name: x-user-id }
                  weighted_clusters:
                    use_hash_policy: true
                    clusters:
                    - { name: app-v1, weight: 90 }
                    - { name: app-v2, weight: 10 }"#;

fn wasm_filter(name: &str, wasm: &str, config: &str) -> String {
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

struct Sample {
    cpu_us_per_rq: f64,
    rps: f64,
}

async fn run_variant(
    v: Variant,
    args: &Args,
    v1: u16,
    v2: u16,
    script: &PathBuf,
) -> anyhow::Result<Sample> {
    let root = workspace_root();
    let template = std::fs::read_to_string(root.join("bench/envoy-bench.yaml.tmpl"))?;
    let noop = root.join("target/wasm32-wasip1/release/dimmer_noop_filter.wasm");
    let dimmer_config = serde_json::json!({"rollouts": [rollout(1000)]}).to_string();
    let (routes, filters) = match v {
        Variant::NoFilter => (HEADER_ROUTES, String::new()),
        Variant::NoopWasm => (
            HEADER_ROUTES,
            wasm_filter("noop", &noop.display().to_string(), "\"\""),
        ),
        Variant::NativeSplit => (NATIVE_ROUTES, String::new()),
        Variant::Dimmer | Variant::Alternative => {
            let wasm = match (&args.alternative, v) {
                (Some(alt), Variant::Alternative) => alt.clone(),
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
    let envoy = Envoy::start_with_yaml(&yaml, 1, listen, admin).await?;
    // Warm up: connections, V8 tiering, stat creation.
    wrk(&envoy, script, 2, args.connections)?;
    let rq_before = requests(&envoy).await?;
    let cpu_before = cpu_ticks(envoy.pid())?;
    wrk(&envoy, script, args.seconds, args.connections)?;
    let cpu_after = cpu_ticks(envoy.pid())?;
    let rq = requests(&envoy).await? - rq_before;
    if rq <= 0.0 {
        bail!("{}: no requests served", v.name());
    }
    let cpu_s = (cpu_after - cpu_before) as f64 / clock_ticks()?;
    Ok(Sample {
        cpu_us_per_rq: cpu_s * 1e6 / rq,
        rps: rq / args.seconds as f64,
    })
}

async fn requests(envoy: &Envoy) -> anyhow::Result<f64> {
    let text = envoy.prometheus().await?;
    let ok = sample(
        &text,
        "envoy_http_downstream_rq_xx",
        &[
            ("envoy_response_code_class", "2"),
            ("envoy_http_conn_manager_prefix", "ingress"),
        ],
    );
    Ok(ok)
}

fn wrk(envoy: &Envoy, script: &PathBuf, seconds: u64, connections: u32) -> anyhow::Result<()> {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .arg("-s")
        .arg(script)
        .arg(envoy.url("/"))
        .output()
        .context("running wrk (make setup-bench installs it)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

fn clock_ticks() -> anyhow::Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let v1 = Upstream::start("v1").await?;
    let v2 = Upstream::start("v2").await?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("users.lua");
    // A distinct identity on every request: the filter hashes each one afresh.
    std::fs::write(
        &script,
        "local n = 0\nrequest = function()\n  n = n + 1\n  return wrk.format(nil, nil, {[\"x-user-id\"] = \"user-\" .. n})\nend\n",
    )?;
    // rounds[round][variant]
    let mut rounds: Vec<Vec<Option<Sample>>> = Vec::new();
    for round in 0..args.rounds {
        let mut row: Vec<Option<Sample>> = VARIANTS.iter().map(|_| None).collect();
        for k in 0..VARIANTS.len() {
            let i = (round + k) % VARIANTS.len();
            let skip_alt = VARIANTS[i] == Variant::Alternative && args.alternative.is_none();
            if skip_alt || (!args.only.is_empty() && !args.only.contains(&i)) {
                continue;
            }
            let s = run_variant(VARIANTS[i], &args, v1.port, v2.port, &script).await?;
            eprintln!(
                "round {} {:<32} {:>7.2} µs CPU/request  {:>8.0} req/s",
                round + 1,
                VARIANTS[i].name(),
                s.cpu_us_per_rq,
                s.rps
            );
            row[i] = Some(s);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        rounds.push(row);
    }
    // Ratios are taken within each round, then the median over rounds: the
    // machine's speed drifts between rounds far more than within one.
    let ratio = |i: usize, base: usize| {
        median(
            rounds
                .iter()
                .filter_map(|row| {
                    let (a, b) = (row[i].as_ref()?, row[base].as_ref()?);
                    Some(a.cpu_us_per_rq / b.cpu_us_per_rq)
                })
                .collect(),
        )
    };
    let shown = |x: f64| {
        if x.is_nan() {
            "–".to_string()
        } else {
            format!("{x:.3}")
        }
    };
    println!(
        "\nEnvoy 1.40, 1 worker pinned to its own core, wrk -t1 -c{} -d{}s, a distinct x-user-id per request, {} rounds; medians\n",
        args.connections, args.seconds, args.rounds
    );
    println!("| variant | CPU µs/request | vs no filter | vs no-op wasm | req/s |");
    println!("|---|---:|---:|---:|---:|");
    for (i, v) in VARIANTS.iter().enumerate() {
        let runs: Vec<&Sample> = rounds.iter().filter_map(|row| row[i].as_ref()).collect();
        if runs.is_empty() {
            continue;
        }
        println!(
            "| {} | {:.2} | {} | {} | {:.0} |",
            v.name(),
            median(runs.iter().map(|s| s.cpu_us_per_rq).collect()),
            shown(ratio(i, 0)),
            shown(ratio(i, 1)),
            median(runs.iter().map(|s| s.rps).collect()),
        );
    }
    Ok(())
}
