//! Each subcommand carried out: most call the controller's API through
//! the client and render its answer; `serve` starts a controller.

use anyhow::{bail, Context};
use dimmer_core::config::ConfigDoc;
use dimmer_core::Compiled;
use dimmer_decide::spec::{RolloutSpec, StepTraffic};
use reqwest::Method;

use crate::service::{FlagView, StatusView, SyncReport};
use crate::store::audit::{self, AuditKey, AuditRecord};
use crate::store::{self, Store};

use super::args::{AuditCmd, Cli, Cmd, TokenCmd};
use super::client::{seg, Body, Client};
use super::output::{self, Output};
use super::{login, promotion, render, serve, simulate, status, token};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // A token given wins; else the one `dimmer login` kept for this server.
    let token = cli
        .token
        .clone()
        .or_else(|| login::saved_token(&cli.server));
    let client = Client::with_ca(&cli.server, token, cli.ca.as_deref())?;
    let reason = |r: &str| Some(Body::Json(serde_json::json!({ "reason": r })));
    match cli.command {
        Cmd::Serve(args) => serve::serve(*args, cli.ca.clone()).await,
        Cmd::Apply {
            file,
            dry_run,
            rps,
            baseline_error,
            expect,
            harm,
            restart,
            wait,
            timeout,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            // Checked here first, so the error names the file.
            let specs = RolloutSpec::from_yaml_documents(&text)
                .with_context(|| file.display().to_string())?;
            if specs.len() > 1 {
                if dry_run {
                    for spec in &specs {
                        println!("{}: valid", spec.name);
                    }
                    return Ok(());
                }
                if restart {
                    bail!(
                        "--restart takes one spec; {} holds {}",
                        file.display(),
                        specs.len()
                    );
                }
                // One change, all or none.
                let views: Vec<StatusView> = client
                    .call(Method::POST, "/v1/rollouts", Some(Body::Yaml(text)))
                    .await?;
                for v in &views {
                    print!("{}", render::text(v));
                }
                if !wait {
                    return Ok(());
                }
                let names: Vec<String> = views.into_iter().map(|v| v.name).collect();
                return status::wait(&client, &names, timeout).await;
            }
            let spec = RolloutSpec::from_yaml(&text).with_context(|| file.display().to_string())?;
            let cost_note = spec.counting.filter_cost_note(&spec.name, spec.is_flag());
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
                if let Some(note) = &cost_note {
                    println!("  note: {note}");
                }
                if let Some(rps) = rps {
                    simulate::estimate(&spec, rps, baseline_error);
                    promotion::estimate(&spec, rps, baseline_error);
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
            if let Some(note) = &cost_note {
                eprintln!("note: {note}");
            }
            if !wait {
                return Ok(());
            }
            // An A/B/n spec is its arms: each is waited on.
            let names: Vec<String> = if v.arms.is_empty() {
                vec![v.name.clone()]
            } else {
                v.arms.iter().map(|a| a.name.clone()).collect()
            };
            status::wait(&client, &names, timeout).await
        }
        Cmd::Sync { dir, prune, output } => sync(&client, &dir, prune, false, output).await,
        Cmd::Diff { dir, prune, output } => sync(&client, &dir, prune, true, output).await,
        Cmd::Status {
            name,
            watch,
            until_done,
            wait,
            timeout,
            output,
        } => {
            let ask = status::Ask {
                name,
                watch,
                until_done,
                wait,
                timeout,
                output,
            };
            status::status(&client, ask).await
        }
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
            output,
        } => {
            let flags: Vec<FlagView> = client
                .call(
                    Method::GET,
                    &format!("/v1/flags?ready_after_days={ready_after_days}"),
                    None,
                )
                .await?;
            let output = if json { Output::Json } else { output };
            if !output::list(output, "FlagList", &flags)? {
                print!("{}", render::flags(&flags, crate::service::now_ms()));
            }
            Ok(())
        }
        Cmd::History { name, output } => {
            let records: Vec<AuditRecord> = client
                .call(
                    Method::GET,
                    &format!("/v1/rollouts/{}/history", seg(&name)?),
                    None,
                )
                .await?;
            if !output::list(output, "AuditRecordList", &records)? {
                print!("{}", render::history(&records));
            }
            Ok(())
        }
        Cmd::Which {
            name,
            identity,
            output,
        } => {
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
                let said = serde_json::json!({
                    "name": name, "identity": identity, "flag": true, "variant": variant,
                    "enabled": f.enabled, "revision": doc.revision,
                });
                if !output::one(output, "Which", &said)? {
                    println!("{variant} (by hash, revision {}{state})", doc.revision);
                }
                return Ok(());
            }
            let Some(r) = cfg.rollouts.iter().find(|r| r.name == name) else {
                bail!("no rollout or flag named {name:?}");
            };
            let bucket = r.cohort.bucket(identity.as_bytes());
            let version = &r.versions[r.version_of_bucket(bucket)];
            let said = serde_json::json!({
                "name": name, "identity": identity, "flag": false, "version": version,
                "bucket": bucket, "revision": doc.revision,
            });
            if !output::one(output, "Which", &said)? {
                println!(
                    "{version} (bucket {bucket} of 10000, revision {})",
                    doc.revision
                );
            }
            Ok(())
        }
        Cmd::Proxies { output } => {
            let proxies: Vec<serde_json::Value> =
                client.call(Method::GET, "/v1/proxies", None).await?;
            if !output::list(output, "ProxyList", &proxies)? {
                println!("{}", serde_json::to_string_pretty(&proxies)?);
            }
            Ok(())
        }
        Cmd::Simulate(a) => simulate::simulate_cmd(a),
        Cmd::Webhooks { output } => {
            let v: serde_json::Value = client.call(Method::GET, "/v1/webhooks", None).await?;
            if !output::one(output, "WebhookStats", &serde_json::json!({ "urls": v }))? {
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Ok(())
        }
        Cmd::Login { file, provider_ca } => {
            let file = file
                .or_else(login::default_file)
                .context("no HOME to keep the token in: give --file")?;
            let controller = crate::tls::http_client(cli.ca.as_deref())?
                .timeout(std::time::Duration::from_secs(10))
                .build()?;
            let provider = crate::tls::http_client(provider_ca.as_deref())?
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            login::login(&cli.server, &controller, &provider, &file).await
        }
        Cmd::Logout { file } => {
            let file = file
                .or_else(login::default_file)
                .context("no HOME: give --file")?;
            login::logout(&file)
        }
        Cmd::Token {
            command:
                TokenCmd::Create {
                    name,
                    role,
                    teams,
                    file,
                },
        } => token::create(&name, role, &teams, &file),
        Cmd::Token {
            command: TokenCmd::Revoke { name, file },
        } => token::revoke(&name, &file),
        Cmd::Audit {
            command: AuditCmd::RotateKey { audit_key },
        } => {
            let ring = AuditKey::load(&audit_key)?;
            let (rotated, text) = ring.rotated();
            audit::write_private(&audit_key, text.as_bytes())
                .with_context(|| format!("{}", audit_key.display()))?;
            println!("{}", rotated.kid());
            eprintln!(
                "{}: new signing key {} in front of {}; restart the controllers (a fleet's all with this file) to sign with it",
                audit_key.display(),
                rotated.kid(),
                ring.kid()
            );
            Ok(())
        }
        Cmd::Audit {
            command: AuditCmd::NewKey,
        } => {
            println!("{}", hex::encode(rand::random::<[u8; 32]>()));
            Ok(())
        }
        Cmd::Audit {
            command: AuditCmd::Head { output },
        } => {
            let h: audit::Head = client.call(Method::GET, "/v1/audit/head", None).await?;
            if !output::one(output, "AuditHead", &h)? {
                println!("record {} {}", h.seq, h.hash);
            }
            Ok(())
        }
        Cmd::Audit {
            command:
                AuditCmd::Verify {
                    db,
                    audit_key,
                    output,
                },
        } => {
            let (n, signed) = match db {
                Some(path) => {
                    if !path.exists() {
                        bail!("no state file at {}", path.display());
                    }
                    let key_path = audit_key.unwrap_or_else(|| store::default_key_path(&path));
                    let key = AuditKey::load(&key_path)?;
                    let records = Store::open(&path, key.clone())?.audit(None)?;
                    let head = store::read_head(&store::head_path(&path))?;
                    let n = audit::verify_keyed(&records, &key, head.as_ref())?;
                    (n, audit::signers(&records, &key))
                }
                None => {
                    let v: serde_json::Value =
                        client.call(Method::GET, "/v1/audit/verify", None).await?;
                    (v["records"].as_u64().unwrap_or(0) as usize, Vec::new())
                }
            };
            let by: Vec<serde_json::Value> = signed
                .iter()
                .map(|(kid, from, to)| serde_json::json!({"key": kid, "from": from, "to": to}))
                .collect();
            let said = serde_json::json!({ "intact": true, "records": n, "signed_by": by });
            if !output::one(output, "AuditVerification", &said)? {
                println!("audit chain intact: {n} records");
                for (kid, from, to) in &signed {
                    println!("  records {from}–{to}: signed by key {kid}");
                }
            }
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

/// `dimmer sync` and `dimmer diff`: the directory read here, converged on
/// (or planned) by the controller in one call.
async fn sync(
    client: &Client,
    dir: &std::path::Path,
    prune: bool,
    dry_run: bool,
    output: Output,
) -> anyhow::Result<()> {
    let files = crate::sync::read(dir)?;
    let path = format!("/v1/sync?prune={prune}&dry_run={dry_run}");
    let report: SyncReport = client
        .call(
            Method::POST,
            &path,
            Some(Body::Json(serde_json::json!({ "files": files }))),
        )
        .await?;
    if output::one(output, "SyncReport", &report)? {
        return Ok(());
    }
    let (create, change, delete) = if dry_run {
        ("would create", "would change", "would delete")
    } else {
        ("created", "changed", "deleted")
    };
    for (what, names) in [
        (create, &report.created),
        (change, &report.changed),
        ("unchanged", &report.unchanged),
        (delete, &report.deleted),
        ("not in the directory, kept (--prune deletes)", &report.kept),
    ] {
        for n in names {
            println!("{n}: {what}");
        }
    }
    Ok(())
}
