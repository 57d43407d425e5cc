//! What `dimmer` takes on its command line: the global flags and every
//! subcommand with its arguments (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::logging::LogFormat;
use super::output::Output;
use super::serve::ServeArgs;
use super::simulate::SimArgs;

#[derive(Parser)]
#[command(
    name = "dimmer",
    version,
    about = "Progressive delivery inside the proxy",
    after_help = "Every command but `serve`, `simulate` and `apply --dry-run` talks to a controller: \
                  --server URL (or DIMMER_SERVER; default http://127.0.0.1:8080) and --token TOKEN \
                  (or DIMMER_TOKEN), and for an https:// server --ca FILE (or DIMMER_CA), before or after the command's name."
)]
pub struct Cli {
    /// The controller's API. Hidden from each command's help (`serve` does
    /// not use it); the top-level help says it.
    #[arg(
        long,
        global = true,
        hide = true,
        env = "DIMMER_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Bearer token for the API.
    #[arg(
        long,
        global = true,
        hide = true,
        env = "DIMMER_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The CA that signed the controller's certificate (PEM), for an
    /// `https://` server: the only roots trusted then. Verification is never
    /// switched off.
    #[arg(long, global = true, hide = true, env = "DIMMER_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// How the log looks: `text` (coloured only on a terminal) or `json`
    /// (one object a line, for log shippers).
    #[arg(
        long,
        global = true,
        env = "DIMMER_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the controller.
    Serve(Box<ServeArgs>),
    /// Apply a rollout spec (YAML).
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Validate and print the plan without applying it (offline).
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: your traffic (requests/s), to estimate how long
        /// each step takes to catch a 2× error regression.
        #[arg(long, requires = "dry_run")]
        rps: Option<f64>,
        /// With --rps: your stable version's error rate.
        #[arg(long, default_value_t = 0.001)]
        baseline_error: f64,
        /// With --rps: what one of the spec's own metrics usually reads, to
        /// estimate how long each step takes to catch --harm in it:
        /// `conversion=0.05` (a ratio, one trial per request) or
        /// `order_value=50:0.05` (a mean, 0.05 values per request). Repeatable.
        #[arg(long, requires = "rps")]
        expect: Vec<String>,
        /// With --expect: the relative harm to catch, in percent.
        #[arg(long, default_value_t = 10.0)]
        harm: f64,
        /// Run the rollout again from its first step even if the spec is
        /// unchanged (an unchanged spec is otherwise a no-op). Audited.
        #[arg(long, conflicts_with = "dry_run")]
        restart: bool,
        /// Wait until the rollout is done and exit with its outcome: 0
        /// completed, 3 aborted, 4 timed out, 5 waiting for approval, 6
        /// controller unreachable (docs/pipeline.md).
        #[arg(long, conflicts_with = "dry_run")]
        wait: bool,
        /// With --wait: give up after this long (exit 4), e.g. 15m.
        #[arg(long, requires = "wait", value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Converge on a directory of specs (GitOps): every spec applied, an
    /// unchanged one left alone; nothing applied if one file is bad.
    Sync {
        dir: PathBuf,
        /// Delete rollouts the directory no longer holds (needs an admin token).
        #[arg(long)]
        prune: bool,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// What `dimmer sync DIR` would do, changing nothing.
    Diff {
        dir: PathBuf,
        #[arg(long)]
        prune: bool,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show rollouts.
    Status {
        name: Option<String>,
        /// Keep showing, live.
        #[arg(long)]
        watch: bool,
        /// With --watch: stop once every rollout shown has completed or
        /// aborted and every live proxy has applied it; exit with the
        /// outcome as --wait does.
        #[arg(long)]
        until_done: bool,
        /// Wait until the rollout is done and exit with its outcome: 0
        /// completed, 3 aborted, 4 timed out, 5 waiting for approval, 6
        /// controller unreachable (docs/pipeline.md).
        #[arg(long, conflicts_with = "watch")]
        wait: bool,
        /// With --wait or --until-done: give up after this long (exit 4).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Hold the current step.
    Pause {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Continue after a pause.
    Resume {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Step up now, skipping the pause and any approval gate.
    Promote {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Send everyone back to stable, now.
    Abort {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Remove a rollout from the config the filters receive.
    Delete {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Turn a flag on or off for everyone, now (off: everyone gets the
    /// default variant). Audited.
    Flag {
        #[arg(value_parser = ["on", "off"])]
        state: String,
        key: String,
        #[arg(long)]
        reason: String,
    },
    /// Every flag: state, owner, age, evaluations in the last day, toggles
    /// in the last 7 days, and which are expired, ready for removal from
    /// the code, or never evaluated.
    Flags {
        /// Days a fully rolled-out temporary flag may stay before it is
        /// marked ready for removal from the code.
        #[arg(long, default_value_t = 14)]
        ready_after_days: u32,
        /// The list as JSON (as `-o json`).
        #[arg(long, hide = true)]
        json: bool,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Every decision on a rollout: who, what, when, why, on which numbers.
    History {
        name: String,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Which version (or a flag's variant) an identity gets now, by the
    /// filter's cohort function.
    Which {
        name: String,
        identity: String,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// The proxies that poll, and the revision each has applied.
    Proxies {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Synthetic rollouts through the controller's own analysis, beside an
    /// Argo-style reference detector on the same random streams.
    Simulate(SimArgs),
    /// Webhook deliveries per URL: delivered, retried, failed, dropped.
    Webhooks {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Sign in with the company's OpenID Connect provider (the device flow:
    /// open the link it prints, check the code); the token is kept for
    /// the next commands, until it expires (docs/security.md).
    Login {
        /// Where the token is kept (default `~/.config/dimmer/token`).
        #[arg(long, env = "DIMMER_TOKEN_FILE")]
        file: Option<PathBuf>,
        /// The provider's CA (PEM), when not a public one.
        #[arg(long)]
        provider_ca: Option<PathBuf>,
    },
    /// Forget the token `dimmer login` kept.
    Logout {
        #[arg(long, env = "DIMMER_TOKEN_FILE")]
        file: Option<PathBuf>,
    },
    /// Tokens in a tokens file (`serve --tokens`), which holds only their
    /// digests; a running controller picks a change up within a second.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// A new random token for NAME: its digest is added to the file and
    /// the token printed, once.
    Create {
        name: String,
        #[arg(long, value_enum)]
        role: crate::auth::tokens::Role,
        /// A team whose rollouts and flags it may change (repeat for
        /// several); without any, every team's.
        #[arg(long = "team")]
        teams: Vec<String>,
        /// The tokens file (created if missing).
        #[arg(long)]
        file: PathBuf,
    },
    /// Removes every token of NAME: it stops working within a second.
    Revoke {
        name: String,
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Check the hash chain, each record's keyed checkpoint and the head
    /// checkpoint: from the state file if given, else through the API.
    Verify {
        #[arg(long)]
        db: Option<PathBuf>,
        /// With --db: the audit key (default: the state file's name + `.key`).
        #[arg(long, requires = "db")]
        audit_key: Option<PathBuf>,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// A new audit key (64 hex digits) for `--audit-key`: every controller
    /// of a fleet must be given the same one, and it must outlive them.
    NewKey,
    /// A new signing key in front of the key file's; the older keys stay in
    /// it to verify the records they signed. Restart the controllers (every
    /// one of a fleet, with the same file) to sign with it.
    RotateKey {
        /// The key file (`serve --audit-key`).
        #[arg(long)]
        audit_key: PathBuf,
    },
    /// The head of the audit log (sequence number and hash), to pin elsewhere.
    Head {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
}
