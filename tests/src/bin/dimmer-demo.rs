//! `make demo`: a real rollout on this machine. Two versions of an app, Envoy
//! with the Dimmer filter, the `dimmer` controller, load from a few thousand
//! users; applies `examples/checkout-rollout.yaml` and shows it live until it
//! is promoted or, with `--canary faulty`, aborted.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use dimmer_e2e::fixtures::Stack;
use dimmer_e2e::load::Load;
use dimmer_e2e::paths::workspace_root;

#[derive(Parser)]
struct Args {
    /// `healthy`, or `faulty`: the canary fails 5% of requests with 503 and
    /// adds 120 ms of latency.
    #[arg(long, env = "CANARY", default_value = "healthy")]
    canary: String,
    #[arg(long, default_value_t = 3000)]
    users: usize,
    #[arg(long, default_value_t = 300)]
    rps: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider: one for the process.
    dimmer::tls::install_provider();
    let args = Args::parse();
    let faulty = match args.canary.as_str() {
        "healthy" => false,
        "faulty" => true,
        other => anyhow::bail!("CANARY must be healthy or faulty, not {other:?}"),
    };
    println!("Dimmer demo: a {} canary\n", args.canary);
    // Over TLS, as a controller should run: its certificate from a CA made
    // for this run; Envoy and the CLI verify it.
    let stack = Stack::start_tls().await?;
    if faulty {
        stack.lab.v2.fault.error_bp.store(500, Ordering::Relaxed);
        stack.lab.v2.fault.delay_ms.store(120, Ordering::Relaxed);
    }
    println!(
        "  app v1 (stable)        http://127.0.0.1:{}",
        stack.lab.v1.port
    );
    println!(
        "  app v2 (canary)        http://127.0.0.1:{}{}",
        stack.lab.v2.port,
        if faulty { "   <- 5% 503s, +120 ms" } else { "" }
    );
    println!("  Envoy + Dimmer filter  {}", stack.lab.envoy.url("/"));
    println!(
        "  Envoy admin            {}",
        stack.lab.envoy.admin_url("/stats/prometheus")
    );
    println!("  dimmer controller      {}", stack.controller.url());
    println!(
        "  load                   {} users, ~{} requests/s\n",
        args.users, args.rps
    );
    let load = Load::start(stack.lab.client.clone(), args.users, args.rps);

    let spec = workspace_root().join("examples/checkout-rollout.yaml");
    println!("$ dimmer apply -f examples/checkout-rollout.yaml");
    print!(
        "{}",
        stack
            .controller
            .ok(&["apply", "-f", &spec.display().to_string()])?
    );
    println!("\n$ dimmer status --watch");
    let started = Instant::now();
    stack
        .controller
        .watch_until_done("checkout", Duration::from_secs(170))
        .await?;
    let took = started.elapsed().as_secs();

    println!("\n$ dimmer history checkout");
    print!("{}", stack.controller.ok(&["history", "checkout"])?);

    // What the users saw, from the load generator's own log.
    let served = load.served();
    let t0 = served.first().map_or(0, |s| s.at_ms);
    println!("\nShare of requests served by v2, every 10 s (from the load generator):");
    let mut line = String::new();
    let mut bucket = 0;
    loop {
        let window: Vec<_> = served
            .iter()
            .filter(|s| s.at_ms >= t0 + bucket * 10_000 && s.at_ms < t0 + (bucket + 1) * 10_000)
            .collect();
        if window.is_empty() {
            break;
        }
        let v2 = window.iter().filter(|s| s.version == "v2").count();
        line.push_str(&format!(" {:.0}%", 100.0 * v2 as f64 / window.len() as f64));
        bucket += 1;
    }
    println!(" {line}");
    println!("\nFinished in {took} s. Every process this demo started is now stopped.");
    Ok(())
}
