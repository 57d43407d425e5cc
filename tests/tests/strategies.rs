//! Release strategies beyond the canary, end to end: a real Envoy with the
//! filter, real upstreams, the real `dimmer` binary, load from many users.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::atomic::Ordering;
use std::time::Duration;

use dimmer_e2e::controller::{Controller, MetricsFrom, ENVOY_TOKEN};
use dimmer_e2e::fixtures::Stack;
use dimmer_e2e::load::{now_ms, Load};
use dimmer_e2e::paths::workspace_root;
use dimmer_e2e::ports::free_port;
use dimmer_e2e::prometheus::Prometheus;
use dimmer_e2e::stats::sample;
use dimmer_e2e::{Client, Envoy, EnvoyOptions, Upstream};
use serde_json::json;

/// `checkout`, v1 (blue) → v2 (green), previewed by `x-preview: qa`.
fn blue_green_yaml(keep: &str, approval: bool) -> String {
    format!(
        "name: checkout\nidentity:\n  - header: x-user-id\nsalt: checkout-7\nstable: v1\ncanary: v2\n\
         overrides:\n  - {{header: x-preview, values: [qa], version: v2}}\n\
         strategy:\n  blue_green: {{approval: {approval}, keep_previous_for: {keep}}}\n\
         analysis:\n  promote_on: no_alarm\n  interval: 1s\n  min_requests: 150\n"
    )
}

