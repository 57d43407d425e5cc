//! `make bench-memory`: what a big config costs each Envoy worker's VM —
//! its linear memory and the time it spends taking a new config — with
//! N rollouts and then N flags besides (100 each by default), all applied
//! through the real controller, read from the filter's own gauges
//! (`dimmer_vm_memory_bytes`, `dimmer_config_apply_us`).

use std::time::{Duration, Instant};

use clap::Parser;
use dimmer_e2e::fixtures::Stack;
use dimmer_e2e::stats::sample;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100)]
    rollouts: usize,
    #[arg(long, default_value_t = 100)]
    flags: usize,
    /// Re-applies of the whole config whose apply time is measured.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// Documents per `dimmer apply` file (each file is one revision).
const PER_FILE: usize = 20;

fn rollout(i: usize) -> String {
    format!(
        "name: r-{i}\nmatch:\n  host: app-{i}.example\nidentity:\n  - header: x-user-id\n  - cookie: session_id\n\
         salt: r-{i}-2026\nstable: v1\ncanary: v2\noverrides:\n  - header: x-tenant-id\n    values: [acme-internal]\n    version: v2\n\
         steps:\n  - {{percent: 10, pause: 1h}}\n  - {{percent: 100, pause: 1h}}\n\
         analysis:\n  promote_on: no_alarm\n  interval: 1s\n  latency:\n    bounds_ms: [100, 250]\n"
    )
}

fn flag(i: usize) -> String {
    let overrides = if i.is_multiple_of(2) {
        "overrides:\n  - header: x-beta-tester\n    values: [\"yes\"]\n    variant: \"on\"\n"
    } else {
        ""
    };
    format!(
        "kind: flag\nkey: f-{i}\nowner: team-{}\nlifecycle: permanent\nidentity:\n  - header: x-user-id\n\
         default_variant: \"off\"\nvariant: \"on\"\nvalues: {{\"off\": false, \"on\": true}}\n{overrides}\
         steps:\n  - {{percent: 5, pause: 1h}}\n  - {{percent: 100}}\nanalysis:\n  promote_on: no_alarm\n  interval: 1s\n",
        i % 5
    )
}

struct Gauges {
    revision: f64,
    vm_bytes: f64,
    apply_us: f64,
}

async fn gauges(stack: &Stack) -> anyhow::Result<Gauges> {
    let text = stack.lab.envoy.prometheus().await?;
    Ok(Gauges {
        revision: sample(&text, "dimmer_config_revision", &[]),
        vm_bytes: sample(&text, "dimmer_vm_memory_bytes", &[]),
        apply_us: sample(&text, "dimmer_config_apply_us", &[]),
    })
}

/// Applies `docs` in files of [`PER_FILE`]; returns the last revision and
/// how long the last file took from `dimmer apply` to the proxy's having it.
async fn apply_all(stack: &Stack, docs: &[String]) -> anyhow::Result<(u64, Duration)> {
    let mut last = (0, Duration::ZERO);
    for chunk in docs.chunks(PER_FILE) {
        last = apply_one(stack, &chunk.join("---\n"), &[]).await?;
    }
    Ok(last)
}

async fn apply_one(stack: &Stack, yaml: &str, extra: &[&str]) -> anyhow::Result<(u64, Duration)> {
    let path = stack
        .controller
        .dir()
        .join(format!("bench-{}.yaml", fastrand::u32(..)));
    std::fs::write(&path, yaml)?;
    let started = Instant::now();
    let mut args = vec!["apply", "-f"];
    let p = path.display().to_string();
    args.push(&p);
    args.extend_from_slice(extra);
    stack.controller.ok(&args)?;
    let status = stack
        .controller
        .get("/v1/health", dimmer_e2e::controller::VIEWER_TOKEN)
        .await?;
    let revision = status["revision"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if gauges(stack).await?.revision as u64 >= revision {
            return Ok((revision, started.elapsed()));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "revision {revision} never applied"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The gauges once every VM has ticked at least twice on the current config.
async fn settled(stack: &Stack) -> anyhow::Result<Gauges> {
    tokio::time::sleep(Duration::from_millis(2500)).await;
    gauges(stack).await
}

fn row(what: &str, g: &Gauges, apply_ms: Option<f64>) {
    println!(
        "| {what} | {:.2} MiB | {} | {} |",
        g.vm_bytes / 1_048_576.0,
        if g.apply_us > 0.0 {
            format!("{:.2} ms", g.apply_us / 1000.0)
        } else {
            "–".into()
        },
        apply_ms.map_or("–".into(), |ms| format!("{ms:.0} ms")),
    );
}

/// Sends a request to each rollout's host as a new user, so that the
/// request path (and its allocations) ran on every rollout.
async fn traffic(stack: &Stack, rollouts: usize) -> anyhow::Result<()> {
    for i in 0..rollouts.max(1) {
        let host = format!("app-{i}.example");
        let user = format!("user-{i}");
        stack
            .lab
            .client
            .get(
                "/",
                &[("host", host.as_bytes()), ("x-user-id", user.as_bytes())],
            )
            .await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider: one for the process.
    dimmer::tls::install_provider();
    let a = Args::parse();
    let stack = Stack::start().await?;
    println!(
        "Envoy 1.40, 2 workers, the filter polling the controller every 1 s; {} rollouts, then {} flags, applied {PER_FILE} documents a file\n",
        a.rollouts, a.flags
    );
    println!("| configured | VM memory | config apply in the VM (parse, compile, stats) | `dimmer apply` → the proxy has it |");
    println!("|---|---:|---:|---:|");
    traffic(&stack, 1).await?;
    row("nothing", &settled(&stack).await?, None);

    let rollouts: Vec<String> = (0..a.rollouts).map(rollout).collect();
    let (_, took) = apply_all(&stack, &rollouts).await?;
    traffic(&stack, a.rollouts).await?;
    row(
        &format!("{} rollouts", a.rollouts),
        &settled(&stack).await?,
        Some(took.as_secs_f64() * 1000.0),
    );

    let flags: Vec<String> = (0..a.flags).map(flag).collect();
    let (_, took) = apply_all(&stack, &flags).await?;
    traffic(&stack, a.rollouts).await?;
    let both = format!("{} rollouts + {} flags", a.rollouts, a.flags);
    row(
        &both,
        &settled(&stack).await?,
        Some(took.as_secs_f64() * 1000.0),
    );

    // The whole document again, several times: one rollout restarted is a
    // new revision, so every VM takes all of it.
    let mut applies = Vec::new();
    let mut latencies = Vec::new();
    let restart = rollout(0);
    for _ in 0..a.rounds {
        let (_, took) = apply_one(&stack, &restart, &["--restart"]).await?;
        let g = settled(&stack).await?;
        applies.push(g.apply_us / 1000.0);
        latencies.push(took.as_secs_f64() * 1000.0);
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "\n{} re-applies of the {both} document: apply in the VM {} ms; dimmer apply → proxy has it {} ms",
        a.rounds,
        show(&applies),
        show(&latencies)
    );
    let text = stack.lab.envoy.prometheus().await?;
    println!(
        "configs rejected by the filter: {}",
        sample(&text, "dimmer_config_rejected", &[])
    );
    Ok(())
}
