//! `GET /metrics`: the controller's own state in Prometheus text format,
//! rendered from plain inputs so it is tested without a server. Rollout
//! names are label-safe by validation; proxy ids and URLs are escaped.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::service::{Rollback, SourceHealth, StatusView};
use crate::store::audit::AuditRecord;
use dimmer_decide::engine::Phase;

pub struct Inputs<'a> {
    pub now_ms: u64,
    pub rollouts: &'a [StatusView],
    pub records: &'a [AuditRecord],
    pub rollbacks: &'a BTreeMap<String, Rollback>,
    /// `(id, applied revision, last poll)` of every proxy known.
    pub proxies: &'a [(String, u64, u64)],
    pub stale_proxies: usize,
    pub revision: u64,
    pub audit_head: (i64, &'a str),
    pub source: &'a SourceHealth,
    /// `(url, delivered, retried, failed, dropped)`.
    pub webhooks: &'a [(String, u64, u64, u64, u64)],
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `analysis` for the controller's own decisions, `person` for anyone's.
pub fn actor_kind(actor: &str) -> &'static str {
    if actor == "controller" {
        "analysis"
    } else {
        "person"
    }
}

pub fn render(i: &Inputs<'_>) -> String {
    let mut out = String::new();
    let o = &mut out;
    family(
        o,
        "dimmer_audit_head_seq",
        "gauge",
        "Sequence number of the newest audit record.",
    );
    let _ = writeln!(
        o,
        "dimmer_audit_head_seq{{hash=\"{}\"}} {}",
        escape(i.audit_head.1),
        i.audit_head.0
    );
    family(
        o,
        "dimmer_config_revision",
        "gauge",
        "Revision of the config the proxies are served.",
    );
    let _ = writeln!(o, "dimmer_config_revision {}", i.revision);
    family(
        o,
        "dimmer_proxies_known",
        "gauge",
        "Proxies that have polled and are remembered.",
    );
    let _ = writeln!(o, "dimmer_proxies_known {}", i.proxies.len());
    family(
        o,
        "dimmer_proxies_stale",
        "gauge",
        "Live proxies behind for longer than --proxy-stale-after.",
    );
    let _ = writeln!(o, "dimmer_proxies_stale {}", i.stale_proxies);
    family(
        o,
        "dimmer_proxy_revision_behind",
        "gauge",
        "Revisions between the config served and the one the proxy has applied.",
    );
    for (id, rev, _) in i.proxies {
        let _ = writeln!(
            o,
            "dimmer_proxy_revision_behind{{proxy=\"{}\"}} {}",
            escape(id),
            i.revision.saturating_sub(*rev)
        );
    }
    family(
        o,
        "dimmer_proxy_last_poll_age_seconds",
        "gauge",
        "Seconds since the proxy last polled.",
    );
    for (id, _, seen) in i.proxies {
        let age = i.now_ms.saturating_sub(*seen) as f64 / 1000.0;
        let _ = writeln!(
            o,
            "dimmer_proxy_last_poll_age_seconds{{proxy=\"{}\"}} {age}",
            escape(id)
        );
    }
    family(
        o,
        "dimmer_metrics_source_up",
        "gauge",
        "1 if the last read of the metrics source succeeded.",
    );
    let up = i.source.last_error.is_none() && i.source.last_ok_ms.is_some();
    let _ = writeln!(o, "dimmer_metrics_source_up {}", u8::from(up));
    family(
        o,
        "dimmer_metrics_source_failures_total",
        "counter",
        "Reads of the metrics source that failed or timed out.",
    );
    let _ = writeln!(
        o,
        "dimmer_metrics_source_failures_total {}",
        i.source.failures
    );
    family(
        o,
        "dimmer_webhook_deliveries_total",
        "counter",
        "Webhook deliveries by result.",
    );
    for (url, delivered, retried, failed, dropped) in i.webhooks {
        for (result, n) in [
            ("delivered", delivered),
            ("retried", retried),
            ("failed", failed),
            ("dropped", dropped),
        ] {
            let _ = writeln!(
                o,
                "dimmer_webhook_deliveries_total{{url=\"{}\",result=\"{result}\"}} {n}",
                escape(url)
            );
        }
    }
    rollouts(o, i);
    decisions(o, i);
    rollbacks(o, i);
    out
}

