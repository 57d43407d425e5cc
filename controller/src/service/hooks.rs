//! Running the spec's hooks: each in a task of its own, under its own
//! timeout and retries, its result kept for the looks that follow. A look
//! never waits on a hook: a gate not yet passed holds the step (and says
//! which), a `rollout` check that failed aborts, a hung hook costs only its
//! own timeout. Results live in memory: after a restart, gates run again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dimmer_decide::engine::{gates, RolloutState};
use dimmer_decide::spec::{Hook, HookKind, HookResult, PinToCanary};

/// A failed gate is tried again this long after its last try ended.
const RETRY_GATE_AFTER_MS: u64 = 10_000;

/// Which run: rollout, revision, step, hook.
type Key = (String, u64, usize, String);

#[derive(Debug, Clone)]
enum Run {
    Running,
    Done {
        passed: bool,
        detail: String,
        at_ms: u64,
    },
}

/// Every hook run of this controller, by rollout, revision, step and hook.
#[derive(Default, Clone)]
pub struct HookRuns {
    runs: Arc<Mutex<BTreeMap<Key, Run>>>,
}

fn key(state: &RolloutState, hook: &Hook) -> Key {
    (
        state.spec.name.clone(),
        state.revision,
        state.step,
        hook.name.clone(),
    )
}

/// The body every HTTP hook is POSTed: the rollout's context, and how to
/// reach the canary through Envoy.
fn context(state: &RolloutState, hook: &Hook, pin: Option<&PinToCanary>) -> serde_json::Value {
    serde_json::json!({
        "rollout": state.spec.name,
        "hook": hook.name,
        "kind": hook.kind.name(),
        "phase": state.phase.name(),
        "step": state.step + 1,
        "steps": state.spec.steps.len(),
        "weight_bp": state.weight_bp,
        "stable": state.spec.stable,
        "canary": state.spec.canary,
        "revision": state.revision,
        "reach_canary": pin.map(|p| serde_json::json!({"header": p.header, "value": p.value})),
    })
}

/// One try of an HTTP hook: any 2xx within the timeout passes.
async fn call(
    http: &reqwest::Client,
    hook: &Hook,
    url: &str,
    body: &serde_json::Value,
) -> Result<String, String> {
    let started = Instant::now();
    let sent = http.post(url).timeout(hook.timeout).json(body).send().await;
    let ms = started.elapsed().as_millis();
    match sent {
        Ok(r) if r.status().is_success() => Ok(format!("HTTP {} in {ms} ms", r.status().as_u16())),
        Ok(r) => Err(format!("answered HTTP {} in {ms} ms", r.status().as_u16())),
        Err(e) if e.is_timeout() => Err(format!(
            "did not answer within {}",
            humantime::format_duration(hook.timeout)
        )),
        Err(e) => Err(format!("cannot reach {url}: {e}")),
    }
}

/// One try of a probe: every request through Envoy to the canary answers
/// in the expected class and within the latency bound.
async fn probe(
    http: &reqwest::Client,
    hook: &Hook,
    pin: Option<&PinToCanary>,
) -> Result<String, String> {
    let Some(p) = &hook.probe else {
        return Err("no probe".into());
    };
    let Some(pin) = pin else {
        return Err("no override sends anyone to the canary".into());
    };
    let class = p
        .status
        .chars()
        .next()
        .and_then(|c| c.to_digit(10))
        .unwrap_or(2) as u16;
    let max = p.max_latency_ms.unwrap_or(f64::MAX);
    let (mut wrong, mut slowest, mut first_wrong) = (0u32, 0f64, None);
    for _ in 0..p.requests {
        let started = Instant::now();
        let r = http
            .get(&p.url)
            .header(pin.header.as_str(), pin.value.as_str())
            .timeout(hook.timeout)
            .send()
            .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        slowest = slowest.max(ms);
        match r {
            Ok(r) if r.status().as_u16() / 100 == class => {}
            Ok(r) => {
                wrong += 1;
                first_wrong.get_or_insert(format!("HTTP {}", r.status().as_u16()));
            }
            Err(e) => {
                wrong += 1;
                first_wrong.get_or_insert(if e.is_timeout() {
                    format!(
                        "no answer within {}",
                        humantime::format_duration(hook.timeout)
                    )
                } else {
                    format!("cannot reach {}: {e}", p.url)
                });
            }
        }
    }
    let n = p.requests;
    if wrong > 0 {
        return Err(format!(
            "{wrong} of {n} requests to the canary were not {} (first: {})",
            p.status,
            first_wrong.unwrap_or_default()
        ));
    }
    if slowest > max {
        return Err(format!(
            "{n} of {n} {}, but the slowest took {slowest:.0} ms > {max} ms",
            p.status
        ));
    }
    Ok(format!(
        "{n} of {n} {}, slowest {slowest:.0} ms (≤ {max} ms)",
        p.status
    ))
}

/// A hook with its retries, a second apart.
async fn run(
    http: reqwest::Client,
    hook: Hook,
    body: serde_json::Value,
    pin: Option<PinToCanary>,
) -> Result<String, String> {
    let mut last = String::new();
    for attempt in 0..=hook.retries {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let outcome = match &hook.url {
            Some(url) => call(&http, &hook, url, &body).await,
            None => probe(&http, &hook, pin.as_ref()).await,
        };
        match outcome {
            Ok(detail) => return Ok(detail),
            Err(e) => last = e,
        }
    }
    Err(if hook.retries > 0 {
        format!("{last} (after {} tries)", hook.retries + 1)
    } else {
        last
    })
}

