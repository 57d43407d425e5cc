//! Credentials that can be rotated, with the real controller: the tokens
//! file holds digests (`dimmer token create` prints a token once), a
//! created or revoked token takes effect within a second without a restart,
//! two proxy tokens are valid at once while a fleet's poll token rotates,
//! and a bad file never falls back to no authentication.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Command;
use std::time::{Duration, Instant};

use dimmer_e2e::controller::{dimmer_binary, Controller, MetricsFrom, ENVOY_TOKEN, OPERATOR_TOKEN};

fn token(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(dimmer_binary().unwrap())
        .arg("token")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn status_of(c: &Controller, path: &str, bearer: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}{path}", c.url()))
        .bearer_auth(bearer)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// How long until `path` answers `want` for `bearer`, at most 5 s.
async fn until(c: &Controller, path: &str, bearer: &str, want: u16) -> Duration {
    let started = Instant::now();
    while status_of(c, path, bearer).await != want {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} never {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_created_rotated_and_revoked_within_a_second_without_a_restart() {
    let c = Controller::start(MetricsFrom::Prometheus("http://127.0.0.1:9".into()), &[])
        .await
        .unwrap();
    let file = c.dir().join("tokens.yaml");
    let f = file.to_str().unwrap();
    let pid = c.pid();

    // A new operator: printed once, stored as a digest only.
    let (ok, ci, err) = token(&["create", "ci-bot", "--role", "operator", "--file", f]);
    assert!(ok, "{err}");
    assert_eq!(ci.len(), 64, "{ci}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&ci) && text.contains("sha256:"), "{text}");
    let took = until(&c, "/v1/rollouts", &ci, 200).await;
    assert!(
        took <= Duration::from_secs(1),
        "created token accepted after {took:?}"
    );

    // A fleet's poll token rotated: both valid at once, then the old revoked.
    let (ok, next, err) = token(&["create", "envoy-next", "--role", "proxy", "--file", f]);
    assert!(ok, "{err}");
    until(&c, "/v1/config", &next, 200).await;
    assert_eq!(status_of(&c, "/v1/config", ENVOY_TOKEN).await, 200);
    let (ok, _, err) = token(&["revoke", "envoy", "--file", f]);
    assert!(ok, "{err}");
    let took = until(&c, "/v1/config", ENVOY_TOKEN, 401).await;
    assert!(
        took <= Duration::from_secs(1),
        "revoked token refused after {took:?}"
    );
    assert_eq!(status_of(&c, "/v1/config", &next).await, 200);
    // A proxy token is a proxy's: it may not read status.
    assert_eq!(status_of(&c, "/v1/rollouts", &next).await, 403);

    let (ok, _, err) = token(&["revoke", "ci-bot", "--file", f]);
    assert!(ok, "{err}");
    let took = until(&c, "/v1/rollouts", &ci, 401).await;
    assert!(
        took <= Duration::from_secs(1),
        "revoked token refused after {took:?}"
    );

    // A bad edit keeps the last good tokens: never no authentication.
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        "tokens: [{name: x, role: admin, sha256: not-a-digest-but-a-token}]\n",
    )
    .unwrap();
    // Once the controller has read it (its log says so), the old tokens
    // still stand and no token is no token.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.log().contains("tokens[0].sha256: must be 64 hex digits") {
        assert!(
            Instant::now() < deadline,
            "the bad file was never read: {}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_of(&c, "/v1/rollouts", OPERATOR_TOKEN).await, 200);
    assert_eq!(status_of(&c, "/v1/rollouts", "").await, 401);
    std::fs::write(&file, good).unwrap();
    // The same process all along: nothing restarted.
    assert_eq!(c.pid(), pid);
}

#[test]
fn a_plain_token_where_a_digest_belongs_stops_the_start_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.yaml");
    std::fs::write(
        &file,
        "tokens:\n- {name: ok, role: admin, sha256: 3d248a8267190a9af73b028a569a639d3f823ce06ffd9a84bd1757d59f785709}\n\
         - {name: pasted, role: operator, sha256: operator-token-0123456789}\n",
    )
    .unwrap();
    let out = Command::new(dimmer_binary().unwrap())
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("s.db"))
        .arg("--tokens")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tokens[1].sha256: must be 64 hex digits"),
        "{err}"
    );
    // And `token create` refuses to write over a file the controller would refuse.
    let (ok, _, err) = token(&[
        "create",
        "x",
        "--role",
        "viewer",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("tokens[1].sha256"), "{err}");
}

/// The audit key rotates: new records are signed by the new key and say
/// so, the old ones still verify, and the old key alone names the record
/// it cannot vouch for.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_key_rotates_and_every_record_still_verifies_naming_its_key() {
    let mut c = Controller::start(MetricsFrom::Prometheus("http://127.0.0.1:9".into()), &[])
        .await
        .unwrap();
    let spec = c.dir().join("spec.yaml");
    let write = |percent: u32| {
        std::fs::write(
            &spec,
            format!(
                "name: checkout\nidentity: [{{header: x-user-id}}]\nstable: v1\ncanary: v2\n\
                 steps: [{{percent: {percent}, pause: 1h}}, {{percent: 100}}]\n"
            ),
        )
        .unwrap();
    };
    let s = spec.to_str().unwrap().to_owned();
    write(1);
    c.ok(&["apply", "-f", &s]).unwrap();
    c.ok(&["pause", "checkout", "--reason", "before"]).unwrap();
    let db = c.db_path();
    let key_file = db.with_extension("db.key");
    let key_file = if key_file.exists() {
        key_file
    } else {
        std::path::PathBuf::from(format!("{}.key", db.display()))
    };
    let old_key = std::fs::read_to_string(&key_file).unwrap();
    let old_file = c.dir().join("old.key");
    std::fs::write(&old_file, &old_key).unwrap();

    let out = Command::new(dimmer_binary().unwrap())
        .args(["audit", "rotate-key", "--audit-key"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_kid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(new_kid.len(), 8, "{new_kid}");
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().lines().count(),
        2
    );
    c.restart().await.unwrap();
    c.ok(&["resume", "checkout", "--reason", "after"]).unwrap();
    write(5);
    c.ok(&["apply", "-f", &s]).unwrap();

    let verify = |key: &std::path::Path| {
        Command::new(dimmer_binary().unwrap())
            .args(["audit", "verify", "--db"])
            .arg(&db)
            .arg("--audit-key")
            .arg(key)
            .output()
            .unwrap()
    };
    let both = verify(&key_file);
    let said = String::from_utf8_lossy(&both.stdout).into_owned();
    assert!(
        both.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&both.stderr)
    );
    assert!(said.contains("audit chain intact: 4 records"), "{said}");
    assert!(
        said.contains(&format!("records 3–4: signed by key {new_kid}")),
        "{said}"
    );
    assert!(said.contains("records 1–2: signed by key "), "{said}");
    // The old key alone: the new records are not its to vouch for.
    let old = verify(&old_file);
    let err = String::from_utf8_lossy(&old.stderr).into_owned();
    assert!(!old.status.success());
    assert!(
        err.contains(&format!(
            "audit record 3: signed by key {new_kid}, which is not in this key file"
        )),
        "{err}"
    );
    // The controller, with the ring, verifies through its API too.
    let api = c
        .cli(
            Some(dimmer_e2e::controller::ADMIN_TOKEN),
            &["audit", "verify"],
        )
        .unwrap();
    assert!(
        api.status.success(),
        "{}",
        String::from_utf8_lossy(&api.stderr)
    );
}

/// A filter given a token of another role (a viewer's, an operator's) is
/// refused on every poll, and the controller says which proxy and which
/// token; the proxy never counts as one and takes no config.
#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_with_a_token_of_another_role_is_refused_naming_it() -> anyhow::Result<()> {
    let admin = dimmer_e2e::ports::free_port()?;
    let controller = Controller::start(MetricsFrom::EnvoyAdmin(admin), &[]).await?;
    let lab = dimmer_e2e::fixtures::Lab::start_with(
        serde_json::json!({
            "controller": {
                "cluster": "dimmer-controller",
                "poll_interval_ms": 300,
                "timeout_ms": 500,
                "token": dimmer_e2e::controller::VIEWER_TOKEN
            }
        }),
        |o| {
            o.controller_port = controller.port;
            o.admin_port = admin;
            o.node_id = "edge-7".into();
        },
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let said = loop {
        let log = controller.log();
        if log.contains("poll refused") {
            break log;
        }
        assert!(Instant::now() < deadline, "never said:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        said.contains("proxy edge-7 polls with the token of dashboard (Viewer)"),
        "{said}"
    );
    let text = lab.envoy.prometheus().await?;
    assert!(dimmer_e2e::stats::sample(&text, "dimmer_poll_failures", &[]) >= 1.0);
    assert_eq!(
        dimmer_e2e::stats::sample(&text, "dimmer_config_updates", &[]),
        0.0
    );
    let health = controller
        .get("/v1/health", dimmer_e2e::controller::VIEWER_TOKEN)
        .await?;
    assert_eq!(health["proxies_known"], 0, "{health}");
    Ok(())
}
