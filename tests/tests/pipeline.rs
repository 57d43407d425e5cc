//! Dimmer in a delivery pipeline, end to end with a real Envoy and the real
//! controller: the exit codes a CI job reads (docs/pipeline.md), the
//! versioned JSON of read commands, a multi-document file applied as one
//! change (or not at all, naming the document), and a boolean where a name
//! is wanted refused naming the field; GitOps from a directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Output;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dimmer_e2e::controller::{OPERATOR_TOKEN, VIEWER_TOKEN};
use dimmer_e2e::fixtures::{spec_yaml, Stack};
use dimmer_e2e::load::Load;
use dimmer_e2e::paths::workspace_root;

/// Runs the CLI as an operator with `args`, a spec written to a file first
/// when `yaml` is given (its path replaces `{SPEC}`).
fn run(stack: &Stack, yaml: Option<&str>, args: &[&str]) -> anyhow::Result<Output> {
    let path = stack
        .controller
        .dir()
        .join(format!("spec-{}.yaml", fastrand::u32(..)));
    if let Some(y) = yaml {
        std::fs::write(&path, y)?;
    }
    let p = path.display().to_string();
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "{SPEC}" { p.as_str() } else { a })
        .collect();
    stack.controller.cli(Some(OPERATOR_TOKEN), &args)
}

