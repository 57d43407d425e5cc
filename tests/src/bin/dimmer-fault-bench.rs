//! `make bench-faults`: how long config polls, aborts and applies take while
//! the metrics source and a webhook accept connections and never answer,
//! side by side with a healthy source, in one run. The controller is the
//! real binary; the load is sequential requests over loopback.

use std::time::{Duration, Instant};

use anyhow::ensure;
use clap::Parser;
use dimmer_e2e::controller::{Controller, MetricsFrom, ENVOY_TOKEN, OPERATOR_TOKEN};
use dimmer_e2e::faults::{quantile, BlackHole};

#[derive(Parser)]
struct Args {
    /// Config polls per scenario.
    #[arg(long, default_value_t = 2000)]
    polls: usize,
    /// Aborts (and as many applies) per scenario.
    #[arg(long, default_value_t = 40)]
    commands: usize,
    /// Rollouts the runner analyses, every 200 ms.
    #[arg(long, default_value_t = 8)]
    rollouts: usize,
}

fn spec(name: &str) -> String {
    format!(
        "name: {name}\nidentity: [{{header: x-user-id}}]\nstable: v1\ncanary: v2\n\
         steps: [{{percent: 10}}, {{percent: 100}}]\nanalysis: {{interval: 200ms, min_requests: 10}}\n"
    )
}

struct Figures {
    polls: Vec<f64>,
    aborts: Vec<f64>,
    applies: Vec<f64>,
}

async fn timed(req: reqwest::RequestBuilder) -> anyhow::Result<f64> {
    let t = Instant::now();
    let r = req.send().await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    ensure!(r.status().is_success(), "{}", r.status());
    Ok(ms)
}

async fn measure(c: &Controller, a: &Args) -> anyhow::Result<Figures> {
    let http = reqwest::Client::new();
    let url = c.url();
    let apply = |name: String| {
        http.post(format!("{url}/v1/rollouts"))
            .bearer_auth(OPERATOR_TOKEN)
            .body(spec(&name))
    };
    for i in 0..a.rollouts {
        timed(apply(format!("busy-{i}"))).await?;
    }
    // Let the runner reach its (hanging or not) fetch.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut f = Figures {
        polls: Vec::new(),
        aborts: Vec::new(),
        applies: Vec::new(),
    };
    for i in 0..a.polls {
        f.polls.push(
            timed(
                http.get(format!("{url}/v1/config"))
                    .bearer_auth(ENVOY_TOKEN)
                    .header("x-dimmer-proxy-id", format!("edge-{}", i % 16))
                    .header("x-dimmer-revision", "1"),
            )
            .await?,
        );
        if i % (a.polls / a.commands.max(1)).max(1) == 0 && f.aborts.len() < a.commands {
            let name = format!("cmd-{}", f.aborts.len());
            f.applies.push(timed(apply(name.clone())).await?);
            f.aborts.push(
                timed(
                    http.post(format!("{url}/v1/rollouts/{name}/abort"))
                        .bearer_auth(OPERATOR_TOKEN)
                        .json(&serde_json::json!({"reason": "bench"})),
                )
                .await?,
            );
        }
    }
    for v in [&mut f.polls, &mut f.aborts, &mut f.applies] {
        v.sort_by(f64::total_cmp);
    }
    Ok(f)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider: one for the process.
    dimmer::tls::install_provider();
    let a = Args::parse();
    // A healthy source: an endpoint that answers at once with no counts.
    let healthy = {
        let app = axum::Router::new().fallback(|| async { "" });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        port
    };
    let hang = BlackHole::start().await?;
    let hook = BlackHole::start().await?;
    println!(
        "{} config polls, {} applies and {} aborts per scenario, {} rollouts analysed every 200 ms\n",
        a.polls, a.commands, a.commands, a.rollouts
    );
    println!("| scenario | poll p50 | poll p99 | poll max | apply p99 | abort p99 | abort max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, port, extra) in [
        ("healthy metrics source", healthy, vec![]),
        (
            "metrics and webhook hang (10 s timeout)",
            hang.port,
            vec![
                "--metrics-timeout".to_string(),
                "10s".into(),
                "--webhook".into(),
                hook.url("/hook"),
            ],
        ),
    ] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let c = Controller::start(MetricsFrom::EnvoyAdmin(port), &extra).await?;
        let f = measure(&c, &a).await?;
        println!(
            "| {label} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            quantile(&f.polls, 0.5),
            quantile(&f.polls, 0.99),
            f.polls.last().copied().unwrap_or(f64::NAN),
            quantile(&f.applies, 0.99),
            quantile(&f.aborts, 0.99),
            f.aborts.last().copied().unwrap_or(f64::NAN),
        );
    }
    Ok(())
}
