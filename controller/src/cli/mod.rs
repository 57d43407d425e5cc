//! The command line: `dimmer serve` and the commands that talk to it.

mod serve;
mod simulate;
mod status;

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use dimmer::audit::{self, AuditKey, AuditRecord};
use dimmer::client::{Body, Client};
use dimmer::render;
use dimmer::service::{FlagView, StatusView};
use dimmer::spec::{RolloutSpec, StepTraffic};
use dimmer::store::{self, Store};
use dimmer_core::config::ConfigDoc;
use dimmer_core::Compiled;
use reqwest::Method;

#[derive(Parser)]
#[command(
    name = "dimmer",
    version,
    about = "Progressive delivery inside the proxy"
)]
pub struct Cli {
    /// The controller's API.
    #[arg(
        long,
        global = true,
        env = "DIMMER_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// Bearer token for the API.
    #[arg(long, global = true, env = "DIMMER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the controller.
    Serve(serve::ServeArgs),
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
    },
    /// Show rollouts.
    Status {
        name: Option<String>,
        /// Keep showing, live.
        #[arg(long)]
        watch: bool,
        /// With --watch: stop once every rollout shown has completed or aborted
        /// and every live proxy has applied it.
        #[arg(long)]
        until_done: bool,
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
        /// The list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every decision on a rollout: who, what, when, why, on which numbers.
    History { name: String },
    /// Which version (or a flag's variant) an identity gets now, by the
    /// filter's cohort function.
    Which { name: String, identity: String },
    /// The proxies that poll, and the revision each has applied.
    Proxies,
    /// Synthetic rollouts through the controller's own analysis, beside an
    /// Argo-style reference detector on the same random streams.
    Simulate(simulate::SimArgs),
    /// Webhook deliveries per URL: delivered, retried, failed, dropped.
    Webhooks,
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain, each record's keyed checkpoint and the head
    /// checkpoint: from the state file if given, else through the API.
    Verify {
        #[arg(long)]
        db: Option<PathBuf>,
        /// With --db: the audit key (default: the state file's name + `.key`).
        #[arg(long, requires = "db")]
        audit_key: Option<PathBuf>,
    },
    /// The head of the audit log (sequence number and hash), to pin elsewhere.
    Head,
}

