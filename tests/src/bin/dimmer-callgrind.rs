//! `make bench-instructions`: instructions per request of the Envoy under
//! test, counted by callgrind, for each variant of `make bench` in one run.
//! Instruction counts repeat to about 0.1% where wall-clock CPU on this
//! machine swings ±15%, so every performance decision on the filter is
//! taken on these.
//!
//! Per variant: Envoy (the real binary, one worker) runs under
//! `valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes`;
//! after a warm-up (V8's optimising compiler done), instrumentation is
//! switched on and zeroed, exactly N requests with distinct identities are
//! sent, and the counters are dumped; the worker thread's total over N is
//! the figure. An idle window of the same length, measured the same way,
//! is what timers cost, and is subtracted.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use dimmer_e2e::bench::{envoy_yaml_with, Variant, HOST, VARIANTS};
use dimmer_e2e::paths::real_envoy_binary;
use dimmer_e2e::{Envoy, Upstream};

#[derive(Parser)]
struct Args {
    /// Measured requests per variant.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Warm-up requests before counting.
    #[arg(long, default_value_t = 1000)]
    warmup: usize,
    /// Only these variants (by index: 0 none, 1 no-op, 2 native, 3 dimmer, 4 alternative, 5 dimmer with the host matched by Envoy, 6 dimmer as a dynamic module, 7 dimmer + 10 flags, 8 dimmer with host and counts by Envoy, 9 dimmer as documented in examples/checkout-rollout.yaml, 10 the same + 10 flags, one being rolled out, 11 the same ten flags all at rest).
    #[arg(long, value_delimiter = ',')]
    only: Vec<usize>,
    /// A second build of the filter to count beside the first (A/B).
    #[arg(long)]
    alternative: Option<PathBuf>,
    /// Run the alternative build with the ten flags of `dimmer + 10 flags`.
    #[arg(long, requires = "alternative")]
    alternative_flags: bool,
    /// Concurrent connections sending the requests.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Send what a browser sends besides: user-agent, accept headers and a
    /// 600-byte cookie (12 more headers).
    #[arg(long)]
    browser_headers: bool,
    /// Keep each variant's callgrind dumps in DIR/<variant>/ (e.g. DIR/NoopWasm; `bench/callgrind-split.py` reads them), for
    /// `callgrind_annotate` (where the instructions go, function by function).
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// What a browser request carries besides the identity.
const BROWSER_HEADERS: [(&str, &str); 12] = [
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
    ("accept-language", "en-GB,en;q=0.9,de;q=0.8"),
    ("accept-encoding", "gzip, deflate, br"),
    ("referer", "https://app.example/catalogue/shoes?page=2"),
    ("sec-fetch-dest", "document"),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-site", "same-origin"),
    ("upgrade-insecure-requests", "1"),
    ("x-request-id", "9b2f1c1e-6f7a-4d0b-9a55-2c8f0e1d3b7a"),
    ("x-forwarded-for", "203.0.113.7"),
    ("cookie", "_ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; consent=analytics%3Dtrue%26ads%3Dfalse; cart=eyJpdGVtcyI6W3siaWQiOjEyMywicXR5IjoyfSx7ImlkIjo0NTYsInF0eSI6MX1dfQ; theme=dark; locale=en-GB; ab_checkout=b; recently_viewed=123%2C456%2C789%2C1011%2C1213; csrftoken=Zk9mQ2x1b0RkQ3VzdG9tZXJTZXNzaW9uVG9rZW5IZXJl; _hjSessionUser=eyJpZCI6IjEyMzQ1Njc4OTAiLCJjcmVhdGVkIjoxNzAwMDAwMDAwfQ"),
];

/// Sends `n` requests, `user-{offset + i}` each, over `conns` keep-alive
/// connections; returns how long it took.
async fn send(
    url: &str,
    n: usize,
    offset: usize,
    conns: usize,
    browser: bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()?;
            let mut i = c;
            while i < n {
                let mut req = http
                    .get(&url)
                    .header("host", HOST)
                    .header("x-user-id", format!("user-{}", offset + i));
                if browser {
                    for (k, v) in BROWSER_HEADERS {
                        req = req.header(k, v);
                    }
                }
                let r = req.send().await?;
                ensure!(r.status().is_success(), "status {}", r.status());
                r.bytes().await?;
                i += conns;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed())
}

fn control(pid: u32, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .context("running callgrind_control (make setup-bench installs valgrind)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It exits 0 even when it found no process to talk to.
    ensure!(
        out.status.success() && !text.contains("Error") && !text.contains("No active"),
        "callgrind_control {args:?} {pid}: {text}"
    );
    Ok(text)
}

/// The per-thread dump files written for dump number `dump`, and the
/// largest total among them (the worker thread's: it served the requests).
fn worker_total(dir: &Path, pid: u32, dump: u32) -> anyhow::Result<u64> {
    let prefix = format!("cg.out.{pid}.{dump}-");
    let mut best = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.starts_with(&prefix) {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let total = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            })
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        best = Some(best.map_or(total, |b: u64| b.max(total)));
    }
    best.with_context(|| format!("no dump files {prefix}* in {}", dir.display()))
}

