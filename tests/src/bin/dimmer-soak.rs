//! `make soak`: a long run of everything at once — load from many
//! identities through Envoy with the filter (two workers), the controller
//! running rollouts that step, complete, abort and restart, so the config
//! changes every few seconds — recording requests, failures, Envoy's and
//! the controller's memory and the wasm VM's, to show they stay flat.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use dimmer_e2e::bench::{envoy_yaml, Variant};
use dimmer_e2e::controller::ADMIN_TOKEN;
use dimmer_e2e::fixtures::{spec_yaml, Stack};
use dimmer_e2e::load::Load;
use dimmer_e2e::stats::sample;
use dimmer_e2e::{Client, Envoy, Upstream};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    #[arg(long, default_value_t = 300)]
    rps: u32,
    #[arg(long, default_value_t = 50_000)]
    users: usize,
    /// One rollout held at its first step the whole time: load without
    /// config changes, to tell memory that grows with requests from memory
    /// that grows with config changes.
    #[arg(long)]
    steady: bool,
    /// The same load through an Envoy without the filter and without a
    /// controller: Envoy's own memory, the baseline for the others.
    #[arg(long)]
    no_filter: bool,
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

struct Row {
    at_s: u64,
    requests: usize,
    failures: usize,
    envoy_kib: u64,
    /// What Envoy's allocator says is in use (`/memory` `allocated`), beside
    /// the heap it holds (`heap_size`): RSS that grows while `allocated`
    /// stays flat is the allocator keeping pages, not a leak.
    envoy_allocated: f64,
    envoy_heap: f64,
    vm_bytes: f64,
    vms: f64,
    controller_kib: u64,
    rollouts: u64,
}

/// Envoy's `/memory`: `(allocated, heap_size)` in bytes (tcmalloc's figures).
async fn envoy_memory(envoy: &Envoy) -> anyhow::Result<(f64, f64)> {
    let v: serde_json::Value = reqwest::get(envoy.admin_url("/memory"))
        .await?
        .json()
        .await?;
    let bytes = |k: &str| -> f64 {
        v[k].as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| v[k].as_f64())
            .unwrap_or(0.0)
    };
    Ok((bytes("allocated"), bytes("heap_size")))
}

/// One sample: requests so far, failures (the 503s a faulty canary gives on
/// purpose are not failures), and everyone's memory.
async fn row(stack: &Stack, load: &Load, start: Instant, rollouts: u64) -> anyhow::Result<Row> {
    let text = stack.lab.envoy.prometheus().await?;
    let memory = envoy_memory(&stack.lab.envoy).await?;
    let served = load.served();
    Ok(Row {
        at_s: start.elapsed().as_secs(),
        requests: served.len(),
        failures: served
            .iter()
            .filter(|s| s.status != 200 && s.status != 503)
            .count(),
        envoy_kib: rss_kib(stack.lab.envoy.pid())?,
        envoy_allocated: memory.0,
        envoy_heap: memory.1,
        vm_bytes: sample(&text, "dimmer_vm_memory_bytes", &[]),
        vms: sample(&text, "envoy_wasm_envoy_wasm_runtime_v8_active", &[]),
        controller_kib: stack.controller.pid().map_or(Ok(0), rss_kib)?,
        rollouts,
    })
}

