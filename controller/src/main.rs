//! `dimmer`: the controller (`dimmer serve`) and the CLI that talks to it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use dimmer::api::{self, App};
use dimmer::audit::{self, AuditRecord};
use dimmer::auth::Auth;
use dimmer::client::{Body, Client};
use dimmer::metrics::Source;
use dimmer::render;
use dimmer::service::{Service, StatusView};
use dimmer::simulate::{simulate, Scenario};
use dimmer::spec::RolloutSpec;
use dimmer::store::Store;
use dimmer_core::config::ConfigDoc;
use dimmer_core::Compiled;
use reqwest::Method;

#[derive(Parser)]
#[command(
    name = "dimmer",
    version,
    about = "Progressive delivery inside the proxy"
)]
struct Cli {
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
    Serve(ServeArgs),
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
    /// Every decision on a rollout: who, what, when, why, on which numbers.
    History { name: String },
    /// Which version an identity gets now, by the filter's cohort function.
    Which { name: String, identity: String },
    /// The proxies that poll, and the revision each has applied.
    Proxies,
    /// Synthetic rollouts through the controller's own analysis, beside an
    /// Argo-style reference detector on the same random streams.
    Simulate(SimArgs),
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// SQLite state file: rollouts, revision, audit log.
    #[arg(long, default_value = "dimmer.db")]
    db: PathBuf,
    /// Read metrics from this Envoy's admin (one proxy).
    #[arg(
        long,
        default_value = "http://127.0.0.1:9901",
        conflicts_with = "prometheus"
    )]
    envoy_admin: String,
    /// Read metrics from Prometheus (every proxy).
    #[arg(long)]
    prometheus: Option<String>,
    /// Tokens and roles (YAML); see docs/controller.md.
    #[arg(long, required_unless_present = "no_auth")]
    tokens: Option<PathBuf>,
    /// Accept every request as admin: only for a controller bound to loopback.
    #[arg(long)]
    no_auth: bool,
    /// POST every state change to this URL (repeatable).
    #[arg(long)]
    webhook: Vec<String>,
}