fn said(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `examples/ci/rollout.sh`, the step the CI examples run, as a shell
/// pipeline would run it.
fn pipeline_step(stack: &Stack, yaml: &str) -> anyhow::Result<Output> {
    let spec = stack
        .controller
        .dir()
        .join(format!("ci-{}.yaml", fastrand::u32(..)));
    std::fs::write(&spec, yaml)?;
    let bin = dimmer_e2e::controller::dimmer_binary()?;
    let path = format!(
        "{}:{}",
        bin.parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        std::env::var("PATH").unwrap_or_default()
    );
    Ok(
        std::process::Command::new(workspace_root().join("examples/ci/rollout.sh"))
            .arg(&spec)
            .arg("90s")
            .env("PATH", path)
            .env("DIMMER_SERVER", stack.controller.url())
            .env("DIMMER_TOKEN", OPERATOR_TOKEN)
            .output()?,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_wait_exits_0_for_a_healthy_canary_and_3_for_a_faulty_one() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let _load = Load::start(stack.lab.client.clone(), 3000, 300);
    let spec = spec_yaml(&[(10.0, "1s"), (100.0, "1s")], 20);
    let out = pipeline_step(&stack, &spec)?;
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("completed"),
        "{}",
        said(&out)
    );

    // The same pipeline step against a canary failing 20% of requests.
    stack.lab.v2.fault.error_bp.store(2000, Ordering::Relaxed);
    // The same rollout again, changed: it runs again from its first step.
    let spec = spec_yaml(&[(10.0, "30s"), (100.0, "30s")], 50);
    let started = Instant::now();
    let out = pipeline_step(&stack, &spec)?;
    assert_eq!(out.status.code(), Some(3), "{}", said(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("aborted") && err.contains("evidence"),
        "{}",
        said(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn status_wait_exits_4_on_timeout_5_at_an_approval_gate_and_6_when_unreachable(
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let _load = Load::start(stack.lab.client.clone(), 3000, 300);
    stack.apply(&spec_yaml(&[(10.0, "1h"), (100.0, "1h")], 20))?;
    let out = run(
        &stack,
        None,
        &["status", "checkout", "--wait", "--timeout", "2s"],
    )?;
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not done within 2s"),
        "{}",
        said(&out)
    );

    let gated = "name: checkout\nidentity: [{header: x-user-id}]\nsalt: checkout-7\nstable: v1\ncanary: v2\n\
                 steps:\n  - {percent: 10, pause: 1s, approval: true}\n  - {percent: 100, pause: 1s}\n\
                 analysis: {interval: 1s, min_requests: 20}\n";
    let out = run(
        &stack,
        Some(gated),
        &["apply", "-f", "{SPEC}", "--wait", "--timeout", "60s"],
    )?;
    assert_eq!(out.status.code(), Some(5), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dimmer promote checkout"),
        "{}",
        said(&out)
    );

    let dead = stack
        .controller
        .cli_command(
            Some(VIEWER_TOKEN),
            &["status", "checkout", "--wait", "--timeout", "3s"],
        )?
        .env("DIMMER_SERVER", "http://127.0.0.1:9")
        .output()?;
    assert_eq!(dead.status.code(), Some(6), "{}", said(&dead));
    let dead = stack
        .controller
        .cli_command(Some(VIEWER_TOKEN), &["history", "checkout"])?
        .env("DIMMER_SERVER", "http://127.0.0.1:9")
        .output()?;
    assert_eq!(dead.status.code(), Some(6), "{}", said(&dead));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn read_commands_speak_versioned_json_and_yaml_and_several_documents_are_one_change(
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.apply(&spec_yaml(&[(10.0, "1h"), (100.0, "1h")], 20))?;
    for (args, kind) in [
        (vec!["status", "-o", "json"], "RolloutStatusList"),
        (
            vec!["status", "checkout", "-o", "json"],
            "RolloutStatusList",
        ),
        (vec!["history", "checkout", "-o", "json"], "AuditRecordList"),
        (vec!["flags", "-o", "json"], "FlagList"),
        (vec!["proxies", "-o", "json"], "ProxyList"),
        (vec!["which", "checkout", "user-1", "-o", "json"], "Which"),
        (vec!["webhooks", "-o", "json"], "WebhookStats"),
        (vec!["audit", "head", "-o", "json"], "AuditHead"),
    ] {
        let out = run(&stack, None, &args)?;
        assert!(out.status.success(), "{args:?}: {}", said(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(v["apiVersion"], "dimmer.dev/v1", "{args:?}: {v}");
        assert_eq!(v["kind"], kind, "{args:?}: {v}");
    }
    let out = run(&stack, None, &["status", "checkout", "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["items"][0]["name"], "checkout");
    assert_eq!(v["items"][0]["awaiting_approval"], false);
    let out = run(&stack, None, &["history", "checkout", "-o", "yaml"])?;
    let y: serde_json::Value = serde_norway::from_slice(&out.stdout)?;
    assert_eq!(y["kind"], "AuditRecordList", "{}", said(&out));
    assert_eq!(y["items"][0]["action"], "apply");

    // Two documents in one file: one change — checked together, written
    // in one revision, or not at all.
    let flag = "kind: flag\nkey: new-cart\nowner: shop\nlifecycle: permanent\n\
                identity: [{header: x-user-id}]\ndefault_variant: \"off\"\nvariant: \"on\"\n\
                steps: [{percent: 10}]\n";
    let revision = |c: serde_json::Value| c["revision"].as_u64().unwrap_or(0);
    let config = || async {
        reqwest::Client::new()
            .get(format!("{}/v1/config", stack.controller.url()))
            .bearer_auth(dimmer_e2e::controller::ENVOY_TOKEN)
            .send()
            .await?
            .json::<serde_json::Value>()
            .await
    };
    let before = revision(config().await?);
    let head_before = stack.controller.get("/v1/audit/head", VIEWER_TOKEN).await?;
    let cart = spec_yaml(&[(10.0, "1h")], 20)
        .replace("name: checkout", "name: cart\nmatch: {path_prefix: /cart}");
    let broken = format!(
        "{cart}---\n{}",
        flag.replace("variant: \"on\"", "variant: 7")
    );
    let out = run(&stack, Some(&broken), &["apply", "-f", "{SPEC}"])?;
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("document 1 (new-cart): variant: must be text"),
        "{}",
        said(&out)
    );
    assert_eq!(revision(config().await?), before, "nothing applied");
    assert_eq!(
        stack.controller.get("/v1/audit/head", VIEWER_TOKEN).await?,
        head_before
    );
    // Valid one by one, refused together by the controller: nothing lands.
    let clash = format!(
        "{cart}---\n{}",
        flag.replace("key: new-cart", "key: checkout")
    );
    let out = run(&stack, Some(&clash), &["apply", "-f", "{SPEC}"])?;
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("document 1 (checkout)") && err.contains("nothing applied"),
        "{}",
        said(&out)
    );
    assert_eq!(
        revision(config().await?),
        before,
        "the first document was not applied either"
    );
    let two = format!("{cart}---\n{flag}");
    let out = run(&stack, Some(&two), &["apply", "-f", "{SPEC}"])?;
    assert!(out.status.success(), "{}", said(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cart:") && text.contains("new-cart:"),
        "{}",
        said(&out)
    );
    assert_eq!(
        revision(config().await?),
        before + 1,
        "one revision for both"
    );
    let head = stack.controller.get("/v1/audit/head", VIEWER_TOKEN).await?;
    assert_eq!(
        head["seq"].as_i64(),
        head_before["seq"].as_i64().map(|s| s + 2),
        "a record each"
    );
    let verify = stack
        .controller
        .get("/v1/audit/verify", dimmer_e2e::controller::ADMIN_TOKEN)
        .await?;
    assert_eq!(verify["ok"], true, "{verify}");
    // A boolean where a name is wanted: refused naming the field and line.
    let bad = flag.replace("variant: \"on\"", "variant: true");
    let out = run(&stack, Some(&bad), &["apply", "-f", "{SPEC}"])?;
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("variant: must be text, not the boolean true"),
        "{}",
        said(&out)
    );
    let rollouts = stack.controller.get("/v1/rollouts", VIEWER_TOKEN).await?;
    assert_eq!(
        rollouts.as_array().map(Vec::len),
        Some(3),
        "nothing more applied: {rollouts}"
    );
    Ok(())
}

/// GitOps with `dimmer sync DIR` / `dimmer diff DIR`: a directory of specs
/// converged on, unchanged specs leaving no record, a hand abort surviving
/// the next sync, a bad file applying nothing, removal kept without
/// `--prune` and deleted with it.
#[tokio::test(flavor = "multi_thread")]
async fn sync_converges_on_a_directory_and_leaves_what_people_did() -> anyhow::Result<()> {
    use dimmer_e2e::controller::ADMIN_TOKEN;
    let stack = Stack::start().await?;
    let c = &stack.controller;
    let dir = c.dir().join("specs");
    std::fs::create_dir_all(dir.join(".git"))?;
    std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main")?;
    std::fs::write(
        dir.join("checkout.yaml"),
        spec_yaml(&[(10.0, "1h"), (100.0, "1h")], 20),
    )?;
    let flag = "kind: flag\nkey: new-cart\nowner: shop\nlifecycle: permanent\n\
                identity: [{header: x-user-id}]\ndefault_variant: \"off\"\nvariant: \"on\"\n\
                steps: [{percent: 10, pause: 1h}]\n";
    std::fs::write(dir.join("new-cart.yaml"), flag)?;
    let d = dir.display().to_string();
    let head = || async { c.get("/v1/audit/head", VIEWER_TOKEN).await };

    let plan = c.ok(&["diff", &d])?;
    assert!(
        plan.contains("checkout: would create") && plan.contains("new-cart: would create"),
        "{plan}"
    );
    assert_eq!(
        c.get("/v1/rollouts", VIEWER_TOKEN).await?,
        serde_json::json!([])
    );
    let out = c.ok(&["sync", &d])?;
    assert!(
        out.contains("checkout: created") && out.contains("new-cart: created"),
        "{out}"
    );
    let after_create = head().await?;
    let out = c.ok(&["sync", &d])?;
    assert!(out.contains("checkout: unchanged"), "{out}");
    assert_eq!(
        head().await?,
        after_create,
        "an unchanged directory writes nothing"
    );

    // A person aborts; the next sync of the same specs leaves it aborted.
    c.ok(&["abort", "checkout", "--reason", "bad numbers"])?;
    c.ok(&["sync", &d])?;
    assert_eq!(c.rollout("checkout").await?["phase"], "aborted");

    // One bad file: nothing applied, the file and field named.
    std::fs::write(
        dir.join("checkout.yaml"),
        spec_yaml(&[(20.0, "1h"), (100.0, "1h")], 20),
    )?;
    std::fs::write(
        dir.join("broken.yaml"),
        flag.replace("new-cart", "broken")
            .replace("variant: \"on\"", "variant: true"),
    )?;
    let before = head().await?;
    let out = c.cli(Some(OPERATOR_TOKEN), &["sync", &d])?;
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.yaml") && err.contains("variant: must be text"),
        "{}",
        said(&out)
    );
    assert_eq!(head().await?, before, "nothing applied");
    std::fs::remove_file(dir.join("broken.yaml"))?;
    std::fs::write(dir.join("notes.txt"), "todo")?;
    let out = c.cli(Some(OPERATOR_TOKEN), &["sync", &d])?;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notes.txt: not a spec"),
        "{}",
        said(&out)
    );
    std::fs::remove_file(dir.join("notes.txt"))?;

    // The changed spec runs again.
    let out = c.ok(&["sync", &d])?;
    assert!(out.contains("checkout: changed"), "{out}");
    assert_eq!(c.rollout("checkout").await?["phase"], "progressing");

    // Gone from the directory: kept without --prune, deleted with it.
    std::fs::remove_file(dir.join("new-cart.yaml"))?;
    let out = c.ok(&["sync", &d])?;
    assert!(
        out.contains("new-cart: not in the directory, kept"),
        "{out}"
    );
    let refused = c.cli(Some(OPERATOR_TOKEN), &["sync", &d, "--prune"])?;
    assert!(
        !refused.status.success(),
        "pruning deletes: an admin's call"
    );
    let out = c.cli(Some(ADMIN_TOKEN), &["sync", &d, "--prune"])?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("new-cart: deleted"),
        "{}",
        said(&out)
    );
    let names: Vec<String> = c
        .get("/v1/rollouts", VIEWER_TOKEN)
        .await?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, ["checkout"]);
    Ok(())
}

/// `dimmer serve --sync DIR`: the controller converges on its own within
/// seconds, and a hand abort stands until the spec changes.
#[tokio::test(flavor = "multi_thread")]
async fn serve_sync_picks_up_changes_within_seconds() -> anyhow::Result<()> {
    use dimmer_e2e::controller::{Controller, MetricsFrom};
    let specs = tempfile::tempdir()?;
    std::fs::write(
        specs.path().join("checkout.yaml"),
        spec_yaml(&[(10.0, "1h"), (100.0, "1h")], 20),
    )?;
    let d = specs.path().display().to_string();
    let admin = dimmer_e2e::ports::free_port()?;
    let c = Controller::start(
        MetricsFrom::EnvoyAdmin(admin),
        &["--sync", &d, "--sync-every", "300ms"],
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        if let Ok(v) = c.rollout("checkout").await {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "not synced within 10 s:\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(seen["phase"], "progressing", "{seen}");
    assert_eq!(seen["steps"], serde_json::json!([10.0, 100.0]));
    let first = c.first_record("checkout", "apply").await?;
    assert_eq!(first["actor"], "sync", "{first}");
    c.ok(&["abort", "checkout", "--reason", "by hand"])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        c.rollout("checkout").await?["phase"],
        "aborted",
        "the abort stands"
    );
    std::fs::write(
        specs.path().join("checkout.yaml"),
        spec_yaml(&[(5.0, "1h"), (100.0, "1h")], 20),
    )?;
    let started = Instant::now();
    c.wait_for("checkout", Duration::from_secs(10), "re-synced", |v| {
        v["phase"] == "progressing" && v["steps"] == serde_json::json!([5.0, 100.0])
    })
    .await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}
