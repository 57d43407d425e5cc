//! `make bench-polls`: what `GET /v1/config` costs the controller, for the
//! capacity model in docs/operations.md. The real binary (release build),
//! polled over loopback by many simulated proxies, each with an id of its
//! own: the registry's memory for `--proxies` of them, then polls a second
//! and the controller's CPU per poll on the 304 path (the proxy has the
//! current revision) and on the 200 path (it fetches the document).
//! Client and controller share this machine's cores, so polls a second are
//! a floor; the controller's CPU per poll is read from /proc and is what
//! scales. With `--tls`, the same over HTTPS in the same run (a test CA
//! made by `rcgen`), plus polls that each open a new TLS connection (a
//! full handshake each: the cost of every proxy reconnecting at once).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use dimmer_e2e::controller::{Controller, MetricsFrom, ENVOY_TOKEN, OPERATOR_TOKEN};
use dimmer_e2e::tls::TestCerts;

#[derive(Parser)]
struct Args {
    /// Distinct proxies that poll.
    #[arg(long, default_value_t = 10_000)]
    proxies: usize,
    /// Seconds of polling per path.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Polls in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Rollouts in the served document.
    #[arg(long, default_value_t = 10)]
    rollouts: usize,
    /// Also over TLS, side by side.
    #[arg(long)]
    tls: bool,
}

/// The controller's CPU seconds so far (user + system), from /proc.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), in clock ticks of 1/100 s.
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn rss_kib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?)
}

struct Run {
    polls: u64,
    cpu_s: f64,
    wall_s: f64,
}

