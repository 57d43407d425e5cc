//! `dimmer`: the controller (`dimmer serve`) and the CLI that talks to it.

use std::process::ExitCode;

use clap::Parser;
use dimmer::cli;

#[tokio::main]
async fn main() -> ExitCode {
    dimmer::tls::install_provider();
    let cli = cli::Cli::parse();
    cli::init_log(cli.log_format);
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A pipeline reads the code; a person reads the words.
            eprintln!("dimmer: {e:#}");
            cli::code_of(&e).into()
        }
    }
}