/// Waits until a dump's files exist (callgrind_control returns first).
async fn wait_dump(dir: &Path, pid: u32, dump: u32) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(t) = worker_total(dir, pid, dump) {
            // The files are written whole before the next request is served,
            // but give the writer a moment to close them.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return worker_total(dir, pid, dump).or(Ok(t));
        }
        if Instant::now() > deadline {
            bail!("dump {dump} of {pid} never appeared in {}", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Count {
    per_request: f64,
    idle_per_request: f64,
}

async fn count(v: Variant, a: &Args, v1: u16, v2: u16) -> anyhow::Result<Count> {
    let (yaml, listen, admin) =
        envoy_yaml_with(v, a.alternative.as_deref(), a.alternative_flags, v1, v2)?;
    let out_dir = tempfile::tempdir()?;
    let wrapper: Vec<OsString> = vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--instr-atstart=no".into(),
        "--separate-threads=yes".into(),
        format!(
            "--callgrind-out-file={}/cg.out.%p",
            out_dir.path().display()
        )
        .into(),
    ];
    let envoy = Envoy::start_under(
        &wrapper,
        &real_envoy_binary()?,
        &yaml,
        1,
        listen,
        admin,
        Duration::from_secs(300),
    )
    .await?;
    let pid = envoy.pid();
    let url = envoy.url("/");
    send(&url, a.warmup, 0, a.connections, a.browser_headers).await?;
    control(pid, &["--instr=on"])?;
    control(pid, &["--zero"])?;
    let took = send(&url, a.requests, a.warmup, a.connections, a.browser_headers).await?;
    control(pid, &["--dump"])?;
    let busy = wait_dump(out_dir.path(), pid, 1).await?;
    // The same span with no requests: what timers and housekeeping cost.
    control(pid, &["--zero"])?;
    tokio::time::sleep(took).await;
    control(pid, &["--dump"])?;
    let idle = wait_dump(out_dir.path(), pid, 2).await?;
    drop(envoy);
    if let Some(keep) = &a.keep {
        let to = keep.join(format!("{v:?}"));
        std::fs::create_dir_all(&to)?;
        for entry in std::fs::read_dir(out_dir.path())? {
            let from = entry?.path();
            if let Some(name) = from.file_name() {
                std::fs::copy(&from, to.join(name))?;
            }
        }
    }
    let n = a.requests as f64;
    Ok(Count {
        per_request: (busy as f64 - idle as f64) / n,
        idle_per_request: idle as f64 / n,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider: one for the process.
    dimmer::tls::install_provider();
    let a = Args::parse();
    dimmer_e2e::bench::find_native_module();
    let v1 = Upstream::start("v1").await?;
    let v2 = Upstream::start("v2").await?;
    let mut rows: Vec<(Variant, Count)> = Vec::new();
    for (i, v) in VARIANTS.iter().enumerate() {
        let skip_alt = *v == Variant::Alternative && a.alternative.is_none();
        if skip_alt || (!a.only.is_empty() && !a.only.contains(&i)) {
            continue;
        }
        let c = count(*v, &a, v1.port, v2.port).await?;
        eprintln!(
            "{:<32} {:>9.0} instructions/request (idle {:.0} subtracted)",
            v.name(),
            c.per_request,
            c.idle_per_request
        );
        rows.push((*v, c));
    }
    let of = |v: Variant| {
        rows.iter()
            .find(|(x, _)| *x == v)
            .map(|(_, c)| c.per_request)
    };
    let ratio =
        |x: f64, base: Option<f64>| base.map_or("–".to_string(), |b| format!("{:.3}", x / b));
    println!(
        "\nEnvoy 1.40 under callgrind, 1 worker, {} requests after {} warm-up, a distinct x-user-id each, host {HOST}{}; the worker thread's instructions, idle subtracted\n",
        a.requests,
        a.warmup,
        if a.browser_headers { ", with a browser's 12 other headers" } else { "" }
    );
    println!("| variant | instructions/request | vs no filter | vs no-op wasm | vs native split |");
    println!("|---|---:|---:|---:|---:|");
    for (v, c) in &rows {
        println!(
            "| {} | {:.1}k | {} | {} | {} |",
            v.name(),
            c.per_request / 1000.0,
            ratio(c.per_request, of(Variant::NoFilter)),
            ratio(c.per_request, of(Variant::NoopWasm)),
            ratio(c.per_request, of(Variant::NativeSplit)),
        );
    }
    Ok(())
}
