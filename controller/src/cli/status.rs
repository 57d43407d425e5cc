//! `dimmer status`, once, live, or waited on with an exit code a pipeline
//! can trust (`--wait`, docs/pipeline.md).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::service::StatusView;

use super::client::{seg, Client, ClientError};
use super::exit::{Code, Exited};
use super::output::{self, Output};
use super::render;

/// What to show, and whether to wait for the outcome.
pub struct Ask {
    pub name: Option<String>,
    pub watch: bool,
    pub until_done: bool,
    pub wait: bool,
    pub timeout: Option<Duration>,
    pub output: Output,
}

/// How long the controller may be unreachable during a wait before the
/// wait ends with [`Code::Unreachable`] (a failover takes seconds).
const UNREACHABLE_FOR: Duration = Duration::from_secs(20);

/// A rollout in one line, for a job's log or a pipe.
fn line(v: &StatusView) -> String {
    format!(
        "{} {:.2}% {} | {}",
        v.name,
        v.weight_bp as f64 / 100.0,
        v.label,
        v.reason
    )
}

/// Decided, and every live proxy runs the final weights.
fn settled(v: &StatusView) -> bool {
    v.phase.is_final() && v.proxies_applied == v.proxies_live
}

/// Where a rollout stands and on which numbers, said on the way out.
fn said(v: &StatusView) -> String {
    format!(
        "{}: {} — {}\n  evidence: {}",
        v.name, v.label, v.reason, v.evidence_summary
    )
}

async fn fetch(client: &Client, one: Option<&str>) -> Result<Vec<StatusView>, ClientError> {
    match one {
        Some(path) => client
            .call::<StatusView>(Method::GET, path, None)
            .await
            .map(|v| vec![v]),
        None => client.call(Method::GET, "/v1/rollouts", None).await,
    }
}

pub async fn status(client: &Client, ask: Ask) -> anyhow::Result<()> {
    let one = ask
        .name
        .as_deref()
        .map(|n| seg(n).map(|s| format!("/v1/rollouts/{s}")))
        .transpose()?;
    if ask.wait {
        let names: Vec<String> = match &ask.name {
            Some(n) => vec![n.clone()],
            None => fetch(client, None)
                .await?
                .into_iter()
                .filter(|v| !v.phase.is_final())
                .map(|v| v.name)
                .collect(),
        };
        return wait(client, &names, ask.timeout).await;
    }
    if !ask.watch {
        let views = fetch(client, one.as_deref()).await?;
        if output::list(ask.output, "RolloutStatusList", &views)? {
            return Ok(());
        }
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
    let deadline = ask.timeout.map(|t| Instant::now() + t);
    loop {
        let views = fetch(client, one.as_deref()).await?;
        if live {
            bars.update(&views);
        } else {
            // Not a terminal: print a rollout's line whenever it changes.
            let lines: Vec<String> = views.iter().map(line).collect();
            for line in lines.iter().filter(|l| !last_printed.contains(l)) {
                println!("{line}");
            }
            last_printed = lines;
        }
        if ask.until_done && !views.is_empty() {
            let settled =
                |v: &StatusView| v.phase.is_final() && v.proxies_applied == v.proxies_live;
            if views.iter().all(settled) {
                bars.finish();
                for v in &views {
                    print!("{}", render::text(v));
                }
                return outcome(&views).map_or(Ok(()), |e| Err(e.into()));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                bars.finish();
                return Err(timed_out(&views, ask.timeout).into());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits on `names` until each is done, and ends with their outcome: the
/// first abort, else an approval gate, else the timeout; completed (every
/// live proxy applied) is success. The reason and evidence are printed on
/// the way out.
pub async fn wait(
    client: &Client,
    names: &[String],
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let paths: Vec<String> = names
        .iter()
        .map(|n| seg(n).map(|s| format!("/v1/rollouts/{s}")))
        .collect::<anyhow::Result<_>>()?;
    let mut unreachable_since: Option<Instant> = None;
    // Each rollout's last line printed.
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    loop {
        let mut views = Vec::with_capacity(paths.len());
        let mut lost = None;
        for p in &paths {
            match client.call::<StatusView>(Method::GET, p, None).await {
                Ok(v) => views.push(v),
                Err(e @ ClientError::Unreachable { .. }) => {
                    lost = Some(e);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(e) = lost {
            let since = *unreachable_since.get_or_insert_with(Instant::now);
            let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
            if since.elapsed() >= UNREACHABLE_FOR || out_of_time {
                return Err(e.into());
            }
        } else {
            unreachable_since = None;
            // One line whenever a rollout's state changes, for the job's log.
            for v in &views {
                let now = line(v);
                if last.get(&v.name) != Some(&now) {
                    println!("{now}");
                    last.insert(v.name.clone(), now);
                }
            }
            if let Some(e) = outcome(&views) {
                return Err(e.into());
            }
            if views.iter().all(settled) {
                for v in &views {
                    print!("{}", render::text(v));
                }
                return Ok(());
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(timed_out(&views, timeout).into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The first abort, else the first approval gate: what ends a wait early.
fn outcome(views: &[StatusView]) -> Option<Exited> {
    if let Some(v) = views
        .iter()
        .find(|v| v.phase == dimmer_decide::engine::Phase::Aborted)
    {
        return Some(Exited::new(Code::Aborted, format!("aborted: {}", said(v))));
    }
    views.iter().find(|v| v.awaiting_approval).map(|v| {
        Exited::new(
            Code::AwaitingApproval,
            format!(
                "waiting for approval (dimmer promote {}): {}",
                v.name,
                said(v)
            ),
        )
    })
}

fn timed_out(views: &[StatusView], timeout: Option<Duration>) -> Exited {
    let left: Vec<String> = views
        .iter()
        .filter(|v| !v.phase.is_final())
        .map(said)
        .collect();
    Exited::new(
        Code::TimedOut,
        format!(
            "not done within {}: {}",
            timeout.map_or("the timeout".into(), |t| humantime::format_duration(t)
                .to_string()),
            left.join("\n")
        ),
    )
}
