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
    /// Only these variants (by index: 0 no filter, 1 no-op, 2 native, 3
    /// dimmer as documented, 4 dimmer counting, 5 host matched by Envoy);
    /// the no-op floor is always run, as every ratio is to it.
    #[arg(long, value_delimiter = ',')]
    only: Vec<usize>,
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

/// The first second of each run is left out of the figures: oha opens its
/// 64 connections then, and with latency correction the requests it meant
/// to send meanwhile count their wait, which lets oha's start-up into the
/// p99 of a short run.
const SETTLE_S: f64 = 1.0;

fn oha(envoy: &Envoy, rate: f64, seconds: u64) -> anyhow::Result<Latency> {
    let db = tempfile::Builder::new().suffix(".db").tempfile()?;
    let out = Command::new("oha")
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "--latency-correction",
        ])
        .args(["-z", &format!("{}s", seconds + SETTLE_S as u64)])
        .args(["-q", &format!("{rate:.0}")])
        .args(["-c", "64"])
        .args(["-H", "x-user-id: user-1234", "-H", &format!("host: {HOST}")])
        .arg("--db-url")
        .arg(db.path())
        .arg(envoy.url("/"))
        .output()
        .context("running oha (make bench-latency installs it)")?;
    if !out.status.success() {
        bail!("oha failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The records hold answered requests only: a request that failed must
    // fail the run, not drop out of the percentiles. Those cut off by the
    // run's end are no failure.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
    if let Some(errors) = v["errorDistribution"].as_object() {
        let failed: Vec<_> = errors
            .iter()
            .filter(|(e, _)| !e.contains("deadline"))
            .collect();
        if !failed.is_empty() {
            bail!("requests failed under load: {failed:?}");
        }
    }
    steady_latency(db.path())
}

/// p50, p99, p99.9 of the requests oha meant to send after [`SETTLE_S`],
/// each timed from when it should have been sent; every one must have
/// been answered 200.
fn steady_latency(db: &std::path::Path) -> anyhow::Result<Latency> {
    let conn = rusqlite::Connection::open(db)?;
    let mut stmt = conn.prepare(
        "SELECT duration, status FROM oha WHERE COALESCE(start_latency_correction, start) >= ?1",
    )?;
    let mut ms = Vec::new();
    let mut failed = 0usize;
    for row in stmt.query_map([SETTLE_S], |r| {
        Ok((r.get::<_, f64>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (duration, status) = row?;
        if status != 200 {
            failed += 1;
        }
        ms.push(duration * 1000.0);
    }
    if ms.is_empty() || failed > 0 {
        bail!(
            "{} requests recorded after the first second, {failed} not answered 200",
            ms.len()
        );
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    Ok([at(0.50), at(0.99), at(0.999)])
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
    let chosen: Vec<usize> = (0..MEASURED.len())
        .filter(|&i| args.only.is_empty() || args.only.contains(&i) || i == NOOP)
        .collect();
    // Every variant's Envoy runs for the whole bench (idle while another is
    // loaded), so rounds can be short and many: a slow moment of the
    // machine then lands in one round of one variant, and each variant is
    // compared with the no-op floor of its own round.
    let mut envoys = Vec::new();
    for &i in &chosen {
        let envoy = start(MEASURED[i]).await?;
        // Warm up: connections, V8 tiering, stats.
        oha(&envoy, cap * 0.2, 2)?;
        envoys.push(envoy);
    }
    // results[variant][share] = p50/p99/p99.9 per round
    let mut results: Vec<Vec<Vec<Latency>>> =
        vec![vec![Vec::new(); args.shares.len()]; MEASURED.len()];
    for round in 0..args.rounds {
        for k in 0..chosen.len() {
            let at = (round + k) % chosen.len();
            let (i, envoy) = (chosen[at], &envoys[at]);
            let v = MEASURED[i];
            for (j, share) in args.shares.iter().enumerate() {
                let rate = cap * share / 100.0;
                let l = oha(envoy, rate, args.seconds)?;
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
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    drop(envoys);
    println!(
        "\nEnvoy 1.40, 1 worker pinned to its own core; bare capacity {cap:.0} requests/s (wrk -c32); \
         every variant's Envoy started once, then loaded in turn; \
         open-loop `oha -q RATE -c 64 -z {}s --latency-correction`, the first {SETTLE_S} s of each run left out, {} rounds, medians; ms\n",
        args.seconds + SETTLE_S as u64, args.rounds
    );
    let mut head = String::from("| variant |");
    let mut rule = String::from("|---|");
    for s in &args.shares {
        head.push_str(&format!(" {s}%: p50 / p99 / p99.9 | p99 vs no-op |"));
        rule.push_str("---|---:|");
    }
    println!("{head}\n{rule}");
    let med = |i: usize, j: usize, q: usize| median(results[i][j].iter().map(|l| l[q]).collect());
    for &i in &chosen {
        let v = MEASURED[i];
        let mut row = format!("| {} |", v.name());
        for j in 0..args.shares.len() {
            row.push_str(&format!(
                " {:.2} / {:.2} / {:.2} | {:.2} |",
                med(i, j, 0),
                med(i, j, 1),
                med(i, j, 2),
                med(i, j, 1) / med(NOOP, j, 1)
            ));
        }
        println!("{row}");
    }
    println!(
        "\np99 against the no-op floor's in the same round: the median of the rounds' ratios, \
         a 95% bootstrap interval of that median, and the rounds within {BOUND}x\n"
    );
    println!("| variant | share | median ratio | 95% interval | rounds within {BOUND}x |\n|---|---:|---:|---|---:|");
    let mut rng = fastrand::Rng::with_seed(28);
    for &i in chosen.iter().filter(|&&i| i != NOOP) {
        for (j, share) in args.shares.iter().enumerate() {
            let ratios = paired_ratios(&results[i][j], &results[NOOP][j]);
            let (lo, hi) = bootstrap_median(&ratios, &mut rng);
            println!(
                "| {} | {share}% | {:.2} | {lo:.2}-{hi:.2} | {} of {} |",
                MEASURED[i].name(),
                median(ratios.clone()),
                ratios.iter().filter(|&&r| r <= BOUND).count(),
                ratios.len()
            );
        }
    }
    Ok(())
}

/// The p99 ratio to the no-op floor's that the filter is held to (issue 28).
const BOUND: f64 = 1.3;

/// Where the no-op floor sits in [`MEASURED`].
const NOOP: usize = 1;

/// Each round's p99 over the no-op floor's p99 of the same round.
fn paired_ratios(variant: &[Latency], floor: &[Latency]) -> Vec<f64> {
    variant
        .iter()
        .zip(floor)
        .map(|(v, f)| v[1] / f[1])
        .filter(|r| r.is_finite())
        .collect()
}

/// A 95% percentile-bootstrap interval of the median of `xs`.
fn bootstrap_median(xs: &[f64], rng: &mut fastrand::Rng) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut medians: Vec<f64> = (0..2000)
        .map(|_| median((0..xs.len()).map(|_| xs[rng.usize(..xs.len())]).collect()))
        .collect();
    medians.sort_by(|a, b| a.total_cmp(b));
    (medians[50], medians[1949])
}
