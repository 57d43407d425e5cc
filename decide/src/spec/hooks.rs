//! The spec's `hooks`: the team's own checks in the rollout's path. A gate
//! (`pre-step`, `confirm-promotion`) must pass before the canary's share
//! grows, and holds the rollout while it does not; a `rollout` hook runs
//! once each step and aborts the rollout if it fails; `post-rollout` and
//! `on-abort` tell. Each is an HTTP call, or a built-in `probe` that sends
//! requests through Envoy pinned to the canary by the spec's override.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{check_name, in_range, invalid, SpecError};
use super::http_syntax::is_http_url_with_host;

pub const MAX_HOOKS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookKind {
    /// Before every step up: must pass, else the rollout holds.
    PreStep,
    /// Before the canary takes everyone: must pass, else the rollout holds.
    ConfirmPromotion,
    /// Once each step, from its start: a failure aborts the rollout.
    Rollout,
    /// After the rollout completes: told, never waited for.
    PostRollout,
    /// After the rollout is aborted: told, never waited for.
    OnAbort,
}

impl HookKind {
    pub fn name(self) -> &'static str {
        match self {
            HookKind::PreStep => "pre-step",
            HookKind::ConfirmPromotion => "confirm-promotion",
            HookKind::Rollout => "rollout",
            HookKind::PostRollout => "post-rollout",
            HookKind::OnAbort => "on-abort",
        }
    }

    /// Whether the rollout waits on it (a gate or a check), or only tells it.
    pub fn checks(self) -> bool {
        !matches!(self, HookKind::PostRollout | HookKind::OnAbort)
    }
}

/// Requests sent through Envoy to the canary, judged on their status
/// class and their slowest latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// An address of the Envoy that routes the rollout, with the path.
    pub url: String,
    #[serde(default = "default_requests")]
    pub requests: u32,
    /// The status class every answer must have: `2xx` (default), `3xx`, `4xx`.
    #[serde(default = "default_status")]
    pub status: String,
    /// Every answer within this many milliseconds.
    pub max_latency_ms: Option<f64>,
}

fn default_requests() -> u32 {
    10
}
fn default_status() -> String {
    "2xx".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    pub name: String,
    pub kind: HookKind,
    /// An HTTP hook: POSTed the rollout's context as JSON; any 2xx passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// Each try's limit.
    #[serde(default = "default_timeout", with = "super::duration::timeout")]
    pub timeout: Duration,
    /// Tries after the first, a second apart, before it counts as failed.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retries() -> u32 {
    2
}

/// The request every hook call and probe sends to reach the canary: the
/// first override that sends people there (header or cookie, and a value).
#[derive(Debug, Clone, PartialEq)]
pub struct PinToCanary {
    pub header: String,
    pub value: String,
}

/// `hooks`, one by one and together. `pin`: how a probe reaches the canary,
/// if any override sends people there.
pub fn validate_hooks(hooks: &[Hook], pin: Option<&PinToCanary>) -> Result<(), SpecError> {
    if hooks.len() > MAX_HOOKS {
        return Err(invalid("hooks", format!("at most {MAX_HOOKS}")));
    }
    for (i, h) in hooks.iter().enumerate() {
        let at = |f: &str| format!("hooks[{i}].{f}");
        check_name(&h.name).map_err(|e| invalid(at("name"), e.to_string()))?;
        if hooks[..i].iter().any(|o| o.name == h.name) {
            return Err(invalid(at("name"), format!("{:?} is named twice", h.name)));
        }
        if h.timeout < Duration::from_millis(100) || h.timeout > Duration::from_secs(600) {
            return Err(invalid(
                at("timeout"),
                "must be from 100ms to 10m: a hook's answer is waited for, never forever",
            ));
        }
        if h.retries > 10 {
            return Err(invalid(at("retries"), "at most 10"));
        }
        let http_url = |u: &str| u.len() <= 2048 && is_http_url_with_host(u);
        match (&h.url, &h.probe) {
            (Some(u), None) if http_url(u) => {}
            (Some(u), None) => {
                return Err(invalid(at("url"), format!("{u:?} is not an http(s) URL")))
            }
            (None, Some(p)) => {
                if !h.kind.checks() {
                    return Err(invalid(
                        at("probe"),
                        "a probe checks the canary: it gates (pre-step, confirm-promotion) or checks (rollout), it cannot only tell",
                    ));
                }
                if !http_url(&p.url) {
                    return Err(invalid(
                        at("probe.url"),
                        format!("{:?} is not an http(s) URL of the Envoy", p.url),
                    ));
                }
                if p.requests == 0 || p.requests > 1000 {
                    return Err(invalid(at("probe.requests"), "must be from 1 to 1000"));
                }
                if !["2xx", "3xx", "4xx"].contains(&p.status.as_str()) {
                    return Err(invalid(at("probe.status"), "must be 2xx, 3xx or 4xx"));
                }
                let Some(max) = p.max_latency_ms else {
                    return Err(invalid(
                        at("probe.max_latency_ms"),
                        "is required: a probe judges the status and the latency",
                    ));
                };
                in_range(
                    max,
                    1.0,
                    600_000.0,
                    &at("probe.max_latency_ms"),
                    "from 1 to 600000",
                )?;
                if pin.is_none() {
                    return Err(invalid(
                        at("probe"),
                        "a probe reaches the canary through an override: add one to `overrides` that sends a header or cookie value to the canary",
                    ));
                }
            }
            _ => {
                return Err(invalid(
                    format!("hooks[{i}]"),
                    "takes `url` (an HTTP hook) or `probe`, one of them",
                ))
            }
        }
    }
    Ok(())
}

/// What a hook said, kept with the decision it let through (or stopped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookResult {
    pub name: String,
    pub kind: HookKind,
    pub passed: bool,
    /// "HTTP 200 in 12 ms", "10 of 10 2xx, slowest 8 ms", or why not.
    pub detail: String,
}
