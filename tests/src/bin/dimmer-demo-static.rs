//! `make demo-static`: Envoy with the Dimmer filter in static mode (weights in
//! the Envoy config, no controller) in front of two versions; a few thousand
//! users, twice, to show the split and that nobody moves.

use std::collections::HashMap;

use dimmer_e2e::fixtures::{rollout, static_config, users, Lab};
use dimmer_e2e::stats::sample;

const USERS: usize = 5000;
const CANARY_BP: u32 = 1000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider: one for the process.
    dimmer::tls::install_provider();
    println!("Starting two versions of an app and Envoy with the Dimmer filter (static mode)...");
    let lab = Lab::start(static_config(vec![rollout(CANARY_BP)])).await?;
    println!(
        "  Envoy listening on {}, admin on {}\n",
        lab.envoy.url("/"),
        lab.envoy.admin_url("/")
    );
    let ids = users("user", USERS);
    println!("Round 1: {USERS} distinct users (x-user-id), one request each");
    let first = lab.client.versions_of(&ids, 32).await?;
    println!("Round 2: the same users again, over new connections");
    let fresh = dimmer_e2e::Client::fresh_connections(lab.envoy.url(""));
    let second = fresh.versions_of(&ids, 17).await?;

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for v in &first {
        *counts.entry(v.as_str()).or_default() += 1;
    }
    println!("\n  version  weight   users   share");
    for (version, weight) in [("v1", 10_000 - CANARY_BP), ("v2", CANARY_BP)] {
        let n = counts.get(version).copied().unwrap_or(0);
        println!(
            "  {version:<7} {:>6.1}%  {n:>6}  {:>5.1}%",
            weight as f64 / 100.0,
            100.0 * n as f64 / USERS as f64
        );
    }
    let moved = first.iter().zip(&second).filter(|(a, b)| a != b).count();
    println!("\n  users who changed version between rounds: {moved} of {USERS}");

    let text = lab.envoy.prometheus().await?;
    println!("\nFrom Envoy's /stats/prometheus:");
    for version in ["v1", "v2"] {
        let n = sample(
            &text,
            "dimmer_requests",
            &[
                ("rollout", "checkout"),
                ("version", version),
                ("class", "2xx"),
            ],
        );
        println!(
            "  dimmer_requests{{rollout=\"checkout\",version=\"{version}\",class=\"2xx\"}} {n}"
        );
    }
    anyhow::ensure!(moved == 0, "stickiness broken: {moved} users moved");
    println!("\nDone; every process started here has been stopped.");
    Ok(())
}
