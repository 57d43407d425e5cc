//! How the CLI shows rollouts: plain text once, or live bars with `--watch`.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::service::{Applied, FlagView, StatusView};
use crate::store::audit::AuditRecord;
use dimmer_decide::analysis::Evidence;

pub fn steps_line(v: &StatusView) -> String {
    v.steps
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i == v.step
                && !matches!(
                    v.phase,
                    dimmer_decide::engine::Phase::Completed | dimmer_decide::engine::Phase::Aborted
                )
            {
                format!("[{p}%]")
            } else {
                format!("{p}%")
            }
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

pub fn text(v: &StatusView) -> String {
    // An A/B/n apply or command: one block per arm.
    if !v.arms.is_empty() {
        return v.arms.iter().map(text).collect();
    }
    let applied = match v.applied {
        Some(Applied::Unchanged) => {
            "  apply: unchanged spec, nothing changed (use --restart to run it again)\n"
        }
        Some(Applied::Changed) => "  apply: spec changed, restarted at the first step\n",
        Some(Applied::Restarted) => "  apply: restarted at the first step, as asked\n",
        Some(Applied::Created) | None => "",
    };
    let stale = if v.proxies_stale.is_empty() {
        String::new()
    } else {
        let more = v.proxies_stale_count.saturating_sub(v.proxies_stale.len());
        format!(
            "\n  stale proxies (behind for over {}s, not waited for): {}{}",
            v.proxy_stale_after_ms / 1000,
            v.proxies_stale.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    };
    let (what, share) = if v.is_flag {
        let share = if v.flag_off {
            format!(
                "turned OFF: everyone gets {}; when on, variant {} for",
                v.stable, v.canary
            )
        } else {
            format!("variant {} for", v.canary)
        };
        (format!("flag {}", v.name), share)
    } else {
        let what = if v.arm_of.is_some() { "arm" } else { "canary" };
        (v.name.clone(), what.to_owned())
    };
    format!(
        "{applied}{what}: {label}, {stable} → {canary}\n  {share} {pct:.2}% of users; steps {steps}\n  proxies: {applied_n} of {live} live have applied revision {rev}{lag}{stale}\n  reason: {reason}\n  numbers: {ev}\n  audit head: record {seq} {hash}\n",
        label = v.label,
        stable = v.stable,
        canary = v.canary,
        pct = v.weight_bp as f64 / 100.0,
        steps = steps_line(v),
        applied_n = v.proxies_applied,
        live = v.proxies_live,
        rev = v.revision,
        lag = match (v.proxies_applying.is_empty(), v.proxies_lagging.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!(" (applying: {})", v.proxies_applying.join(", ")),
            (true, false) => format!(" (lagging: {})", v.proxies_lagging.join(", ")),
            (false, false) => format!(
                " (lagging: {}; applying: {})",
                v.proxies_lagging.join(", "),
                v.proxies_applying.join(", ")
            ),
        },
        reason = v.reason,
        ev = v.evidence_summary,
        seq = v.audit_head.seq,
        hash = v.audit_head.hash.get(..16).unwrap_or(&v.audit_head.hash),
    )
}

pub fn history(records: &[AuditRecord]) -> String {
    let mut out = String::new();
    // An A/B/n's history holds its arms': each line says whose it is.
    let several = records.iter().any(|r| r.rollout != records[0].rollout);
    for r in records {
        if several {
            out.push_str(&format!("     {}:\n", r.rollout));
        }
        let at = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.at_ms.max(0) as u64),
        );
        out.push_str(&format!(
            "{seq:>4} {at} {actor:<12} {action:<8} {from} → {to}\n       why: {reason}\n",
            seq = r.seq,
            actor = r.actor,
            action = r.action,
            from = r.from,
            to = r.to,
            reason = r.reason,
        ));
        let evidence: Option<Evidence> = serde_json::from_value(r.evidence.clone()).ok();
        if let Some(ev) = evidence.filter(|e| e.canary_requests > 0.0 || e.baseline_requests > 0.0)
        {
            out.push_str(&format!("       numbers: {}\n", ev.summary()));
        }
    }
    out
}

/// Live bars, one per rollout, redrawn on each [`Watch::update`].
pub struct Watch {
    multi: MultiProgress,
    bars: Vec<(String, ProgressBar)>,
}

impl Watch {
    pub fn new() -> Watch {
        Watch {
            multi: MultiProgress::new(),
            bars: Vec::new(),
        }
    }

    pub fn update(&mut self, views: &[StatusView]) {
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:30.cyan/blue}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        for v in views {
            let bar = match self.bars.iter().find(|(n, _)| *n == v.name) {
                Some((_, b)) => b.clone(),
                None => {
                    let b = self.multi.add(ProgressBar::new(10_000));
                    b.set_style(style.clone());
                    b.set_prefix(v.name.clone());
                    self.bars.push((v.name.clone(), b.clone()));
                    b
                }
            };
            bar.set_position(u64::from(v.weight_bp));
            bar.set_message(format!(
                "{:>6.2}% {} | {} | {}/{} proxies | {}",
                v.weight_bp as f64 / 100.0,
                v.label,
                v.reason,
                v.proxies_applied,
                v.proxies_live,
                v.evidence_summary
            ));
        }
    }

    pub fn finish(&self) {
        for (_, b) in &self.bars {
            b.abandon();
        }
    }
}

impl Default for Watch {
    fn default() -> Self {
        Self::new()
    }
}

/// `dimmer flags`: one block per flag.
pub fn flags(flags: &[FlagView], now_ms: u64) -> String {
    use std::fmt::Write;
    if flags.is_empty() {
        return "no flags\n".into();
    }
    let mut out = String::new();
    for f in flags {
        let age_days = now_ms.saturating_sub(f.created_ms) / (24 * 3600 * 1000);
        let evaluations = match f.evaluations {
            None => "unknown (metrics unreadable)".to_owned(),
            Some(n) if f.evaluations_window_ms == 0 => {
                format!("{n:.0} since the proxies started")
            }
            Some(n) => format!(
                "{n:.0} in the last {}",
                humantime::format_duration(std::time::Duration::from_secs(
                    f.evaluations_window_ms / 1000
                ))
            ),
        };
        let _ = writeln!(
            out,
            "{key}: {state}, {label}; {default} → {variant} at {pct:.2}%",
            key = f.key,
            state = if f.on { "on" } else { "OFF" },
            label = f.label,
            default = f.default_variant,
            variant = f.variant,
            pct = f.weight_bp as f64 / 100.0,
        );
        let _ = writeln!(
            out,
            "  owner {owner}, {lifecycle:?}{expires}, {age_days} days old",
            owner = f.owner,
            lifecycle = f.lifecycle,
            expires = f
                .expires
                .as_ref()
                .map_or(String::new(), |d| format!(", expires {d}")),
        );
        let _ = writeln!(
            out,
            "  evaluations: {evaluations}; toggles in the last 7 days: {}",
            f.toggles_7d
        );
        if !f.marks.is_empty() {
            let _ = writeln!(out, "  ! {}", f.marks.join(", "));
        }
    }
    out
}
