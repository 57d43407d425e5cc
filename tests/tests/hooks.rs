//! The spec's hooks with the real controller, real Envoy and a real HTTP
//! receiver: a gate that fails holds and says why, then passes and lets the
//! step go up with its result in the history; a hung gate holds without
//! stalling an abort; a probe through Envoy pinned to the canary passes a
//! healthy one and aborts a failing one; post-rollout and on-abort are told.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use dimmer_e2e::controller::VIEWER_TOKEN;
use dimmer_e2e::fixtures::Stack;
use dimmer_e2e::load::Load;

const PASS: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// A hook receiver: answers 200, 500 or never, as `mode` says; keeps every
/// body it was sent, by path.
struct Receiver {
    url: String,
    mode: Arc<AtomicU8>,
    got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

async fn receiver() -> Receiver {
    let mode = Arc::new(AtomicU8::new(PASS));
    let got: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let (m, g) = (Arc::clone(&mode), Arc::clone(&got));
    let app = Router::new().route(
        "/{which}",
        post(
            move |axum::extract::Path(which): axum::extract::Path<String>,
                  axum::Json(v): axum::Json<serde_json::Value>| {
                let (m, g) = (Arc::clone(&m), Arc::clone(&g));
                async move {
                    g.lock().unwrap().push((which, v));
                    match m.load(Ordering::Relaxed) {
                        PASS => (axum::http::StatusCode::OK, "ok"),
                        FAIL => (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            "integration tests failed",
                        ),
                        _ => {
                            tokio::time::sleep(Duration::from_secs(120)).await;
                            (axum::http::StatusCode::OK, "late")
                        }
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { url, mode, got }
}

impl Receiver {
    /// The first body posted to `/{which}`, waited for up to 10 s.
    async fn told(&self, which: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let body = self
                .got
                .lock()
                .unwrap()
                .iter()
                .find(|(w, _)| w == which)
                .cloned();
            if let Some((_, body)) = body {
                return body;
            }
            assert!(Instant::now() < deadline, "/{which} never told");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn spec(steps: &str, hooks: &str) -> String {
    format!(
        "name: checkout\nidentity:\n  - header: x-user-id\nsalt: checkout-7\nstable: v1\ncanary: v2\n\
         overrides:\n  - {{header: x-tenant-id, values: [acme-internal], version: v2}}\n\
         steps:\n{steps}analysis:\n  promote_on: no_alarm\n  interval: 1s\n  min_requests: 20\nhooks:\n{hooks}"
    )
}

async fn history(stack: &Stack) -> Vec<serde_json::Value> {
    stack
        .controller
        .get("/v1/rollouts/checkout/history", VIEWER_TOKEN)
        .await
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_gate_holds_then_passes_and_post_rollout_is_told() -> anyhow::Result<()> {
    let r = receiver().await;
    r.mode.store(FAIL, Ordering::Relaxed);
    let stack = Stack::start().await?;
    let _load = Load::start(stack.lab.client.clone(), 2000, 200);
    stack.apply(&spec(
        "  - {percent: 20, pause: 1s}\n  - {percent: 100, pause: 1s}\n",
        &format!(
            "  - {{name: integration, kind: pre-step, url: '{u}/gate', timeout: 2s, retries: 0}}\n\
             \x20 - {{name: announce, kind: post-rollout, url: '{u}/done'}}\n",
            u = r.url
        ),
    ))?;
    let held = stack
        .controller
        .wait_for(
            "checkout",
            Duration::from_secs(30),
            "held by the gate",
            |v| {
                v["reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("hook integration (pre-step) failed"))
            },
        )
        .await?;
    let reason = held["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("answered HTTP 500"), "{held}");
    assert_eq!(held["step"], 0, "{held}");
    // The gate is sent the rollout's context and how to reach the canary.
    let (_, body) = r
        .got
        .lock()
        .unwrap()
        .iter()
        .find(|(w, _)| w == "gate")
        .cloned()
        .unwrap();
    assert_eq!(body["rollout"], "checkout");
    assert_eq!(body["kind"], "pre-step");
    assert_eq!(body["canary"], "v2");
    assert_eq!(body["reach_canary"]["header"], "x-tenant-id");
    assert_eq!(body["reach_canary"]["value"], "acme-internal");
    // The team fixes its test: tried again within ten seconds, the step goes up.
    r.mode.store(PASS, Ordering::Relaxed);
    let done = stack
        .controller
        .wait_decided("checkout", Duration::from_secs(40))
        .await?;
    assert_eq!(done["phase"], "completed", "{done}");
    let records = history(&stack).await;
    let up = records
        .iter()
        .find(|x| x["action"] == "step" && x["actor"] == "controller")
        .cloned()
        .unwrap_or_default();
    let hooks = &up["evidence"]["hooks"];
    assert_eq!(hooks[0]["name"], "integration", "{up}");
    assert_eq!(hooks[0]["passed"], true, "{up}");
    let history_text = stack.controller.ok(&["history", "checkout"])?;
    assert!(
        history_text.contains("hook integration (pre-step) passed: HTTP 200"),
        "{history_text}"
    );
    // The post-rollout hook is told once it completed.
    let body = r.told("done").await;
    assert_eq!(body["kind"], "post-rollout");
    assert_eq!(body["phase"], "completed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_gate_holds_but_never_stalls_an_abort_and_on_abort_is_told() -> anyhow::Result<()> {
    let r = receiver().await;
    r.mode.store(HANG, Ordering::Relaxed);
    let stack = Stack::start().await?;
    let _load = Load::start(stack.lab.client.clone(), 2000, 200);
    stack.apply(&spec(
        "  - {percent: 20, pause: 1s}\n  - {percent: 100, pause: 1s}\n",
        &format!(
            "  - {{name: slow-check, kind: confirm-promotion, url: '{u}/gate', timeout: 1s, retries: 1}}\n\
             \x20 - {{name: page-someone, kind: on-abort, url: '{u}/aborted', timeout: 1s, retries: 0}}\n",
            u = r.url
        ),
    ))?;
    let held = stack
        .controller
        .wait_for(
            "checkout",
            Duration::from_secs(30),
            "held by the hung gate",
            |v| {
                v["reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("did not answer within 1s"))
            },
        )
        .await?;
    assert_eq!(held["step"], 0, "{held}");
    // The receiver still hangs; an abort is immediate.
    r.got.lock().unwrap().clear();
    r.mode.store(PASS, Ordering::Relaxed);
    let started = Instant::now();
    stack
        .controller
        .ok(&["abort", "checkout", "--reason", "not today"])?;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let body = r.told("aborted").await;
    assert_eq!(body["kind"], "on-abort");
    assert_eq!(body["phase"], "aborted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_through_envoy_passes_a_healthy_canary_and_aborts_a_failing_one(
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let _load = Load::start(stack.lab.client.clone(), 2000, 200);
    let envoy = stack.lab.envoy.url("/");
    let probe = |kind: &str, name: &str| {
        format!(
            "  - name: {name}\n    kind: {kind}\n    timeout: 2s\n    retries: 0\n    \
             probe: {{url: '{envoy}', requests: 20, status: 2xx, max_latency_ms: 1000}}\n"
        )
    };
    stack.apply(&spec(
        "  - {percent: 20, pause: 1s}\n  - {percent: 100, pause: 1s}\n",
        &probe("confirm-promotion", "smoke"),
    ))?;
    let done = stack
        .controller
        .wait_decided("checkout", Duration::from_secs(40))
        .await?;
    assert_eq!(done["phase"], "completed", "{done}");
    let up = history(&stack)
        .await
        .into_iter()
        .find(|x| x["action"] == "step" && x["actor"] == "controller")
        .unwrap_or_default();
    let detail = up["evidence"]["hooks"][0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(detail.starts_with("20 of 20 2xx, slowest"), "{up}");

    // A canary that fails every request: the `rollout` probe (pinned to it
    // by the override, so it sees the canary alone) aborts at once.
    stack.lab.v2.fault.error_bp.store(10_000, Ordering::Relaxed);
    // A changed spec runs again from its first step.
    stack.apply(&spec(
        "  - {percent: 20, pause: 1h}\n  - {percent: 100, pause: 1s}\n",
        &probe("rollout", "smoke"),
    ))?;
    let done = stack
        .controller
        .wait_decided("checkout", Duration::from_secs(30))
        .await?;
    assert_eq!(done["phase"], "aborted", "{done}");
    let reason = done["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("hook smoke (rollout) failed at 20%: 20 of 20 requests to the canary were not 2xx (first: HTTP 5"),
        "{done}"
    );
    Ok(())
}