#[derive(clap::Args)]
struct SimArgs {
    /// Requests per second, both versions together.
    #[arg(long, default_value_t = 200.0)]
    rps: f64,
    /// The canary's share of traffic (0.10 = 10%).
    #[arg(long, default_value_t = 0.10)]
    split: f64,
    #[arg(long, default_value_t = 0.001)]
    baseline_error: f64,
    #[arg(long, default_value_t = 0.002)]
    canary_error: f64,
    #[arg(long, default_value_t = 2000)]
    runs: usize,
    /// Seconds each synthetic rollout lasts unless aborted.
    #[arg(long, default_value_t = 3600.0)]
    horizon: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bursty canary errors: Gamma shape of a per-scrape multiplier (mean 1).
    #[arg(long)]
    burst_shape: Option<f64>,
    /// Seconds between scrapes.
    #[arg(long, default_value_t = 5.0)]
    interval: f64,
    /// The sequential tests' α.
    #[arg(long, default_value_t = 0.001)]
    alpha: f64,
    /// ρ0: the canary may have up to this many times the baseline's error rate.
    #[arg(long, default_value_t = 1.0)]
    max_rate_ratio: f64,
    /// Reference: canary error rate per minute above which a minute fails.
    #[arg(long, default_value_t = 0.01)]
    argo_threshold: f64,
    /// Reference: failed minutes allowed before it aborts.
    #[arg(long, default_value_t = 3)]
    argo_failure_limit: u32,
    /// One JSON object per detector.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain: from the state file if given, else through the API.
    Verify {
        #[arg(long)]
        db: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("dimmer: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.server, cli.token.clone());
    let reason = |r: &str| Some(Body::Json(serde_json::json!({ "reason": r })));
    match cli.command {
        Cmd::Serve(args) => serve(args).await,
        Cmd::Apply {
            file,
            dry_run,
            rps,
            baseline_error,
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
                    println!(
                        "  step {}: {}% of users on {}, at least {}{gate}",
                        i + 1,
                        s.percent,
                        spec.canary,
                        humantime::format_duration(s.pause),
                    );
                }
                if let Some(rps) = rps {
                    estimate(&spec, rps, baseline_error);
                }
                return Ok(());
            }
            let v: StatusView = client
                .call(Method::POST, "/v1/rollouts", Some(Body::Yaml(text)))
                .await?;
            print!("{}", render::text(&v));
            Ok(())
        }
        Cmd::Status {
            name,
            watch,
            until_done,
        } => status(&client, name, watch, until_done).await,
        Cmd::Pause { name, reason: r } => act(&client, &name, "pause", reason(&r)).await,
        Cmd::Resume { name, reason: r } => act(&client, &name, "resume", reason(&r)).await,
        Cmd::Promote { name, reason: r } => act(&client, &name, "promote", reason(&r)).await,
        Cmd::Abort { name, reason: r } => act(&client, &name, "abort", reason(&r)).await,
        Cmd::Delete { name, reason: r } => {
            client
                .call_empty(Method::DELETE, &format!("/v1/rollouts/{name}"), reason(&r))
                .await?;
            println!("{name}: deleted");
            Ok(())
        }
        Cmd::History { name } => {
            let records: Vec<AuditRecord> = client
                .call(Method::GET, &format!("/v1/rollouts/{name}/history"), None)
                .await?;
            print!("{}", render::history(&records));
            Ok(())
        }
        Cmd::Which { name, identity } => {
            let doc: ConfigDoc = client.call(Method::GET, "/v1/config", None).await?;
            let cfg = Compiled::new(doc.revision, "", &doc.rollouts);
            let Some(r) = cfg.rollouts.iter().find(|r| r.name == name) else {
                bail!("no rollout named {name:?}");
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
        Cmd::Simulate(a) => simulate_cmd(a),
        Cmd::Audit {
            command: AuditCmd::Verify { db },
        } => {
            let n = match db {
                Some(path) => {
                    let records = Store::open(&path)?.audit(None)?;
                    audit::verify(&records)?
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

/// How long each step of `spec` would take to catch a 2× error regression
/// at `rps`, by simulation through the spec's own analysis settings.
fn estimate(spec: &RolloutSpec, rps: f64, baseline_error: f64) {
    println!(
        "\nAt {rps} requests/s and {:.2}% baseline errors, a canary with twice the errors would be caught:",
        100.0 * baseline_error
    );
    for s in spec.steps.iter().filter(|s| s.percent < 100.0) {
        let scenario = Scenario {
            rps,
            split: s.percent / 100.0,
            baseline_error,
            canary_error: 2.0 * baseline_error,
            runs: 300,
            horizon_s: 3600.0,
            seed: 1,
            burst_shape: None,
            interval_s: spec.analysis.interval.as_secs_f64(),
            analysis: spec.analysis.clone(),
            argo_threshold: 0.01,
            argo_failure_limit: 3,
        };
        let r = &simulate(&scenario)[0];
        match r.median_ttd_s {
            Some(m) => println!(
                "  at {:>5}%: caught in {:.0}% of runs within the hour; median time {}",
                s.percent,
                100.0 * r.detected,
                humantime::format_duration(Duration::from_secs(m as u64)),
            ),
            None => println!(
                "  at {:>5}%: not caught within the hour at this traffic",
                s.percent
            ),
        }
    }
}

fn simulate_cmd(a: SimArgs) -> anyhow::Result<()> {
    let analysis = dimmer::spec::Analysis {
        alpha: a.alpha,
        max_rate_ratio: a.max_rate_ratio,
        interval: Duration::from_secs_f64(a.interval),
        ..Default::default()
    };
    let scenario = Scenario {
        rps: a.rps,
        split: a.split,
        baseline_error: a.baseline_error,
        canary_error: a.canary_error,
        runs: a.runs,
        horizon_s: a.horizon,
        seed: a.seed,
        burst_shape: a.burst_shape,
        interval_s: a.interval,
        analysis,
        argo_threshold: a.argo_threshold,
        argo_failure_limit: a.argo_failure_limit,
    };
    let results = simulate(&scenario);
    if a.json {
        for r in &results {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "{} runs, {} rps, canary {}% of traffic, errors {}% baseline vs {}% canary{}, {} s horizon, seed {}",
        a.runs,
        a.rps,
        100.0 * a.split,
        100.0 * a.baseline_error,
        100.0 * a.canary_error,
        a.burst_shape.map_or(String::new(), |k| format!(", bursty canary errors (shape {k})")),
        a.horizon,
        a.seed
    );
    let opt = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.0} s"));
    for r in &results {
        println!(
            "  {:<44} detected {:>6.2}%{}  median {:>7}  p90 {:>7}  bad requests served {:.1}",
            r.detector,
            100.0 * r.detected,
            r.fpr.map_or(String::new(), |f| format!(
                " (false alarms {:.2}%)",
                100.0 * f
            )),
            opt(r.median_ttd_s),
            opt(r.p90_ttd_s),
            r.bad_requests_served
        );
    }
    Ok(())
}

async fn act(client: &Client, name: &str, action: &str, body: Option<Body>) -> anyhow::Result<()> {
    let v: StatusView = client
        .call(Method::POST, &format!("/v1/rollouts/{name}/{action}"), body)
        .await?;
    print!("{}", render::text(&v));
    Ok(())
}

async fn status(
    client: &Client,
    name: Option<String>,
    watch: bool,
    until_done: bool,
) -> anyhow::Result<()> {
    let fetch = || async {
        match &name {
            Some(n) => client
                .call::<StatusView>(Method::GET, &format!("/v1/rollouts/{n}"), None)
                .await
                .map(|v| vec![v]),
            None => {
                client
                    .call::<Vec<StatusView>>(Method::GET, "/v1/rollouts", None)
                    .await
            }
        }
    };
    if !watch {
        let views = fetch().await?;
        if views.is_empty() {
            println!("no rollouts");
        }
        for v in views {
            print!("{}", render::text(&v));
        }
        return Ok(());
    }
    let live = std::io::stdout().is_terminal();
    let mut bars = render::Watch::new();
    let mut last_printed: Vec<String> = Vec::new();
    loop {
        let views = fetch().await?;
        if live {
            bars.update(&views);
        } else {
            // Not a terminal: print a rollout's line whenever it changes.
            let lines: Vec<String> = views
                .iter()
                .map(|v| {
                    format!(
                        "{} {:.2}% {} | {}",
                        v.name,
                        v.weight_bp as f64 / 100.0,
                        v.label,
                        v.reason
                    )
                })
                .collect();
            for line in lines.iter().filter(|l| !last_printed.contains(l)) {
                println!("{line}");
            }
            last_printed = lines;
        }
        // Done means decided and applied: every live proxy runs the final weights.
        let settled = |v: &StatusView| v.phase.is_final() && v.proxies_applied == v.proxies_live;
        if until_done && !views.is_empty() && views.iter().all(settled) {
            bars.finish();
            for v in &views {
                print!("{}", render::text(v));
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        listen,
        db,
        envoy_admin,
        prometheus,
        tokens,
        no_auth,
        webhook: webhooks,
    } = args;
    let auth = match (tokens, no_auth) {
        (Some(path), _) => Auth::from_file(&path)?,
        (None, true) => Auth::Open,
        (None, false) => bail!("--tokens FILE is required (or --no-auth on loopback)"),
    };
    let source = match prometheus {
        Some(url) => Source::Prometheus(url),
        None => Source::EnvoyAdmin(envoy_admin),
    };
    let store = Store::open(&db).with_context(|| format!("opening {}", db.display()))?;
    let service = Service::new(store, source, webhooks)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(%listen, db = %db.display(), "dimmer controller serving");
    tokio::spawn(Arc::clone(&service).run());
    let app = api::router(App {
        service,
        auth: Arc::new(auth),
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
