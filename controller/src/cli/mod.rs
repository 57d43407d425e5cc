//! The CLI layer: `dimmer serve` (which assembles a controller from the
//! layers below) and the commands that talk to a controller over its API:
//! their arguments, the HTTP client, and how answers are rendered.
//!
//! The top layer: may import every other layer and `dimmer_decide`;
//! nothing imports it but `main.rs`.

mod args;
pub mod client;
mod exit;
mod logging;
mod login;
mod output;
mod promotion;
pub mod render;
mod run;
mod serve;
mod simulate;
mod status;
mod token;

pub use args::Cli;
pub use exit::{code_of, Code, Exited};
pub use logging::{init as init_log, LogFormat};
pub use run::run;
