//! `dimmer`: the controller (`dimmer serve`) and the CLI that talks to it.

use clap::Parser;
use dimmer::cli;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = cli::Cli::parse();
    if let Err(e) = cli::run(cli).await {
        eprintln!("dimmer: {e:#}");
        std::process::exit(1);
    }
}