/// `--no-filter`: the same load, Envoy alone (the bench's no-filter config).
async fn baseline(a: &Args) -> anyhow::Result<()> {
    let v1 = Upstream::start("v1").await?;
    let v2 = Upstream::start("v2").await?;
    let (yaml, listen, admin) = envoy_yaml(Variant::NoFilter, None, v1.port, v2.port)?;
    let envoy = Envoy::start_with_yaml(&yaml, 2, listen, admin).await?;
    let load = Load::start(Client::new(envoy.url("")), a.users, a.rps);
    println!("| minute | requests | failures | Envoy RSS |\n|---:|---:|---:|---:|");
    for minute in 0..=a.minutes {
        if minute > 0 {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        let served = load.served();
        println!(
            "| {minute} | {} | {} | {:.1} MiB |",
            served.len(),
            served.iter().filter(|s| s.status != 200).count(),
            rss_kib(envoy.pid())? as f64 / 1024.0
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider: one for the process.
    dimmer::tls::install_provider();
    let a = Args::parse();
    if a.no_filter {
        return baseline(&a).await;
    }
    let mut stack = Stack::start().await?;
    let load = Load::start(stack.lab.client.clone(), a.users, a.rps);
    let start = Instant::now();
    let end = start + Duration::from_secs(a.minutes * 60);
    let mut rows: Vec<Row> = Vec::new();
    let mut next_sample = start;
    let mut rollouts = 0u64;
    let mut restarts = 0u64;
    let (mut completed, mut aborted) = (0u64, 0u64);
    let spec_path = stack.controller.dir().join("soak.yaml");
    if a.steady {
        std::fs::write(&spec_path, spec_yaml(&[(10.0, "24h"), (100.0, "0s")], 30))?;
        let spec = spec_path.display().to_string();
        stack.controller.ok(&["apply", "-f", &spec])?;
    }
    while Instant::now() < end && a.steady {
        if Instant::now() >= next_sample {
            rows.push(row(&stack, &load, start, 1).await?);
            next_sample += Duration::from_secs(60);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    while Instant::now() < end && !a.steady {
        // One rollout: 10% → 50% → 100% with short pauses; every third has
        // a failing canary and is aborted; every fifth is run again with
        // --restart; each apply changes the spec (its first pause), so it
        // is a new rollout of the same name.
        rollouts += 1;
        let faulty = rollouts.is_multiple_of(3);
        stack
            .lab
            .v2
            .fault
            .error_bp
            .store(if faulty { 2000 } else { 0 }, Ordering::Relaxed);
        let first_pause = format!("{}ms", 1000 + (rollouts % 7) * 100);
        std::fs::write(
            &spec_path,
            spec_yaml(&[(10.0, &first_pause), (50.0, "1s"), (100.0, "1s")], 30),
        )?;
        let spec = spec_path.display().to_string();
        stack.controller.ok(&["apply", "-f", &spec])?;
        if rollouts.is_multiple_of(5) {
            stack.controller.ok(&["apply", "-f", &spec, "--restart"])?;
            restarts += 1;
        }
        if let Ok(v) = stack
            .controller
            .wait_decided("checkout", Duration::from_secs(120))
            .await
        {
            match v["phase"].as_str() {
                Some("completed") => completed += 1,
                Some("aborted") => aborted += 1,
                _ => {}
            }
        }
        if Instant::now() >= next_sample {
            rows.push(row(&stack, &load, start, rollouts).await?);
            next_sample += Duration::from_secs(60);
        }
    }
    let served = load.served();
    let failed: Vec<_> = served
        .iter()
        .filter(|s| s.status != 200 && s.status != 503)
        .collect();
    let injected = served.iter().filter(|s| s.status == 503).count();
    let verify = stack
        .controller
        .get("/v1/audit/verify", ADMIN_TOKEN)
        .await?;
    stack.controller.kill();
    if a.steady {
        println!(
            "{} minutes, {} rps from {} identities; one rollout held at 10%, no config change; audit {}",
            a.minutes, a.rps, a.users, verify
        );
    } else {
        println!(
            "{} minutes, {} rps from {} identities; {} rollouts: {} completed, {} aborted (every third had a canary failing 20% of requests: {}), {} run again with --restart; audit {}",
            a.minutes,
            a.rps,
            a.users,
            rollouts,
            completed,
            aborted,
            rollouts / 3,
            restarts,
            verify
        );
    }
    println!(
        "requests {}, failures {} (not counting the {} 503s the faulty canaries answered on purpose)\n",
        served.len(),
        failed.len(),
        injected
    );
    println!("| minute | requests | failures | Envoy RSS | Envoy allocated | Envoy heap | wasm VM memory | V8 VMs | controller RSS | rollouts |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} MiB | {:.2} MiB | {:.1} MiB | {:.2} MiB | {} | {:.1} MiB | {} |",
            r.at_s / 60,
            r.requests,
            r.failures,
            r.envoy_kib as f64 / 1024.0,
            r.envoy_allocated / 1_048_576.0,
            r.envoy_heap / 1_048_576.0,
            r.vm_bytes / 1_048_576.0,
            r.vms,
            r.controller_kib as f64 / 1024.0,
            r.rollouts
        );
    }
    anyhow::ensure!(failed.is_empty(), "{} requests failed", failed.len());
    Ok(())
}