impl HookRuns {
    fn start(&self, state: &RolloutState, hook: &Hook, http: &reqwest::Client, now_ms: u64) {
        let k = key(state, hook);
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k.clone(), Run::Running);
        let pin = state.spec.pin_to_canary();
        let body = context(state, hook, pin.as_ref());
        let (runs, hook, http) = (Arc::clone(&self.runs), hook.clone(), http.clone());
        tokio::spawn(async move {
            let name = hook.name.clone();
            let outcome = run(http, hook, body, pin).await;
            let at_ms = now_ms.max(super::clock::now_ms());
            let (passed, detail) = match outcome {
                Ok(d) => (true, d),
                Err(d) => (false, d),
            };
            tracing::info!(hook = %name, passed, %detail, "hook");
            runs.lock().unwrap_or_else(|e| e.into_inner()).insert(
                k,
                Run::Done {
                    passed,
                    detail,
                    at_ms,
                },
            );
        });
    }

    fn get(&self, k: &Key) -> Option<Run> {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(k)
            .cloned()
    }

    /// What the gates of `state`'s next step say: `None` when every one has
    /// passed (or there are none). Gates start once the step's pause is over,
    /// and a failed one is tried again after a while.
    pub fn blocking(
        &self,
        state: &RolloutState,
        http: &reqwest::Client,
        now_ms: u64,
    ) -> Option<String> {
        let gates = gates::gates(state);
        if gates.is_empty() {
            return None;
        }
        let pause = state
            .spec
            .steps
            .get(state.step)
            .map_or(0, |s| s.pause.as_millis() as u64);
        if now_ms.saturating_sub(state.step_started_ms) < pause {
            return None;
        }
        let mut waiting = Vec::new();
        for hook in gates {
            let k = key(state, hook);
            let what = format!("hook {} ({})", hook.name, hook.kind.name());
            match self.get(&k) {
                None => {
                    self.start(state, hook, http, now_ms);
                    waiting.push(format!("{what} is running"));
                }
                Some(Run::Running) => waiting.push(format!("{what} is running")),
                Some(Run::Done { passed: true, .. }) => {}
                Some(Run::Done {
                    passed: false,
                    detail,
                    at_ms,
                }) => {
                    if now_ms.saturating_sub(at_ms) >= RETRY_GATE_AFTER_MS {
                        self.start(state, hook, http, now_ms);
                    }
                    waiting.push(format!(
                        "{what} failed: {detail}; trying again every {}s",
                        RETRY_GATE_AFTER_MS / 1000
                    ));
                }
            }
        }
        (!waiting.is_empty()).then(|| format!("waiting for {}", waiting.join("; ")))
    }

    /// Starts the `rollout` checks of `state`'s step; the reason to abort
    /// if one has failed.
    pub fn failed_check(
        &self,
        state: &RolloutState,
        http: &reqwest::Client,
        now_ms: u64,
    ) -> Option<String> {
        for hook in gates::checks(state) {
            match self.get(&key(state, hook)) {
                None => self.start(state, hook, http, now_ms),
                Some(Run::Done {
                    passed: false,
                    detail,
                    ..
                }) => {
                    return Some(format!(
                        "hook {} (rollout) failed at {}%: {detail}",
                        hook.name,
                        state.weight_bp as f64 / 100.0
                    ))
                }
                Some(_) => {}
            }
        }
        None
    }

    /// What the hooks of `state`'s step said, for the decision's evidence.
    pub fn results(&self, state: &RolloutState) -> Vec<HookResult> {
        state
            .spec
            .hooks
            .iter()
            .filter(|h| h.kind.checks())
            .filter_map(|h| match self.get(&key(state, h))? {
                Run::Done { passed, detail, .. } => Some(HookResult {
                    name: h.name.clone(),
                    kind: h.kind,
                    passed,
                    detail,
                }),
                Run::Running => None,
            })
            .collect()
    }

    /// Tells the `post-rollout` (on `complete`) or `on-abort` (on `abort`)
    /// hooks, each in its own task; nothing waits for them.
    pub fn tell(&self, state: &RolloutState, action: &str, http: &reqwest::Client) {
        let kind = match action {
            "complete" => HookKind::PostRollout,
            "abort" => HookKind::OnAbort,
            _ => return,
        };
        for hook in state.spec.hooks.iter().filter(|h| h.kind == kind) {
            let body = context(state, hook, state.spec.pin_to_canary().as_ref());
            let (hook, http) = (hook.clone(), http.clone());
            tokio::spawn(async move {
                let name = hook.name.clone();
                let outcome = run(http, hook, body, None).await;
                tracing::info!(hook = %name, passed = outcome.is_ok(), detail = %outcome.unwrap_or_else(|e| e), "hook told");
            });
        }
    }

    /// Forgets a rollout's runs (deleted, or applied anew).
    pub fn forget(&self, name: &str) {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| k.0 != name);
    }
}