/// An abort the analysis took, on the error rate.
fn assert_aborted_on_errors(done: &serde_json::Value) {
    assert_eq!(done["phase"], "aborted", "{done}");
    let reason = done["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("error rate"), "{done}");
}

fn preview_load(stack: &Stack) -> Load {
    Load::start_with(
        stack.lab.client.clone(),
        50,
        60,
        "qa",
        vec![("x-preview".into(), "qa".into())],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_previews_switches_once_and_switches_back_at_once() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let users = Load::start(stack.lab.client.clone(), 2000, 200);
    let preview = preview_load(&stack);
    let out = stack.apply(&blue_green_yaml("10m", true))?;
    // Envoy polls once a second.
    let config_taken = now_ms() + 1500;
    assert!(out.contains("previewing v2"), "{out}");

    // The preview passes its analysis and waits for the switch.
    let waiting = stack
        .controller
        .wait_for("checkout", Duration::from_secs(60), "waiting", |v| {
            v["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("approval")
        })
        .await?;
    assert_eq!(waiting["weight_bp"], 0, "{waiting}");
    let before_switch = now_ms();
    let users_on_green = users
        .served()
        .iter()
        .filter(|s| s.at_ms < before_switch && s.version == "v2")
        .count();
    assert_eq!(users_on_green, 0, "no user reaches green before the switch");
    let previews: Vec<_> = preview
        .served()
        .into_iter()
        .filter(|s| s.at_ms > config_taken)
        .collect();
    assert!(previews.len() > 40, "{}", previews.len());
    assert!(
        previews.iter().all(|s| s.version == "v2"),
        "every preview request reaches green"
    );

    // One audited switch to 100%.
    stack
        .controller
        .ok(&["promote", "checkout", "--reason", "preview looks good"])?;
    let switched_ms = now_ms();
    let status = stack.controller.ok(&["status", "checkout"])?;
    assert!(status.contains("switched to v2; v1 kept ready"), "{status}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late_blue = users
        .served()
        .iter()
        .filter(|s| s.at_ms > switched_ms + 2000 && s.status == 200 && s.version != "v2")
        .count();
    assert_eq!(late_blue, 0, "everyone is on green 2 s after the switch");

    // Within the window, blue is one command away, and it takes at once.
    stack
        .controller
        .ok(&["abort", "checkout", "--reason", "checkout totals are off"])?;
    let back_ms = now_ms();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let served = users.served();
    let late_green = served
        .iter()
        .filter(|s| s.at_ms > back_ms + 2000 && s.version == "v2")
        .count();
    let after: Vec<_> = served.iter().filter(|s| s.at_ms > back_ms + 2000).collect();
    assert!(!after.is_empty());
    assert_eq!(
        late_green, 0,
        "everyone is on blue 2 s after the switch back"
    );
    assert!(served.iter().all(|s| s.status == 200), "no request failed");

    let status = stack.controller.ok(&["status", "checkout"])?;
    assert!(status.contains("aborted (switched back to v1)"), "{status}");
    let history = stack.controller.ok(&["history", "checkout"])?;
    for line in [
        "promote",
        "preview looks good",
        "switched to v2; v1 kept ready",
        "abort",
        "switched back to v1",
    ] {
        assert!(history.contains(line), "{line} missing from:\n{history}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_green_that_fails_its_preview_is_never_switched_to() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.lab.v2.fault.error_bp.store(2500, Ordering::Relaxed);
    let users = Load::start(stack.lab.client.clone(), 2000, 200);
    let _preview = preview_load(&stack);
    // Without a gate: only the analysis stands between the preview and the switch.
    stack.apply(&blue_green_yaml("10m", false))?;
    let done = stack
        .controller
        .wait_decided("checkout", Duration::from_secs(60))
        .await?;
    assert_aborted_on_errors(&done);
    let on_green: Vec<_> = users
        .served()
        .into_iter()
        .filter(|s| s.version == "v2")
        .collect();
    assert!(
        on_green.is_empty(),
        "no user ever reached the failing green: {:?}",
        &on_green[..on_green.len().min(5)]
    );
    let history = stack.controller.ok(&["history", "checkout"])?;
    assert!(!history.contains("0% → 100%"), "{history}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_green_switches_by_itself_and_completes_after_the_window() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let _users = Load::start(stack.lab.client.clone(), 2000, 200);
    let _preview = preview_load(&stack);
    stack.apply(&blue_green_yaml("3s", false))?;
    let done = stack
        .controller
        .wait_decided("checkout", Duration::from_secs(60))
        .await?;
    assert_eq!(done["phase"], "completed", "{done}");
    let history = stack.controller.ok(&["history", "checkout"])?;
    assert!(
        history.contains("no alarm (promote_on: no_alarm): 0% → 100%"),
        "{history}"
    );
    let status = stack.controller.ok(&["status", "checkout"])?;
    assert!(
        status.contains("completed (switched to v2; v1 released)"),
        "{status}"
    );
    Ok(())
}

/// A front Envoy that routes users and mirrors half of the stable version's
/// requests (the shipped `envoy-configs/envoy-shadow.yaml.tmpl`) to an Envoy
/// of the canary's own, both running the filter, both scraped by a real
/// Prometheus that the controller reads.
struct Mirrored {
    _prom: Prometheus,
    controller: Controller,
    _v1: Upstream,
    v2: Upstream,
    canary_side: Envoy,
    front: Envoy,
    client: Client,
}

impl Mirrored {
    async fn start() -> anyhow::Result<Mirrored> {
        let admins = [free_port()?, free_port()?];
        let prom = Prometheus::start(&admins).await?;
        let controller = Controller::start(MetricsFrom::Prometheus(prom.url()), &[]).await?;
        let (v1, v2) = (Upstream::start("v1").await?, Upstream::start("v2").await?);
        let plugin = json!({"controller": {"cluster": "dimmer-controller", "poll_interval_ms": 1000, "token": ENVOY_TOKEN}});
        // The canary's own Envoy: whatever it routes, it reaches v2.
        let mut o = EnvoyOptions::new(plugin.clone(), v2.port, v2.port);
        o.controller_port = controller.port;
        o.admin_port = admins[1];
        o.node_id = "canary-side".into();
        let canary_side = Envoy::start(o).await?;
        let mut o = EnvoyOptions::new(plugin, v1.port, v2.port);
        o.controller_port = controller.port;
        o.admin_port = admins[0];
        o.node_id = "front".into();
        o.template = Some(workspace_root().join("envoy-configs/envoy-shadow.yaml.tmpl"));
        o.vars = vec![
            ("SHADOW_PORT", canary_side.listen_port.to_string()),
            ("SHADOW_PERCENT", "50".into()),
        ];
        let front = Envoy::start(o).await?;
        let client = Client::new(front.url(""));
        Ok(Mirrored {
            _prom: prom,
            controller,
            _v1: v1,
            v2,
            canary_side,
            front,
            client,
        })
    }

    fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        let path = self.controller.dir().join("spec.yaml");
        std::fs::write(&path, yaml)?;
        self.controller
            .ok(&["apply", "-f", &path.display().to_string()])
    }
}

fn shadow_yaml() -> String {
    "name: checkout\nidentity:\n  - header: x-user-id\nsalt: checkout-7\nstable: v1\ncanary: v2\n\
     steps:\n  - {percent: 0, traffic: shadow, pause: 2s}\n  - {percent: 10, pause: 1h}\n\
     analysis:\n  promote_on: no_alarm\n  interval: 1s\n  min_requests: 150\n"
        .into()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_step_judges_mirrored_requests_counted_apart_then_users_follow(
) -> anyhow::Result<()> {
    let m = Mirrored::start().await?;
    let users = Load::start(m.client.clone(), 2000, 200);
    let out = m.apply(&shadow_yaml())?;
    assert!(
        out.contains("judging the requests Envoy mirrors to v2"),
        "{out}"
    );
    let stepped = m
        .controller
        .wait_for(
            "checkout",
            Duration::from_secs(90),
            "past the shadow",
            |v| v["step"] == 1,
        )
        .await?;
    assert_eq!(stepped["weight_bp"], 1000, "{stepped}");
    let stepped_ms = now_ms();
    let record = m.controller.first_record("checkout", "step").await?;
    assert_eq!(record["actor"], "controller", "{record}");
    // The step up was decided on the mirrors' counts, the only v2 traffic.
    let canary_n = record["evidence"]["canary_requests"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(canary_n >= 150.0, "{record}");

    // Until then no user reached v2, and the canary's Envoy counted the
    // mirrors apart: as shadow requests, none as users'.
    let early_v2 = users
        .served()
        .iter()
        .filter(|s| s.at_ms + 1500 < stepped_ms && s.version == "v2")
        .count();
    assert_eq!(early_v2, 0, "no user on v2 during the shadow step");
    let side = m.canary_side.prometheus().await?;
    let labels = [("rollout", "checkout"), ("version", "v2")];
    let shadows = sample(&side, "dimmer_shadow_requests", &labels);
    assert!(shadows >= 150.0, "{shadows}\n{side}");
    assert_eq!(sample(&side, "dimmer_requests", &labels), 0.0, "{side}");
    assert_eq!(
        sample(&side, "dimmer_requests", &[("version", "v1")]),
        0.0,
        "{side}"
    );
    let front = m.front.prometheus().await?;
    assert_eq!(
        sample(&front, "dimmer_shadow_requests", &[]),
        0.0,
        "the front sees no mirror"
    );

    // Users now reach v2; the mirrors still never do as users.
    // Weights reach the proxy within a second; three more seconds give a
    // few hundred users' requests, so 10% of them cannot fall under 5% by
    // chance (with ~100 it did, one run in a hundred).
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let served = users.served();
    let late: Vec<_> = served
        .iter()
        .filter(|s| s.at_ms > stepped_ms + 1500)
        .collect();
    assert!(
        late.len() >= 300,
        "only {} requests after the step",
        late.len()
    );
    let on_v2 = late.iter().filter(|s| s.version == "v2").count() as f64;
    assert!(
        on_v2 / late.len() as f64 > 0.05,
        "{on_v2} of {}",
        late.len()
    );
    assert!(served.iter().all(|s| s.status == 200), "no request failed");
    let status = m.controller.ok(&["status", "checkout"])?;
    assert!(status.contains("step 2/2 (10%)"), "{status}");
    let history = m.controller.ok(&["history", "checkout"])?;
    assert!(
        history.contains("mirrors to v2) → progressing at step 2/2 (10%)"),
        "{history}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_that_fails_on_mirrored_requests_never_reaches_a_user() -> anyhow::Result<()> {
    let m = Mirrored::start().await?;
    m.v2.fault.error_bp.store(2500, Ordering::Relaxed);
    let users = Load::start(m.client.clone(), 2000, 200);
    m.apply(&shadow_yaml())?;
    let done = m
        .controller
        .wait_decided("checkout", Duration::from_secs(90))
        .await?;
    assert_aborted_on_errors(&done);
    let served = users.served();
    let on_v2: Vec<_> = served.iter().filter(|s| s.version == "v2").collect();
    assert!(
        on_v2.is_empty(),
        "no user reached v2: {:?}",
        &on_v2[..on_v2.len().min(5)]
    );
    let failed: Vec<_> = served.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "the mirrors' failures never reached a user: {} of {}, {:?}",
        failed.len(),
        served.len(),
        &failed[..failed.len().min(5)]
    );
    Ok(())
}

/// One Envoy before v1, v2 and v3 (`envoy-configs/envoy-abn.yaml.tmpl`),
/// polling a controller that reads its admin.
struct ThreeWay {
    controller: Controller,
    _v1: Upstream,
    _v2: Upstream,
    v3: Upstream,
    _envoy: Envoy,
    client: Client,
}

impl ThreeWay {
    async fn start() -> anyhow::Result<ThreeWay> {
        let admin = free_port()?;
        let controller = Controller::start(MetricsFrom::EnvoyAdmin(admin), &[]).await?;
        let (v1, v2, v3) = (
            Upstream::start("v1").await?,
            Upstream::start("v2").await?,
            Upstream::start("v3").await?,
        );
        let plugin = json!({"controller": {"cluster": "dimmer-controller", "poll_interval_ms": 1000, "token": ENVOY_TOKEN}});
        let mut o = EnvoyOptions::new(plugin, v1.port, v2.port);
        o.controller_port = controller.port;
        o.admin_port = admin;
        o.node_id = "edge-1".into();
        o.template = Some(workspace_root().join("envoy-configs/envoy-abn.yaml.tmpl"));
        o.vars = vec![("V3_PORT", v3.port.to_string())];
        let envoy = Envoy::start(o).await?;
        let client = Client::new(envoy.url(""));
        Ok(ThreeWay {
            controller,
            _v1: v1,
            _v2: v2,
            v3,
            _envoy: envoy,
            client,
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ab_n_aborts_a_failing_arm_alone_keeps_cohorts_monotone_and_a_person_picks_the_winner(
) -> anyhow::Result<()> {
    let t = ThreeWay::start().await?;
    t.v3.fault.error_bp.store(2500, Ordering::Relaxed);
    let users = Load::start(t.client.clone(), 3000, 300);
    let path = t.controller.dir().join("abn.yaml");
    std::fs::write(
        &path,
        "name: checkout\nidentity:\n  - header: x-user-id\nstable: v1\narms: [v2, v3]\n\
         steps:\n  - {percent: 10, pause: 2s}\n  - {percent: 25, pause: 2s}\n  - {percent: 45, pause: 2s}\n\
         analysis:\n  promote_on: no_alarm\n  interval: 1s\n  min_requests: 50\n",
    )?;
    let out = t
        .controller
        .ok(&["apply", "-f", &path.display().to_string()])?;
    assert!(
        out.contains("checkout.v2: progressing at step 1/3 (10%) — arm v2 of A/B/n checkout"),
        "{out}"
    );
    assert!(
        out.contains("checkout.v3: progressing at step 1/3 (10%) — arm v3 of A/B/n checkout"),
        "{out}"
    );

    let v3 = t
        .controller
        .wait_decided("checkout.v3", Duration::from_secs(60))
        .await?;
    assert_aborted_on_errors(&v3);
    let v3_aborted_ms = now_ms();
    let v2 = t
        .controller
        .wait_decided("checkout.v2", Duration::from_secs(90))
        .await?;
    assert_eq!(v2["phase"], "completed", "{v2}");
    assert_eq!(v2["weight_bp"], 4500, "the arm stays in its lane: {v2}");
    // The A/B/n's own name shows every arm.
    let status = t.controller.ok(&["status", "checkout"])?;
    assert!(
        status.contains("checkout.v2: completed at 45%: passed every step"),
        "{status}"
    );
    assert!(status.contains("checkout.v3: aborted"), "{status}");

    // Every user's versions over the run: nobody moved between v2 and v3,
    // nobody left v2, and v3's users went back to v1 only.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut served = users.served();
    served.sort_by_key(|s| s.at_ms);
    let mut seen: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for s in served.iter().filter(|s| s.status != 0) {
        let path = seen.entry(s.user.as_str()).or_default();
        if path.last() != Some(&s.version.as_str()) {
            path.push(&s.version);
        }
    }
    for (user, path) in &seen {
        let allowed = matches!(
            path.as_slice(),
            ["v1"]
                | ["v2"]
                | ["v1", "v2"]
                | ["v1", "v3"]
                | ["v3"]
                | ["v3", "v1"]
                | ["v1", "v3", "v1"]
        );
        assert!(allowed, "{user} went {path:?}");
    }
    let late: Vec<_> = served
        .iter()
        .filter(|s| s.at_ms > v3_aborted_ms + 2000)
        .collect();
    assert!(
        late.iter().all(|s| s.version != "v3"),
        "v3 serves no one 2 s after its abort"
    );
    let on_v2 = late.iter().filter(|s| s.version == "v2").count() as f64 / late.len() as f64;
    assert!(
        (0.35..0.55).contains(&on_v2),
        "v2 at its last step: {on_v2}"
    );

    // The winner takes everyone.
    t.controller
        .ok(&["promote", "checkout.v2", "--reason", "v2 converts best"])?;
    let won_ms = now_ms();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after: Vec<_> = users
        .served()
        .into_iter()
        .filter(|s| s.at_ms > won_ms + 2000)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|s| s.version == "v2"),
        "everyone on the winner"
    );
    let history = t.controller.ok(&["history", "checkout"])?;
    for line in [
        "checkout.v3",
        "abort",
        "error rate",
        "promote",
        "v2 converts best",
    ] {
        assert!(history.contains(line), "{line} missing from:\n{history}");
    }
    Ok(())
}
