//! `make bench-latency`: Envoy's latency under open-loop load, with no
//! filter, a no-op wasm filter, Envoy's native sticky split, and Dimmer
//! (its documented default, and the lean placement), side by side in one
//! run. Closed-loop tools (wrk) wait for each answer before sending the
//! next, so a slow moment sends fewer requests and hides itself; `oha -q`
//! sends at a fixed rate and `--latency-correction` counts the time a
//! request should have been sent. Rates are shares of the bare Envoy's
//! measured capacity, where queueing starts to show: light rates show
//! nothing (every variant's p99 is ~1 ms).

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use dimmer_e2e::bench::{envoy_yaml, Variant, HOST};
use dimmer_e2e::stats::sample;
use dimmer_e2e::{Envoy, Upstream};

#[derive(Parser)]
struct Args {
    /// Seconds of open-loop load per variant and rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Shares of the bare Envoy's capacity to load at, in percent.
    #[arg(long, value_delimiter = ',', default_value = "35,45,60")]
    shares: Vec<f64>,
    /// Rounds; each runs every variant at every rate, in rotated order.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

const MEASURED: [Variant; 6] = [
    Variant::NoFilter,
    Variant::NoopWasm,
    Variant::NativeSplit,
    Variant::Documented,
    Variant::Dimmer,
    Variant::DimmerEnvoyHost,
];

/// p50, p99, p99.9 in milliseconds.
type Latency = [f64; 3];

fn oha(envoy: &Envoy, rate: f64, seconds: u64) -> anyhow::Result<Latency> {
    let out = Command::new("oha")
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "--latency-correction",
        ])
        .args(["-z", &format!("{seconds}s"), "-q", &format!("{rate:.0}")])
        .args(["-c", "64"])
        .args(["-H", "x-user-id: user-1234", "-H", &format!("host: {HOST}")])
        .arg(envoy.url("/"))
        .output()
        .context("running oha (make bench-latency installs it)")?;
    if !out.status.success() {
        bail!("oha failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
    let p = &v["latencyPercentiles"];
    let ms = |k: &str| p[k].as_f64().unwrap_or(f64::NAN) * 1000.0;
    let ok = v["statusCodeDistribution"]["200"].as_f64().unwrap_or(0.0);
    if ok <= 0.0 {
        bail!("no request answered 200: {v}");
    }
    Ok([ms("p50"), ms("p99"), ms("p99.9")])
}

/// Closed-loop capacity of the bare Envoy, in requests per second.
async fn capacity(envoy: &Envoy, seconds: u64) -> anyhow::Result<f64> {
    let before = served(envoy).await?;
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{seconds}s")])
        .args(["-H", "x-user-id: user-1234", "-H", &format!("host: {HOST}")])
        .arg(envoy.url("/"))
        .output()
        .context("running wrk (make setup-bench installs it)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((served(envoy).await? - before) / seconds as f64)
}

async fn served(envoy: &Envoy) -> anyhow::Result<f64> {
    let text = envoy.prometheus().await?;
    Ok(sample(
        &text,
        "envoy_http_downstream_rq_xx",
        &[
            ("envoy_response_code_class", "2"),
            ("envoy_http_conn_manager_prefix", "ingress"),
        ],
    ))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider: one for the process.
    dimmer::tls::install_provider();
    let args = Args::parse();
    let v1 = Upstream::start("v1").await?;
    let v2 = Upstream::start("v2").await?;
    let start = |v: Variant| {
        let (p1, p2) = (v1.port, v2.port);
        async move {
            let (yaml, listen, admin) = envoy_yaml(v, None::<&std::path::Path>, p1, p2)?;
            Envoy::start_with_yaml(&yaml, 1, listen, admin).await
        }
    };
    let bare = start(Variant::NoFilter).await?;
    capacity(&bare, 2).await?;
    let cap = median(vec![
        capacity(&bare, 5).await?,
        capacity(&bare, 5).await?,
        capacity(&bare, 5).await?,
    ]);
    drop(bare);
    eprintln!("bare Envoy capacity: {cap:.0} requests/s (wrk -c32, median of 3)");
    // results[variant][share] = p50/p99/p99.9 per round
    let mut results: Vec<Vec<Vec<Latency>>> =
        vec![vec![Vec::new(); args.shares.len()]; MEASURED.len()];
    for round in 0..args.rounds {
        for k in 0..MEASURED.len() {
            let i = (round + k) % MEASURED.len();
            let v = MEASURED[i];
            let envoy = start(v).await?;
            // Warm up: connections, V8 tiering, stats.
            oha(&envoy, cap * 0.2, 2)?;
            for (j, share) in args.shares.iter().enumerate() {
                let rate = cap * share / 100.0;
                let l = oha(&envoy, rate, args.seconds)?;
                eprintln!(
                    "round {} {:<32} {:>3}% ({rate:>6.0}/s): p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
                    round + 1,
                    v.name(),
                    share,
                    l[0],
                    l[1],
                    l[2]
                );
                results[i][j].push(l);
            }
            drop(envoy);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    println!(
        "\nEnvoy 1.40, 1 worker pinned to its own core; bare capacity {cap:.0} requests/s (wrk -c32); \
         open-loop `oha -q RATE -c 64 -z {}s --latency-correction`, {} rounds, medians; ms\n",
        args.seconds, args.rounds
    );
    let mut head = String::from("| variant |");
    let mut rule = String::from("|---|");
    for s in &args.shares {
        head.push_str(&format!(" {s}%: p50 / p99 / p99.9 | p99 vs no-op |"));
        rule.push_str("---|---:|");
    }
    println!("{head}\n{rule}");
    let med = |i: usize, j: usize, q: usize| median(results[i][j].iter().map(|l| l[q]).collect());
    for (i, v) in MEASURED.iter().enumerate() {
        let mut row = format!("| {} |", v.name());
        for j in 0..args.shares.len() {
            row.push_str(&format!(
                " {:.2} / {:.2} / {:.2} | {:.2} |",
                med(i, j, 0),
                med(i, j, 1),
                med(i, j, 2),
                med(i, j, 1) / med(1, j, 1)
            ));
        }
        println!("{row}");
    }
    Ok(())
}
