//! TLS end to end: the controller serves HTTPS with a certificate from a
//! test CA (`rcgen`), the CLI verifies it with `--ca` and refuses it
//! without, a real Envoy's filter polls it over TLS through the shipped
//! `envoy-configs/envoy-tls.yaml.tmpl` (verifying CA and name), and a
//! certificate rotated on disk is served from the next handshake with no
//! restart and no failed poll.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use dimmer_e2e::controller::{Controller, MetricsFrom, OPERATOR_TOKEN, VIEWER_TOKEN};
use dimmer_e2e::etcd::Etcd;
use dimmer_e2e::fixtures::{spec_yaml, users, Lab, Stack};
use dimmer_e2e::paths::workspace_root;
use dimmer_e2e::ports::free_port;
use dimmer_e2e::stats::sample;
use dimmer_e2e::tls::{TestCerts, SERVER_NAME};
use serde_json::json;

/// The certificate a fresh connection to the controller is shown (DER).
async fn served_cert(c: &Controller) -> anyhow::Result<Vec<u8>> {
    let resp = c.http()?.get(format!("{}/healthz", c.url())).send().await?;
    let info = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate().map(<[u8]>::to_vec));
    info.ok_or_else(|| anyhow::anyhow!("no TLS info: not TLS?"))
}

/// Applies the rollout at 50% through the CLI and checks that the proxy
/// took it (it polled and applied revision 1) and splits users by it.
async fn applies_half_and_routes_by_it(c: &Controller, lab: &Lab, tag: &str) -> anyhow::Result<()> {
    let path = c.dir().join("spec.yaml");
    std::fs::write(&path, spec_yaml(&[(50.0, "10m"), (100.0, "10m")], 1000))?;
    c.ok(&["apply", "-f", &path.display().to_string()])?;
    c.wait_for(
        "checkout",
        Duration::from_secs(10),
        "the proxy applied",
        |s| s["revision"].as_u64() == Some(1) && s["proxies_applied"].as_u64() == Some(1),
    )
    .await?;
    // Every worker takes it on its next tick.
    tokio::time::sleep(Duration::from_millis(600)).await;
    routes_half(lab, tag).await
}

