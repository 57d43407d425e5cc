//! `dimmer status`, once or live.

use std::io::IsTerminal;
use std::time::Duration;

use super::client::Client;
use super::render;
use crate::service::StatusView;
use reqwest::Method;

use super::client::seg;

pub async fn status(
    client: &Client,
    name: Option<String>,
    watch: bool,
    until_done: bool,
) -> anyhow::Result<()> {
    let one = name
        .as_deref()
        .map(|n| seg(n).map(|s| format!("/v1/rollouts/{s}")))
        .transpose()?;
    let fetch = || async {
        match &one {
            Some(path) => client
                .call::<StatusView>(Method::GET, path, None)
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
