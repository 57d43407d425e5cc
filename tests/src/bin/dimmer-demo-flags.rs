//! `make demo-flags`: a feature flag rolled out and killed on this machine.
//! The app behind Envoy, the `dimmer` controller, load from a few thousand
//! users; applies `examples/new-cart-flag.yaml` and shows it live. Healthy,
//! it reaches 100% and is then turned off with `dimmer flag off` (the kill
//! switch); with `--flag faulty` the app fails every request where
//! `new-cart=on`, and the analysis aborts the flag.

use std::time::{Duration, Instant};

use clap::Parser;
use dimmer_e2e::fixtures::Stack;
use dimmer_e2e::load::{now_ms, Load, Served};
use dimmer_e2e::paths::workspace_root;

#[derive(Parser)]
struct Args {
    /// `healthy`, or `faulty`: the app fails the requests with the flag on.
    #[arg(long, env = "FLAG", default_value = "healthy")]
    flag: String,
    #[arg(long, default_value_t = 3000)]
    users: usize,
    #[arg(long, default_value_t = 300)]
    rps: u32,
}

/// Share of requests that had `new-cart=on`, every `secs` seconds from `t0`.
fn shares(served: &[Served], t0: u64, secs: u64) -> String {
    let mut line = String::new();
    for bucket in 0.. {
        let (from, to) = (t0 + bucket * secs * 1000, t0 + (bucket + 1) * secs * 1000);
        let window: Vec<_> = served
            .iter()
            .filter(|s| s.at_ms >= from && s.at_ms < to)
            .collect();
        if window.is_empty() {
            break;
        }
        let on = window
            .iter()
            .filter(|s| s.flags.split(';').any(|kv| kv == "new-cart=on"))
            .count();
        line.push_str(&format!(" {:.0}%", 100.0 * on as f64 / window.len() as f64));
    }
    line
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider: one for the process.
    dimmer::tls::install_provider();
    let args = Args::parse();
    let faulty = match args.flag.as_str() {
        "healthy" => false,
        "faulty" => true,
        other => anyhow::bail!("FLAG must be healthy or faulty, not {other:?}"),
    };
    println!("Dimmer flags demo: a {} feature behind a flag\n", args.flag);
    let stack = Stack::start().await?;
    if faulty {
        // The broken feature: the app answers 503 wherever the flag is on.
        *stack
            .lab
            .v1
            .fault
            .fail_flag
            .lock()
            .map_err(|_| anyhow::anyhow!("fault lock"))? = Some("new-cart=on".into());
    }
    println!(
        "  app                    http://127.0.0.1:{}{}",
        stack.lab.v1.port,
        if faulty {
            "   <- fails where new-cart=on"
        } else {
            ""
        }
    );
    println!("  Envoy + Dimmer filter  {}", stack.lab.envoy.url("/"));
    println!(
        "  dimmer controller      {} (OFREP at /ofrep/v1/evaluate/flags)",
        stack.controller.url()
    );
    println!(
        "  load                   {} users, ~{} requests/s\n",
        args.users, args.rps
    );
    let load = Load::start(stack.lab.client.clone(), args.users, args.rps);

    let spec = workspace_root().join("examples/new-cart-flag.yaml");
    println!("$ dimmer apply -f examples/new-cart-flag.yaml");
    print!(
        "{}",
        stack
            .controller
            .ok(&["apply", "-f", &spec.display().to_string()])?
    );
    println!("\n$ dimmer status new-cart --watch");
    let started = Instant::now();
    stack
        .controller
        .watch_until_done("new-cart", Duration::from_secs(170))
        .await?;
    if !faulty {
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!("\n$ dimmer flag off new-cart --reason \"demo: the kill switch\"");
        let off_at = now_ms();
        print!(
            "{}",
            stack.controller.ok(&[
                "flag",
                "off",
                "new-cart",
                "--reason",
                "demo: the kill switch"
            ])?
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
        let served = load.served();
        let last_on = served
            .iter()
            .filter(|s| s.flags.split(';').any(|kv| kv == "new-cart=on"))
            .map(|s| s.at_ms)
            .max()
            .unwrap_or(0);
        println!(
            "  the last request with new-cart=on was sent {} ms after `flag off`",
            last_on as i64 - off_at as i64
        );
    }
    println!("\n$ dimmer history new-cart");
    print!("{}", stack.controller.ok(&["history", "new-cart"])?);
    println!("\n$ dimmer flags");
    print!("{}", stack.controller.ok(&["flags"])?);

    let served = load.served();
    let t0 = served.first().map_or(0, |s| s.at_ms);
    println!("\nShare of requests with new-cart=on, every 5 s (from the load generator):");
    println!(" {}", shares(&served, t0, 5));
    println!(
        "\nFinished in {} s. Every process this demo started is now stopped.",
        started.elapsed().as_secs()
    );
    Ok(())
}