/// 200 new users split about half and half (the 50% rollout's split).
async fn routes_half(lab: &Lab, tag: &str) -> anyhow::Result<()> {
    let versions = lab.client.versions_of(&users(tag, 200), 16).await?;
    let on_v2 = versions.iter().filter(|v| *v == "v2").count();
    assert!((50..150).contains(&on_v2), "{tag}: {on_v2} of 200 on v2");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_filter_polls_over_tls_and_a_rotated_certificate_is_served_without_a_restart(
) -> anyhow::Result<()> {
    // The stack `make demo` runs: the controller over TLS, Envoy polling it
    // through envoy-configs/envoy-tls.yaml.tmpl.
    let stack = Stack::start_tls().await?;
    let (controller, lab) = (&stack.controller, &stack.lab);
    let certs = stack.tls_certs().expect("a TLS stack has certificates");
    assert!(controller.url().starts_with("https://"));

    // The CLI over TLS, verifying with --ca (DIMMER_CA, set by the harness);
    // Envoy takes the weights over TLS.
    applies_half_and_routes_by_it(controller, lab, "tls").await?;
    let applied = |rev: u64| {
        move |s: &serde_json::Value| {
            s["revision"].as_u64() == Some(rev) && s["proxies_applied"].as_u64() == Some(1)
        }
    };

    // Without the CA the CLI refuses the certificate; it never skips the check.
    let out = controller
        .cli_command(Some(OPERATOR_TOKEN), &["status"])?
        .env_remove("DIMMER_CA")
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("UnknownIssuer") || said.contains("certificate"),
        "{said}"
    );
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", controller.port))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    // Rotation: a new certificate and key over the files; served from the
    // next handshake within a couple of seconds, with no restart.
    let pid = controller.pid();
    let before = served_cert(controller).await?;
    let new = certs.issue()?;
    assert_ne!(before, new);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if served_cert(controller).await? == new {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(controller.pid(), pid, "restarted");
    assert!(controller.log().contains("TLS certificate reloaded"));

    // Polls go on over the new certificate: a promote reaches the proxy.
    controller.ok(&["promote", "checkout", "--reason", "after the rotation"])?;
    controller
        .wait_for(
            "checkout",
            Duration::from_secs(10),
            "the proxy applied",
            applied(2),
        )
        .await?;
    let text = lab.envoy.prometheus().await?;
    assert_eq!(
        sample(&text, "dimmer_poll_failures", &[]),
        0.0,
        "a poll failed across the rotation"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_certificate_stops_the_controller_at_start_naming_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = TestCerts::new(dir.path())?;
    // The CA's certificate with the server's key: a pair that does not match.
    let err = match Controller::start(
        MetricsFrom::EnvoyAdmin(free_port()?),
        &[
            "--tls-cert",
            &certs.ca.display().to_string(),
            "--tls-key",
            &certs.key.display().to_string(),
        ],
    )
    .await
    {
        Ok(_) => panic!("a mismatched pair was served"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("--tls-cert and --tls-key"), "{err}");
    let missing = dir.path().join("missing.pem");
    let err = match Controller::start(
        MetricsFrom::EnvoyAdmin(free_port()?),
        &[
            "--tls-cert",
            &missing.display().to_string(),
            "--tls-key",
            &certs.key.display().to_string(),
        ],
    )
    .await
    {
        Ok(_) => panic!("a missing certificate was served"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("--tls-cert") && err.contains("missing.pem"),
        "{err}"
    );
    // Expired: refused by name and date, never served.
    let (cert, key) = certs.expired()?;
    let err = match Controller::start(
        MetricsFrom::EnvoyAdmin(free_port()?),
        &[
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    )
    .await
    {
        Ok(_) => panic!("an expired certificate was served"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("expired.pem") && err.contains("expired at"),
        "{err}"
    );
    Ok(())
}

/// The filter's poll over TLS fails closed: shown a certificate of the
/// wrong name, or one from a CA it does not trust (a man in the middle's),
/// the proxy takes no config, keeps routing by its last good one, and
/// counts failed polls; once the right certificate is back it takes the
/// config it missed within seconds. The CLI, shown a stranger's
/// certificate, says so rather than going on.
#[tokio::test(flavor = "multi_thread")]
async fn the_filter_fails_closed_on_a_wrong_certificate_and_recovers_when_it_is_fixed(
) -> anyhow::Result<()> {
    let stack = Stack::start_tls().await?;
    let (controller, lab) = (&stack.controller, &stack.lab);
    let certs = stack.tls_certs().expect("a TLS stack has certificates");
    applies_half_and_routes_by_it(controller, lab, "before").await?;
    let failures = || async {
        let text = lab.envoy.prometheus().await?;
        anyhow::Ok(sample(&text, "dimmer_poll_failures", &[]))
    };
    assert_eq!(failures().await?, 0.0);

    // The wrong name for Envoy (127.0.0.1 only, still right for the CLI).
    certs.issue_named(&["127.0.0.1", "other.example"])?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while failures().await? == 0.0 {
        if Instant::now() > deadline {
            let text = lab.envoy.prometheus().await?;
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("dimmer-controller") || l.contains("dimmer_poll"))
                .filter(|l| !l.starts_with('#'))
                .collect();
            panic!(
                "no poll failed on the wrong name:\n{}\n{}",
                lines.join("\n"),
                controller.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A new revision the proxy cannot take: it keeps the last good one.
    controller.ok(&[
        "promote",
        "checkout",
        "--reason",
        "while the proxy cannot poll",
    ])?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = controller.rollout("checkout").await?;
    assert_eq!(s["revision"].as_u64(), Some(2), "{s}");
    assert_eq!(s["proxies_applied"].as_u64(), Some(0), "{s}");
    // Still the last good split.
    routes_half(lab, "during").await?;

    // A stranger's CA: refused too, by Envoy and by the CLI.
    let before = failures().await?;
    certs.issue_by_stranger()?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = controller
        .cli_command(Some(VIEWER_TOKEN), &["status"])?
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("not trusted") && said.contains("--ca"),
        "{said}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while failures().await? <= before {
        assert!(
            Instant::now() < deadline,
            "polls to a stranger's certificate did not fail"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Fixed: the proxy takes what it missed.
    certs.issue()?;
    controller
        .wait_for(
            "checkout",
            Duration::from_secs(15),
            "the proxy applied",
            |s| s["revision"].as_u64() == Some(2) && s["proxies_applied"].as_u64() == Some(1),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let versions = lab.client.versions_of(&users("after", 100), 16).await?;
    assert!(versions.iter().all(|v| v == "v2"), "{versions:?}");
    Ok(())
}

/// A fleet over TLS: a call to the follower is forwarded to the leader over
/// HTTPS, each verifying the other against the fleet's CA (`--ca`).
#[tokio::test(flavor = "multi_thread")]
async fn a_fleets_controllers_forward_to_each_other_over_tls() -> anyhow::Result<()> {
    let etcd = Etcd::start(1).await?;
    let dir = tempfile::tempdir()?;
    let certs = TestCerts::new(dir.path())?;
    let key = dir.path().join("audit.key").display().to_string();
    let store = etcd.store_url();
    let args = [
        "--store",
        &store,
        "--advertise",
        "{URL}",
        "--lease-ttl",
        "2s",
        "--audit-key",
        &key,
    ];
    let admin = free_port()?; // no Envoy: the decisions here are people's
    let a = Controller::start_tls(MetricsFrom::EnvoyAdmin(admin), &certs, &args).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.get("/v1/health", VIEWER_TOKEN).await?["leading"] != true {
        assert!(Instant::now() < deadline, "a never led:\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = Controller::start_tls(MetricsFrom::EnvoyAdmin(admin), &certs, &args).await?;
    assert!(a.url().starts_with("https://") && b.url().starts_with("https://"));
    let path = b.dir().join("spec.yaml");
    std::fs::write(&path, spec_yaml(&[(10.0, "1h"), (100.0, "1s")], 30))?;
    // Sent to the follower, applied by the leader.
    let out = b.ok(&["apply", "-f", &path.display().to_string()])?;
    assert!(out.contains("checkout"), "{out}");
    assert_eq!(a.rollout("checkout").await?["phase"], "progressing");
    let out = b.ok(&["abort", "checkout", "--reason", "over TLS"])?;
    assert!(out.contains("aborted"), "{out}");
    assert_eq!(a.rollout("checkout").await?["phase"], "aborted");
    Ok(())
}

/// Mutual TLS: a proxy whose client certificate the controller's
/// `--client-ca` verifies polls with no token at all; the same Envoy
/// without the certificate (and no token) gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_polls_by_its_client_certificate_with_no_token() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = TestCerts::new(dir.path())?;
    let (client_cert, client_key) = certs.issue_client("edge-1.proxies.test")?;
    let admin = free_port()?;
    let revoked = dir.path().join("revoked.txt");
    std::fs::write(&revoked, "# none yet\n")?;
    let controller = Controller::start_tls(
        MetricsFrom::EnvoyAdmin(admin),
        &certs,
        &[
            "--client-ca",
            &certs.ca.display().to_string(),
            "--revoked-certs",
            &revoked.display().to_string(),
        ],
    )
    .await?;
    // The shipped TLS template with a client certificate in its upstream
    // TLS context (docs/security.md shows the same lines).
    let template = std::fs::read_to_string(workspace_root().join("envoy-configs/envoy-tls.yaml.tmpl"))?
        .replacen(
            "        common_tls_context:\n",
            "        common_tls_context:\n          tls_certificates:\n          - certificate_chain: { filename: \"{{CLIENT_CERT}}\" }\n            private_key: { filename: \"{{CLIENT_KEY}}\" }\n",
            1,
        );
    assert!(template.contains("{{CLIENT_CERT}}"));
    let with_cert = dir.path().join("envoy-mtls.yaml.tmpl");
    std::fs::write(&with_cert, template)?;
    let lab = Lab::start_with(
        json!({
            "controller": {
                "cluster": "dimmer-controller",
                "authority": SERVER_NAME,
                "poll_interval_ms": 500,
                "timeout_ms": 500
            }
        }),
        |o| {
            o.controller_port = controller.port;
            o.admin_port = admin;
            o.template = Some(with_cert.clone());
            o.vars = vec![
                ("CONTROLLER_CA", certs.ca.display().to_string()),
                ("CONTROLLER_NAME", SERVER_NAME.to_string()),
                ("CLIENT_CERT", client_cert.display().to_string()),
                ("CLIENT_KEY", client_key.display().to_string()),
            ];
        },
    )
    .await?;
    applies_half_and_routes_by_it(&controller, &lab, "mtls").await?;
    // The registry knows the proxy by its certificate's name.
    let ids = controller.proxy_ids().await?;
    assert!(
        ids.len() == 1 && ids[0].starts_with("edge-1.proxies.test"),
        "{ids:?}"
    );

    // No certificate and no token: refused, as ever.
    let anonymous = controller
        .http()?
        .get(format!("{}/v1/config", controller.url()))
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401);

    // Revoking that one certificate: its polls are refused within a
    // second or two, by name, with no restart; the proxy keeps its config.
    let pem = std::fs::read_to_string(&client_cert)?;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.decode(b64)?;
    let fingerprint = dimmer_e2e::oci::sha256(&der);
    let fingerprint = fingerprint.trim_start_matches("sha256:");
    let text = lab.envoy.prometheus().await?;
    let before = sample(&text, "dimmer_poll_failures", &[]);
    std::fs::write(&revoked, format!("{fingerprint}  # edge-1, lost\n"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = lab.envoy.prometheus().await?;
        if sample(&text, "dimmer_poll_failures", &[]) > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a revoked certificate still polls"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut identity = std::fs::read(&client_cert)?;
    identity.extend(std::fs::read(&client_key)?);
    let as_proxy = dimmer::tls::http_client(Some(&certs.ca))?
        .identity(reqwest::Identity::from_pem(&identity)?)
        .build()?;
    let r = as_proxy
        .get(format!("{}/v1/config", controller.url()))
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    let said = r.text().await?;
    assert!(
        said.contains("edge-1.proxies.test") && said.contains("revoked"),
        "{said}"
    );
    // The proxy keeps its last good split.
    routes_half(&lab, "revoked").await
}

/// A fleet's store over TLS: etcd serving clients only over TLS and asking
/// each for a certificate (`--client-cert-auth`); the controller connects
/// with `--store etcds://` and its own certificate, keeps its state there
/// across a restart; without the CA, or without a client certificate, it
/// does not start, and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleets_store_is_reached_over_tls_with_a_client_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = TestCerts::new(dir.path())?;
    let etcd = Etcd::start_tls(1, &certs).await?;
    let store = etcd.store_url();
    assert!(store.starts_with("etcds://"), "{store}");
    let tls_args = etcd.client_args();
    let mut args: Vec<&str> = vec!["--store", &store, "--advertise", "{URL}"];
    args.extend(tls_args.iter().map(String::as_str));
    let admin = free_port()?;
    let mut c = Controller::start(MetricsFrom::EnvoyAdmin(admin), &args).await?;
    let path = c.dir().join("spec.yaml");
    std::fs::write(&path, spec_yaml(&[(50.0, "10m"), (100.0, "10m")], 1000))?;
    c.ok(&["apply", "-f", &path.display().to_string()])?;
    c.restart().await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = c.rollout("checkout").await;
        if s.as_ref().is_ok_and(|s| s["name"] == "checkout") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout is not in etcd: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let refused = |extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "--store".into(),
            store.clone(),
            "--advertise".into(),
            "{URL}".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // No CA: refused before any connection, naming the flag.
    let a = refused(&[]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let err = match Controller::start(MetricsFrom::EnvoyAdmin(admin), &a).await {
        Ok(_) => panic!("started against a TLS etcd without its CA"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("needs --etcd-ca"), "{err}");
    // The CA but no client certificate: etcd refuses the handshake.
    let ca = certs.ca.display().to_string();
    let a = refused(&["--etcd-ca", &ca]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let err = match Controller::start(MetricsFrom::EnvoyAdmin(admin), &a).await {
        Ok(_) => panic!("started without a client certificate"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("connecting to etcds://")
            && (err.contains("refused this controller's certificate")
                || err.contains("give --etcd-cert")),
        "{err}"
    );
    Ok(())
}