async fn hammer(
    url: &str,
    a: &Args,
    pid: u32,
    etag: Option<String>,
    revision: u64,
    client: reqwest::ClientBuilder,
) -> anyhow::Result<Run> {
    let http = client.build()?;
    let polls = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..a.concurrency {
        let (http, url, etag) = (http.clone(), url.to_owned(), etag.clone());
        let (polls, proxies) = (Arc::clone(&polls), a.proxies);
        tasks.spawn(async move {
            let mut i = worker;
            while Instant::now() < deadline {
                let mut req = http
                    .get(&url)
                    .bearer_auth(ENVOY_TOKEN)
                    .header("x-dimmer-proxy-id", format!("proxy-{}", i % proxies))
                    .header("x-dimmer-revision", revision.to_string());
                if let Some(e) = &etag {
                    req = req.header("if-none-match", e);
                }
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                resp.bytes().await?;
                anyhow::ensure!(status == 200 || status == 304, "poll answered {status}");
                polls.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(Run {
        polls: polls.load(Ordering::Relaxed),
        cpu_s: cpu_seconds(pid)? - cpu0,
        wall_s: t0.elapsed().as_secs_f64(),
    })
}

/// What one controller (plain or TLS) served.
struct Measured {
    not_modified: Run,
    full: Run,
    /// 304s, each on a new connection (a TLS handshake each).
    reconnecting: Option<Run>,
    doc_bytes: usize,
    known: usize,
    rss0: f64,
    rss1: f64,
}

async fn measure(a: &Args, certs: Option<&TestCerts>) -> anyhow::Result<Measured> {
    let limit = (a.proxies + 1000).to_string();
    // No metrics source answers: the rollouts hold, the document stays put.
    let extra = ["--max-proxies", limit.as_str()];
    let c = match certs {
        None => Controller::start(MetricsFrom::EnvoyAdmin(1), &extra).await?,
        Some(certs) => Controller::start_tls(MetricsFrom::EnvoyAdmin(1), certs, &extra).await?,
    };
    let client = || dimmer::tls::http_client(certs.map(|c| c.ca.as_path()));
    let pid = c.pid().context("no controller pid")?;
    let http = client()?.build()?;
    for r in 0..a.rollouts {
        let spec = format!(
            "name: app-{r}\nidentity: [{{header: x-user-id}}]\nstable: v1\ncanary: v2\n\
             overrides: [{{header: x-tenant, values: [internal], version: v2}}]\n\
             steps: [{{percent: 1}}, {{percent: 10}}, {{percent: 100}}]\n"
        );
        let resp = http
            .post(format!("{}/v1/rollouts", c.url()))
            .bearer_auth(OPERATOR_TOKEN)
            .body(spec)
            .send()
            .await?;
        ensure!(resp.status().is_success(), "apply: {}", resp.status());
    }
    let url = format!("{}/v1/config", c.url());
    let first = http.get(&url).bearer_auth(ENVOY_TOKEN).send().await?;
    let etag = first
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .context("no etag")?;
    let doc: serde_json::Value = first.json().await?;
    let revision = doc["revision"].as_u64().unwrap_or(0);
    let doc_bytes = serde_json::to_vec(&doc)?.len();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = rss_kib(pid)?;
    // Every proxy polls once, so the registry holds them all.
    let register = async {
        let mut set = tokio::task::JoinSet::new();
        for chunk in 0..a.concurrency {
            let (http, url, etag) = (http.clone(), url.clone(), etag.clone());
            let (n, k) = (a.proxies, a.concurrency);
            set.spawn(async move {
                for i in (chunk..n).step_by(k) {
                    http.get(&url)
                        .bearer_auth(ENVOY_TOKEN)
                        .header("x-dimmer-proxy-id", format!("proxy-{i}"))
                        .header("x-dimmer-revision", revision.to_string())
                        .header("if-none-match", &etag)
                        .send()
                        .await?;
                }
                Ok::<_, anyhow::Error>(())
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        Ok::<_, anyhow::Error>(())
    };
    register.await?;
    let proxies: serde_json::Value = http
        .get(format!("{}/v1/proxies", c.url()))
        .bearer_auth(dimmer_e2e::controller::VIEWER_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let known = proxies.as_array().map_or(0, Vec::len);
    let rss1 = rss_kib(pid)?;

    let pooled = || anyhow::Ok(client()?.pool_max_idle_per_host(a.concurrency));
    let not_modified = hammer(&url, a, pid, Some(etag.clone()), revision, pooled()?).await?;
    let full = hammer(&url, a, pid, None, revision, pooled()?).await?;
    let reconnecting = match certs {
        None => None,
        Some(_) => Some(
            hammer(
                &url,
                a,
                pid,
                Some(etag),
                revision,
                client()?.pool_max_idle_per_host(0),
            )
            .await?,
        ),
    };
    Ok(Measured {
        not_modified,
        full,
        reconnecting,
        doc_bytes,
        known,
        rss0,
        rss1,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider: one for the process.
    dimmer::tls::install_provider();
    let a = Args::parse();
    let plain = measure(&a, None).await?;
    let dir = tempfile::tempdir()?;
    let tls = match a.tls {
        false => None,
        true => Some(measure(&a, Some(&TestCerts::new(dir.path())?)).await?),
    };
    println!(
        "GET /v1/config on this machine's 2 cores (client and controller share them), {} rollouts in the document ({} bytes), {} concurrent polls, {} s per path\n",
        a.rollouts, plain.doc_bytes, a.concurrency, a.seconds
    );
    println!("| path | polls/s | controller CPU per poll | one core's polls/s | CPU for 10,000 proxies polling once a second |");
    println!("|---|---:|---:|---:|---:|");
    let mut rows = vec![
        ("304 (unchanged)", &plain.not_modified),
        ("200 (document)", &plain.full),
    ];
    if let Some(t) = &tls {
        rows.push(("TLS 304 (unchanged, connection kept)", &t.not_modified));
        rows.push(("TLS 200 (document, connection kept)", &t.full));
        if let Some(r) = &t.reconnecting {
            rows.push(("TLS 304, a new connection (full handshake) each", r));
        }
    }
    for (name, r) in rows {
        let per_poll_us = 1e6 * r.cpu_s / r.polls.max(1) as f64;
        println!(
            "| {name} | {:.0} | {:.1} µs | {:.0} | {:.2} cores |",
            r.polls as f64 / r.wall_s,
            per_poll_us,
            1e6 / per_poll_us,
            10_000.0 * per_poll_us / 1e6
        );
    }
    println!(
        "\nregistry: {} proxies known; controller RSS {:.1} MiB before they polled, {:.1} MiB after: {:.0} bytes per proxy",
        plain.known,
        plain.rss0 / 1024.0,
        plain.rss1 / 1024.0,
        (plain.rss1 - plain.rss0) * 1024.0 / plain.known.max(1) as f64
    );
    if let Some(t) = &tls {
        println!(
            "over TLS: {} proxies known; RSS {:.1} → {:.1} MiB",
            t.known,
            t.rss0 / 1024.0,
            t.rss1 / 1024.0
        );
    }
    Ok(())
}
