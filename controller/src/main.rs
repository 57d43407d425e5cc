//! `dimmer`: the controller (`dimmer serve`) and the CLI that talks to it.

use clap::Parser;
use dimmer::cli;

#[tokio::main]
async fn main() {
    let cli = cli::Cli::parse();
    cli::init_log(cli.log_format);
    if let Err(e) = cli::run(cli).await {
        eprintln!("dimmer: {e:#}");
        std::process::exit(1);
    }
}
