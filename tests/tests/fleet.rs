//! A fleet of controllers on etcd: real etcd members, real controllers,
//! an Envoy polling whichever controller is alive (loopback hosts; the
//! partition tests on network namespaces are not built yet).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use dimmer_e2e::controller::{Controller, MetricsFrom, ADMIN_TOKEN, ENVOY_TOKEN, VIEWER_TOKEN};
use dimmer_e2e::envoy::{Envoy, EnvoyOptions};
use dimmer_e2e::etcd::Etcd;
use dimmer_e2e::fixtures::spec_yaml;
use dimmer_e2e::load::Load;
use dimmer_e2e::paths::workspace_root;
use dimmer_e2e::ports::free_port;
use dimmer_e2e::prometheus::Prometheus;
use dimmer_e2e::{Client, Upstream};
use serde_json::json;

const TTL_S: u64 = 2;

/// Two app versions behind an Envoy whose controller cluster lists both
/// controllers, with users on it.
struct Front {
    _v1: Upstream,
    _v2: Upstream,
    _envoy: Envoy,
    users: Load,
}

impl Front {
    async fn start(
        a: (String, u16),
        b: (String, u16),
        admin: u16,
        rps: u32,
    ) -> anyhow::Result<Front> {
        let (v1, v2) = (Upstream::start("v1").await?, Upstream::start("v2").await?);
        let plugin = json!({"controller": {"cluster": "dimmer-controller", "poll_interval_ms": 500, "timeout_ms": 400, "token": ENVOY_TOKEN}});
        let mut o = EnvoyOptions::new(plugin, v1.port, v2.port);
        o.controller_port = a.1;
        o.admin_port = admin;
        o.node_id = "edge-1".into();
        o.template = Some(workspace_root().join("envoy-configs/envoy-fleet.yaml.tmpl"));
        o.vars = vec![
            ("CONTROLLER_ADDRESS", a.0),
            ("CONTROLLER2_ADDRESS", b.0),
            ("CONTROLLER2_PORT", b.1.to_string()),
        ];
        let envoy = Envoy::start(o).await?;
        let users = Load::start(Client::new(envoy.url("")), 2000, rps);
        Ok(Front {
            _v1: v1,
            _v2: v2,
            _envoy: envoy,
            users,
        })
    }
}

async fn leading(c: &Controller) -> bool {
    c.get("/v1/health", VIEWER_TOKEN)
        .await
        .is_ok_and(|h| h["leading"] == true)
}