/// One family with a sample per rollout: `sample` gives each rollout's
/// extra labels (after `rollout`) and values; none, no sample.
fn per_rollout(
    o: &mut String,
    i: &Inputs<'_>,
    (name, kind, help): (&str, &str, &str),
    sample: impl Fn(&StatusView) -> Vec<(String, String)>,
) {
    family(o, name, kind, help);
    for v in i.rollouts {
        for (labels, value) in sample(v) {
            let _ = writeln!(o, "{name}{{rollout=\"{}\"{labels}}} {value}", v.name);
        }
    }
}

fn rollouts(o: &mut String, i: &Inputs<'_>) {
    per_rollout(
        o,
        i,
        (
            "dimmer_rollout_info",
            "gauge",
            "Every rollout and flag the controller holds: its kind, stable and canary.",
        ),
        |v| {
            let kind = if v.is_flag {
                "flag"
            } else if v.arm_of.is_some() {
                "arm"
            } else {
                "rollout"
            };
            vec![(
                format!(
                    ",kind=\"{kind}\",stable=\"{}\",canary=\"{}\"",
                    v.stable, v.canary
                ),
                "1".into(),
            )]
        },
    );
    per_rollout(
        o,
        i,
        (
            "dimmer_rollout_phase",
            "gauge",
            "1 for the rollout's phase, 0 for the others.",
        ),
        |v| {
            [
                Phase::Progressing,
                Phase::Paused,
                Phase::Completed,
                Phase::Aborted,
            ]
            .iter()
            .map(|p| {
                (
                    format!(",phase=\"{}\"", p.name()),
                    u8::from(v.phase == *p).to_string(),
                )
            })
            .collect()
        },
    );
    per_rollout(
        o,
        i,
        (
            "dimmer_rollout_weight_bp",
            "gauge",
            "The canary's weight, in basis points.",
        ),
        |v| {
            vec![(
                format!(",phase=\"{}\"", v.phase.name()),
                v.weight_bp.to_string(),
            )]
        },
    );
    per_rollout(
        o,
        i,
        (
            "dimmer_rollout_step",
            "gauge",
            "The step being held, from 1.",
        ),
        |v| {
            vec![(
                format!(",steps=\"{}\"", v.steps.len()),
                (v.step + 1).to_string(),
            )]
        },
    );
    per_rollout(
        o,
        i,
        (
            "dimmer_rollout_step_age_seconds",
            "gauge",
            "Seconds since the current step began.",
        ),
        |v| {
            let age = i.now_ms.saturating_sub(v.step_started_ms) as f64 / 1000.0;
            vec![(String::new(), age.to_string())]
        },
    );
    per_rollout(
        o,
        i,
        (
            "dimmer_rollout_safety_bound",
            "gauge",
            "Evidence of safety: the bound on the canary's harm per comparative test, in tolerances (at most 1 lets a step go up; +Inf: nothing ruled out yet).",
        ),
        |v| {
            v.evidence
                .safety
                .iter()
                .map(|r| {
                    (
                        format!(",test=\"{}\"", r.test),
                        r.bound.map_or("+Inf".into(), |b| b.to_string()),
                    )
                })
                .collect()
        },
    );
    per_rollout(
        o,
        i,
        (
            "dimmer_rollout_inconclusive",
            "gauge",
            "1 while a step is held past its max_duration without evidence of safety.",
        ),
        |v| {
            let held = v.phase == Phase::Progressing
                && v.reason.starts_with(dimmer_decide::engine::INCONCLUSIVE);
            vec![(String::new(), u8::from(held).to_string())]
        },
    );
    per_rollout(
        o,
        i,
        (
            "dimmer_test_evalue",
            "gauge",
            "Each sequential test's e-value now (errors, latency, share).",
        ),
        |v| {
            let e = &v.evidence;
            [
                ("errors", e.e_errors),
                ("latency", e.e_latency),
                ("share", e.e_share),
            ]
            .iter()
            .filter_map(|(test, x)| Some((format!(",test=\"{test}\""), x.as_ref()?.to_string())))
            .collect()
        },
    );
    per_rollout(
        o,
        i,
        (
            "dimmer_test_boundary",
            "gauge",
            "The e-value at which a sequential test decides (1/alpha).",
        ),
        |v| {
            v.evidence
                .e_threshold
                .map(|th| (String::new(), th.to_string()))
                .into_iter()
                .collect()
        },
    );
    per_rollout(
        o,
        i,
        (
            "dimmer_proxies_applied",
            "gauge",
            "Live proxies that have applied the rollout's current revision.",
        ),
        |v| vec![(String::new(), v.proxies_applied.to_string())],
    );
    per_rollout(
        o,
        i,
        (
            "dimmer_proxies_live",
            "gauge",
            "Live proxies, as the rollout's status counts them.",
        ),
        |v| vec![(String::new(), v.proxies_live.to_string())],
    );
}