/// `name` as a URL path segment. Every rollout name meets the rule checked
/// here (letters, digits, `.`, `_`, `-`, starting with a letter or digit),
/// and such a name is a path segment as it stands: it needs no escaping and
/// can never be `.` or `..`. Anything else is refused before it is sent.
fn seg(name: &str) -> anyhow::Result<&str> {
    if !dimmer_core::validate::is_valid_name(name) {
        bail!("{name:?} cannot be a rollout name: 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit");
    }
    Ok(name)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.server, cli.token.clone());
    let reason = |r: &str| Some(Body::Json(serde_json::json!({ "reason": r })));
    match cli.command {
        Cmd::Serve(args) => serve::serve(args).await,
        Cmd::Apply {
            file,
            dry_run,
            rps,
            baseline_error,
            expect,
            harm,
            restart,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            // Checked here first, so the error names the file.
            let spec = RolloutSpec::from_yaml(&text).with_context(|| file.display().to_string())?;
            if dry_run {
                // Validated here, with the controller's own code: no server needed.
                println!("{}: valid. Plan:", spec.name);
                for (i, s) in spec.steps.iter().enumerate() {
                    let gate = if s.approval {
                        ", then wait for approval"
                    } else {
                        ""
                    };
                    let what = if spec.is_flag() { "get variant" } else { "on" };
                    let who = match s.traffic {
                        StepTraffic::Users => format!("{}% of users {what}", s.percent),
                        StepTraffic::Preview => "preview: only the people overrides name on".into(),
                        StepTraffic::Shadow => {
                            "shadow: no users; the requests Envoy mirrors to".into()
                        }
                    };
                    println!(
                        "  step {}: {who} {}, at least {}{gate}",
                        i + 1,
                        spec.canary,
                        humantime::format_duration(s.pause),
                    );
                }
                if let Some(rps) = rps {
                    simulate::estimate(&spec, rps, baseline_error);
                    simulate::estimate_metrics(&spec, rps, &expect, harm / 100.0)?;
                }
                return Ok(());
            }
            let path = if restart {
                "/v1/rollouts?restart=true"
            } else {
                "/v1/rollouts"
            };
            let v: StatusView = client
                .call(Method::POST, path, Some(Body::Yaml(text)))
                .await?;
            print!("{}", render::text(&v));
            Ok(())
        }
        Cmd::Status {
            name,
            watch,
            until_done,
        } => status::status(&client, name, watch, until_done).await,
        Cmd::Pause { name, reason: r } => act(&client, &name, "pause", reason(&r)).await,
        Cmd::Resume { name, reason: r } => act(&client, &name, "resume", reason(&r)).await,
        Cmd::Promote { name, reason: r } => act(&client, &name, "promote", reason(&r)).await,
        Cmd::Abort { name, reason: r } => act(&client, &name, "abort", reason(&r)).await,
        Cmd::Delete { name, reason: r } => {
            client
                .call_empty(
                    Method::DELETE,
                    &format!("/v1/rollouts/{}", seg(&name)?),
                    reason(&r),
                )
                .await?;
            println!("{name}: deleted");
            Ok(())
        }
        Cmd::Flag {
            state,
            key,
            reason: r,
        } => {
            let v: StatusView = client
                .call(
                    Method::POST,
                    &format!("/v1/flags/{}/{state}", seg(&key)?),
                    reason(&r),
                )
                .await?;
            print!("{}", render::text(&v));
            Ok(())
        }
        Cmd::Flags {
            ready_after_days,
            json,
        } => {
            let flags: Vec<FlagView> = client
                .call(
                    Method::GET,
                    &format!("/v1/flags?ready_after_days={ready_after_days}"),
                    None,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&flags)?);
            } else {
                print!("{}", render::flags(&flags, dimmer::service::now_ms()));
            }
            Ok(())
        }
        Cmd::History { name } => {
            let records: Vec<AuditRecord> = client
                .call(
                    Method::GET,
                    &format!("/v1/rollouts/{}/history", seg(&name)?),
                    None,
                )
                .await?;
            print!("{}", render::history(&records));
            Ok(())
        }
        Cmd::Which { name, identity } => {
            let doc: ConfigDoc = client.call(Method::GET, "/v1/config", None).await?;
            let cfg = Compiled::new(doc.revision, "", &doc.rollouts).with_flags("", &doc.flags);
            if let Some(f) = cfg.flags.flags.iter().find(|f| f.key == name) {
                // By hash alone; the flag's state, prerequisites and overrides
                // can change it per request (`POST /ofrep/...` answers all).
                let variant = f
                    .variants
                    .get(f.variant_of_identity(identity.as_bytes()))
                    .map_or("(none)", String::as_str);
                let state = if f.enabled {
                    ""
                } else {
                    "; the flag is off: everyone gets its default"
                };
                println!("{variant} (by hash, revision {}{state})", doc.revision);
                return Ok(());
            }
            let Some(r) = cfg.rollouts.iter().find(|r| r.name == name) else {
                bail!("no rollout or flag named {name:?}");
            };
            let bucket = r.cohort.bucket(identity.as_bytes());
            let version = &r.versions[r.version_of_bucket(bucket)];
            println!(
                "{version} (bucket {bucket} of 10000, revision {})",
                doc.revision
            );
            Ok(())
        }
        Cmd::Proxies => {
            let proxies: serde_json::Value = client.call(Method::GET, "/v1/proxies", None).await?;
            println!("{}", serde_json::to_string_pretty(&proxies)?);
            Ok(())
        }
        Cmd::Simulate(a) => simulate::simulate_cmd(a),
        Cmd::Webhooks => {
            let v: serde_json::Value = client.call(Method::GET, "/v1/webhooks", None).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Cmd::Audit {
            command: AuditCmd::Head,
        } => {
            let h: audit::Head = client.call(Method::GET, "/v1/audit/head", None).await?;
            println!("record {} {}", h.seq, h.hash);
            Ok(())
        }
        Cmd::Audit {
            command: AuditCmd::Verify { db, audit_key },
        } => {
            let n = match db {
                Some(path) => {
                    if !path.exists() {
                        bail!("no state file at {}", path.display());
                    }
                    let key_path = audit_key.unwrap_or_else(|| store::default_key_path(&path));
                    let key = AuditKey::load(&key_path)?;
                    let records = Store::open(&path, key.clone())?.audit(None)?;
                    let head = store::read_head(&store::head_path(&path))?;
                    audit::verify_keyed(&records, &key, head.as_ref())?
                }
                None => {
                    let v: serde_json::Value =
                        client.call(Method::GET, "/v1/audit/verify", None).await?;
                    v["records"].as_u64().unwrap_or(0) as usize
                }
            };
            println!("audit chain intact: {n} records");
            Ok(())
        }
    }
}

async fn act(client: &Client, name: &str, action: &str, body: Option<Body>) -> anyhow::Result<()> {
    let v: StatusView = client
        .call(
            Method::POST,
            &format!("/v1/rollouts/{}/{action}", seg(name)?),
            body,
        )
        .await?;
    print!("{}", render::text(&v));
    Ok(())
}