async fn wait_leading(c: &Controller, within: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if leading(c).await {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("not leading within {within:?}:\n{}", c.log())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_killed_mid_rollout_is_replaced_and_nothing_is_lost_or_doubled(
) -> anyhow::Result<()> {
    let etcd = Etcd::start(3).await?;
    let admin = free_port()?;
    let prom = Prometheus::start(&[admin]).await?;
    let keys = tempfile::tempdir()?;
    let key = keys.path().join("audit.key").display().to_string();
    let store = etcd.store_url();
    let ttl = format!("{TTL_S}s");
    let args = [
        "--store",
        &store,
        "--advertise",
        "{URL}",
        "--lease-ttl",
        &ttl,
        "--audit-key",
        &key,
    ];
    let mut a = Controller::start(MetricsFrom::Prometheus(prom.url()), &args).await?;
    wait_leading(&a, Duration::from_secs(10)).await?;
    let b = Controller::start(MetricsFrom::Prometheus(prom.url()), &args).await?;
    assert!(!leading(&b).await, "two leaders");

    let front = Front::start(
        ("127.0.0.1".to_string(), a.port),
        ("127.0.0.1".to_string(), b.port),
        admin,
        150,
    )
    .await?;
    let users = &front.users;

    // Applied through the follower: forwarded to the leader, answered once
    // it is in etcd.
    let path = b.dir().join("spec.yaml");
    std::fs::write(
        &path,
        spec_yaml(
            &[(10.0, "4s"), (30.0, "4s"), (60.0, "4s"), (100.0, "2s")],
            30,
        ),
    )?;
    let out = b.ok(&["apply", "-f", &path.display().to_string()])?;
    assert!(out.contains("checkout"), "{out}");
    // Mid-rollout, as the follower sees it from its watch.
    b.wait_for("checkout", Duration::from_secs(60), "at step 2", |v| {
        v["step"].as_u64().unwrap_or(0) >= 1
    })
    .await?;
    let step_before = b.rollout("checkout").await?["step"].as_u64().unwrap_or(0);
    a.kill();
    let took = wait_leading(&b, Duration::from_secs(TTL_S * 3)).await?;
    assert!(
        took <= Duration::from_secs(TTL_S + 1),
        "takeover took {took:?} for a {TTL_S} s lease"
    );
    let done = b
        .wait_for("checkout", Duration::from_secs(90), "completed", |v| {
            v["phase"] == "completed"
        })
        .await?;
    assert_eq!(done["weight_bp"], 10_000, "{done}");

    // The audit chain: whole, in order, every step once, and verified.
    let history = b.get("/v1/rollouts/checkout/history", VIEWER_TOKEN).await?;
    let records = history.as_array().cloned().unwrap_or_default();
    let seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "{history}"
    );
    let steps: Vec<&str> = records
        .iter()
        .filter(|r| r["action"] == "step")
        .filter_map(|r| r["to"].as_str())
        .collect();
    let mut unique = steps.clone();
    unique.dedup();
    assert_eq!(steps, unique, "a step recorded twice: {history}");
    assert_eq!(steps.len(), 3, "{history}");
    assert!(step_before >= 1);
    let verify = b.get("/v1/audit/verify", ADMIN_TOKEN).await?;
    assert_eq!(verify["ok"], true, "{verify}");
    // Routing never failed: Envoy kept polling whichever was alive.
    let served = users.served();
    assert!(served.iter().all(|s| s.status == 200), "a request failed");
    let late = served.iter().filter(|s| s.version == "v2").count();
    assert!(late > 0);
    drop(etcd);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_never_writes_and_an_etcd_member_lost_changes_nothing() -> anyhow::Result<()> {
    let mut etcd = Etcd::start(3).await?;
    let admin = free_port()?;
    let keys = tempfile::tempdir()?;
    let key = keys.path().join("audit.key").display().to_string();
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
    let a = Controller::start(MetricsFrom::EnvoyAdmin(admin), &args).await?;
    wait_leading(&a, Duration::from_secs(10)).await?;
    let b = Controller::start(MetricsFrom::EnvoyAdmin(admin), &args).await?;
    let path = b.dir().join("spec.yaml");
    std::fs::write(&path, spec_yaml(&[(10.0, "1h"), (100.0, "1s")], 30))?;
    b.ok(&["apply", "-f", &path.display().to_string()])?;
    // Both serve the same config, the follower from its watch.
    let config = |c: &Controller| {
        let url = format!("{}/v1/config", c.url());
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(ENVOY_TOKEN)
                .send()
                .await?
                .json::<serde_json::Value>()
                .await
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ca, cb) = (config(&a).await?, config(&b).await?);
        if ca == cb && ca["revision"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{ca} vs {cb}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An abort sent to the follower takes effect through the leader.
    let out = b.ok(&["abort", "checkout", "--reason", "testing the follower"])?;
    assert!(out.contains("aborted"), "{out}");
    let v = a.rollout("checkout").await?;
    assert_eq!(v["phase"], "aborted", "{v}");
    // One etcd member killed: the fleet goes on.
    etcd.kill(0);
    std::fs::write(
        &path,
        spec_yaml(&[(20.0, "1h")], 30).replace("checkout", "search"),
    )?;
    let out = b.ok(&["apply", "-f", &path.display().to_string()])?;
    assert!(out.contains("search"), "{out}");
    let verify = b.get("/v1/audit/verify", ADMIN_TOKEN).await?;
    assert_eq!(verify["ok"], true, "{verify}");
    let history = a.get("/v1/rollouts/checkout/history", VIEWER_TOKEN).await?;
    let abort = history
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["action"] == "abort")
        .cloned()
        .unwrap_or_default();
    assert_eq!(abort["reason"], "testing the follower", "{history}");
    // One leader still (the lost member may have cost a term).
    assert!(leading(&a).await ^ leading(&b).await);
    Ok(())
}

/// Fencing, against a real etcd: a store without the leader's lease cannot
/// write; with it, it can; once the lease is gone, never again — even a
/// leader that has not noticed.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_without_the_leaders_lease_is_refused_ever() -> anyhow::Result<()> {
    use dimmer::audit::AuditKey;
    use dimmer::engine::RolloutState;
    use dimmer::spec::RolloutSpec;
    use dimmer::store::{Entry, StoreError};
    use dimmer::store_etcd::{EtcdStore, Fence};

    let etcd = Etcd::start(1).await?;
    let endpoints = vec![format!("127.0.0.1:{}", etcd.members[0].client_port)];
    let store = EtcdStore::connect(
        &endpoints,
        "/fence-test/",
        AuditKey::from_bytes([7; 32]),
        Duration::from_secs(2),
    )
    .await?;
    let spec = RolloutSpec::from_yaml(&spec_yaml(&[(10.0, "1s")], 10))?;
    let mut state = RolloutState::new(spec, 1);
    let entry = || Entry {
        actor: "test",
        rollout: "checkout",
        action: "apply",
        from: "none".into(),
        to: "progressing".into(),
        reason: "fencing",
        evidence: json!({}),
    };
    let write =
        |state: &mut RolloutState| store.transition("checkout", Some(state), true, entry(), 2);
    assert!(
        matches!(write(&mut state), Err(StoreError::Fenced(_))),
        "no lease, no write"
    );

    let mut c = store.client();
    let lease = c.lease_grant(30, None).await?.id();
    let won = c.campaign("/fence-test-election", "me", lease).await?;
    let leader = won.leader().unwrap();
    *store.fence_handle().lock().unwrap() = Some(Fence {
        key: leader.key().to_vec(),
        create_revision: leader.rev(),
    });
    assert_eq!(write(&mut state)?, 1);
    assert_eq!(store.revision()?, 1);
    store.save_quietly(&state)?;

    // The lease ends (revoked here; expired is the same to etcd) while
    // this store still believes it leads.
    c.lease_revoke(lease).await?;
    assert!(matches!(write(&mut state), Err(StoreError::Fenced(_))));
    assert!(matches!(
        store.save_quietly(&state),
        Err(StoreError::Fenced(_))
    ));
    assert_eq!(store.revision()?, 1, "nothing was written");
    assert_eq!(store.audit(None)?.len(), 1);
    assert_eq!(store.verify()?, Ok(1));
    Ok(())
}

/// The leader on a test host of its own (a network namespace), cut off
/// from etcd and from everyone mid-rollout: the follower is elected, an
/// abort sent to it reaches the proxy within 2 s of the election, and the
/// old leader, healed, writes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_abort_to_the_follower_while_the_leader_is_partitioned_takes_effect_and_the_old_leader_writes_nothing(
) -> anyhow::Result<()> {
    use dimmer_e2e::netns::Host;
    let host_a = Host::create()?;
    let etcd = Etcd::start_reachable(3, std::slice::from_ref(&host_a.gateway)).await?;
    let keys = tempfile::tempdir()?;
    let key = keys.path().join("audit.key").display().to_string();
    let ttl = format!("{TTL_S}s");
    let (store_a, store_b) = (etcd.store_url_at(&host_a.gateway), etcd.store_url());
    let admin = free_port()?;
    // A reads no metrics from its host (the spec's pause is long: only a
    // person's abort decides here); B reads the Envoy's admin.
    let a = Controller::start_on(
        Some(&host_a),
        MetricsFrom::EnvoyAdmin(admin),
        &[
            "--store",
            &store_a,
            "--advertise",
            "{URL}",
            "--lease-ttl",
            &ttl,
            "--audit-key",
            &key,
        ],
    )
    .await?;
    wait_leading(&a, Duration::from_secs(10)).await?;
    let b = Controller::start(
        MetricsFrom::EnvoyAdmin(admin),
        &[
            "--store",
            &store_b,
            "--advertise",
            "{URL}",
            "--lease-ttl",
            &ttl,
            "--audit-key",
            &key,
        ],
    )
    .await?;
    let front = Front::start(
        (host_a.ip.clone(), a.port),
        ("127.0.0.1".to_string(), b.port),
        admin,
        100,
    )
    .await?;
    let users = &front.users;
    let path = b.dir().join("spec.yaml");
    std::fs::write(&path, spec_yaml(&[(30.0, "1h"), (100.0, "1s")], 30))?;
    b.ok(&["apply", "-f", &path.display().to_string()])?;
    // Users reach the canary through whichever controller Envoy polls.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !users.served().iter().any(|s| s.version == "v2") {
        assert!(Instant::now() < deadline, "nobody reached v2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    host_a.cut()?;
    let cut_at = Instant::now();
    let took = wait_leading(&b, Duration::from_secs(TTL_S * 4)).await?;
    assert!(
        took <= Duration::from_secs(TTL_S + 2),
        "election took {took:?}"
    );
    let elected_ms = dimmer_e2e::load::now_ms();
    let out = b.ok(&["abort", "checkout", "--reason", "leader partitioned"])?;
    assert!(out.contains("aborted"), "{out}");
    // Within 2 s of the election, nobody is sent to the canary.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late: Vec<_> = users
        .served()
        .into_iter()
        .filter(|s| s.at_ms > elected_ms + 2000)
        .collect();
    assert!(!late.is_empty());
    assert!(
        late.iter().all(|s| s.version == "v1"),
        "{:?}",
        late.iter().find(|s| s.version == "v2")
    );

    // Healed, the old leader writes nothing: the log is the apply and the
    // abort, whole and verified; it follows now.
    host_a.heal()?;
    tokio::time::sleep(Duration::from_secs(TTL_S + 2)).await;
    let history = b.get("/v1/rollouts/checkout/history", VIEWER_TOKEN).await?;
    let actions: Vec<&str> = history
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(actions, ["apply", "abort"], "{history}");
    let verify = b.get("/v1/audit/verify", ADMIN_TOKEN).await?;
    assert_eq!(verify["ok"], true, "{verify}");
    assert!(leading(&b).await && !leading(&a).await, "after healing");
    assert!(
        a.log().contains("lost the leader's lease"),
        "the old leader said nothing:\n{}",
        a.log()
    );
    let _ = cut_at;
    Ok(())
}

/// A fleet controller on `host`, reaching etcd through the host's link.
async fn start_on_host(
    host: &dimmer_e2e::netns::Host,
    etcd: &Etcd,
    key: &str,
    admin: u16,
) -> anyhow::Result<Controller> {
    let store = etcd.store_url_at(&host.gateway);
    Controller::start_on(
        Some(host),
        MetricsFrom::EnvoyAdmin(admin),
        &[
            "--store",
            &store,
            "--advertise",
            "{URL}",
            "--lease-ttl",
            "2s",
            "--audit-key",
            key,
            "--proxy-stale-after",
            "2s",
        ],
    )
    .await
}

/// One proxy cut off from every controller (each controller on a host of
/// its own; the proxy's path to each is dropped on that host): it keeps
/// routing on its last weights, is reported stale, and catches up within a
/// poll interval of healing.
#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_cut_off_from_every_controller_routes_on_its_last_weights_and_catches_up(
) -> anyhow::Result<()> {
    use dimmer_e2e::netns::Host;
    let (host_a, host_b) = (Host::create()?, Host::create()?);
    let (alias_a, alias_b) = (host_a.add_alias()?, host_b.add_alias()?);
    let etcd = Etcd::start_reachable(3, &[host_a.gateway.clone(), host_b.gateway.clone()]).await?;
    let keys = tempfile::tempdir()?;
    let key = keys.path().join("audit.key").display().to_string();
    let admin = free_port()?;
    let a = start_on_host(&host_a, &etcd, &key, admin).await?;
    wait_leading(&a, Duration::from_secs(10)).await?;
    let b = start_on_host(&host_b, &etcd, &key, admin).await?;
    let front = Front::start(
        (alias_a.clone(), a.port),
        (alias_b.clone(), b.port),
        admin,
        100,
    )
    .await?;
    let users = &front.users;
    // Applied to the leader: the two test hosts reach each other only
    // through etcd (no routing between them).
    let path = a.dir().join("spec.yaml");
    std::fs::write(&path, spec_yaml(&[(20.0, "1h"), (100.0, "1h")], 30))?;
    a.ok(&["apply", "-f", &path.display().to_string()])?;
    let _ = &b;
    a.wait_for(
        "checkout",
        Duration::from_secs(20),
        "applied by the proxy",
        |v| v["proxies_applied"] == 1,
    )
    .await?;

    host_a.block(&alias_a)?;
    host_b.block(&alias_b)?;
    let cut_ms = dimmer_e2e::load::now_ms();
    // A person moves everyone to the canary while the proxy cannot hear it.
    a.ok(&[
        "promote",
        "checkout",
        "--reason",
        "while the proxy is cut off",
    ])?;
    let stale = a
        .wait_for("checkout", Duration::from_secs(8), "reported stale", |v| {
            v["proxies_stale"]
                .as_array()
                .is_some_and(|s| s.iter().any(|p| p == "edge-1"))
        })
        .await?;
    assert_eq!(stale["proxies_applied"], 0, "{stale}");
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", a.url()))
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains("dimmer_proxies_stale 1"), "{metrics}");
    // Fail-static: still routing on its last weights, nothing failed.
    let during: Vec<_> = users
        .served()
        .into_iter()
        .filter(|s| s.at_ms > cut_ms + 1000)
        .collect();
    let on_v2 = during.iter().filter(|s| s.version == "v2").count() as f64;
    assert!(
        !during.is_empty() && on_v2 / (during.len() as f64) < 0.5,
        "{on_v2} of {}",
        during.len()
    );

    host_a.unblock(&alias_a)?;
    host_b.unblock(&alias_b)?;
    let healed = Instant::now();
    a.wait_for("checkout", Duration::from_secs(5), "caught up", |v| {
        v["proxies_applied"] == 1
    })
    .await?;
    // Envoy's health checks mark a controller healthy again within 0.5 s,
    // then one poll interval (0.5 s) brings the new weights.
    let took = healed.elapsed();
    assert!(
        took <= Duration::from_millis(2500),
        "caught up after {took:?}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after_ms = dimmer_e2e::load::now_ms() - 500;
    let late: Vec<_> = users
        .served()
        .into_iter()
        .filter(|s| s.at_ms > after_ms)
        .collect();
    assert!(!late.is_empty() && late.iter().all(|s| s.version == "v2"));
    assert!(
        users.served().iter().all(|s| s.status == 200),
        "a request failed"
    );
    Ok(())
}
