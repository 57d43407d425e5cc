//! `make bench`: Envoy's CPU per request with no filter, a no-op wasm filter,
//! Envoy's native sticky split, and Dimmer, side by side in one run, under
//! load from many distinct identities. See bench/README.md.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use dimmer_e2e::bench::{envoy_yaml, Variant, HOST, VARIANTS};
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
    /// Run only these variants (by index: 0 none, 1 no-op, 2 native, 3 dimmer, 4 alternative, 5 dimmer with the host matched by Envoy, 6 dimmer as a dynamic module).
    #[arg(long, value_delimiter = ',')]
    only: Vec<usize>,
    /// A second build of the filter to measure beside the first (A/B).
    #[arg(long)]
    alternative: Option<PathBuf>,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
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
    let (yaml, listen, admin) = envoy_yaml(v, args.alternative.as_deref(), v1, v2)?;
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
    // reqwest is built without a default TLS provider: one for the process.
    dimmer::tls::install_provider();
    let args = Args::parse();
    dimmer_e2e::bench::find_native_module();
    let v1 = Upstream::start("v1").await?;
    let v2 = Upstream::start("v2").await?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("users.lua");
    // A distinct identity on every request: the filter hashes each one afresh.
    std::fs::write(
        &script,
        format!("local n = 0\nrequest = function()\n  n = n + 1\n  return wrk.format(nil, nil, {{[\"x-user-id\"] = \"user-\" .. n, [\"host\"] = \"{HOST}\"}})\nend\n"),
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