fn decisions(o: &mut String, i: &Inputs<'_>) {
    let mut by: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    let mut finished: BTreeMap<&str, u64> = BTreeMap::from([("completed", 0), ("aborted", 0)]);
    let mut steps: BTreeMap<&str, u64> = BTreeMap::from([("analysis", 0), ("person", 0)]);
    for r in i.records {
        let who = actor_kind(&r.actor);
        *by.entry((&r.rollout, &r.action, who)).or_default() += 1;
        for end in ["completed", "aborted"] {
            if r.to.starts_with(end) && !r.from.starts_with(end) {
                *finished.entry(end).or_default() += 1;
            }
        }
        // A step up is the analysis's when the controller took it, a
        // person's when it was a promote.
        if r.action == "step" || r.action == "complete" || r.action == "promote" {
            *steps.entry(who).or_default() += 1;
        }
    }
    family(
        o,
        "dimmer_decisions_total",
        "counter",
        "Audited decisions by rollout, action and who took them (analysis or person).",
    );
    for ((rollout, action, who), n) in &by {
        let _ = writeln!(o, "dimmer_decisions_total{{rollout=\"{rollout}\",action=\"{}\",actor_kind=\"{who}\"}} {n}", escape(action));
    }
    family(
        o,
        "dimmer_rollouts_finished_total",
        "counter",
        "Rollouts and flags that completed or were aborted.",
    );
    for (outcome, n) in &finished {
        let _ = writeln!(
            o,
            "dimmer_rollouts_finished_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    family(
        o,
        "dimmer_steps_taken_total",
        "counter",
        "Steps up and completions, by who took them: automation's share is analysis over all.",
    );
    for (who, n) in &steps {
        let _ = writeln!(o, "dimmer_steps_taken_total{{actor_kind=\"{who}\"}} {n}");
    }
}

fn rollbacks(o: &mut String, i: &Inputs<'_>) {
    family(
        o,
        "dimmer_rollback_seconds",
        "gauge",
        "Last abort: seconds from the decision to the last live proxy applying it (to 0.25 s).",
    );
    for (name, r) in i.rollbacks {
        if let Some(done) = r.applied_ms {
            let s = done.saturating_sub(r.decided_ms) as f64 / 1000.0;
            let _ = writeln!(
                o,
                "dimmer_rollback_seconds{{rollout=\"{name}\",actor_kind=\"{}\"}} {s}",
                if r.by_person { "person" } else { "analysis" }
            );
        }
    }
    family(
        o,
        "dimmer_detection_lag_seconds",
        "gauge",
        "Last abort: seconds from the start of the step that went bad to the abort.",
    );
    for (name, r) in i.rollbacks {
        let s = r.detection_lag_ms as f64 / 1000.0;
        let _ = writeln!(
            o,
            "dimmer_detection_lag_seconds{{rollout=\"{name}\",actor_kind=\"{}\"}} {s}",
            if r.by_person { "person" } else { "analysis" }
        );
    }
}
