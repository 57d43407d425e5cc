//! A fleet of controllers on etcd, each part on a test host of its own (a
//! network namespace on the test's bridge, `dimmer_e2e::netns`): three etcd
//! members, two controllers and three Envoys with the filter, users on every
//! Envoy, the apps and a Prometheus on the test's own address. Processes
//! are killed and hosts cut off while users are on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dimmer_e2e::controller::{
    Controller, MetricsFrom, ADMIN_TOKEN, ENVOY_TOKEN, OPERATOR_TOKEN, VIEWER_TOKEN,
};
use dimmer_e2e::envoy::{Envoy, EnvoyOptions};
use dimmer_e2e::etcd::Etcd;
use dimmer_e2e::fixtures::spec_yaml;
use dimmer_e2e::load::{now_ms, Load, Served};
use dimmer_e2e::netns::{Host, Net};
use dimmer_e2e::paths::workspace_root;
use dimmer_e2e::ports::free_port;
use dimmer_e2e::prometheus::Prometheus;
use dimmer_e2e::{Client, Upstream};
use serde_json::json;

const TTL_S: u64 = 2;
/// The filter's poll interval, and its tick (a quarter of it: the poller
/// fires on ticks).
const POLL_MS: u64 = 500;
const TICK_MS: u64 = POLL_MS / 4;
const ENVOYS: usize = 3;

/// The fleet on its hosts. Fields drop in order: users first, the net last.
struct Site {
    users: Vec<Load>,
    envoys: Vec<Envoy>,
    controllers: Vec<Controller>,
    prom: Prometheus,
    etcd: Etcd,
    _apps: (Upstream, Upstream),
    _keys: tempfile::TempDir,
    envoy_hosts: Vec<Host>,
    controller_hosts: Vec<Host>,
    etcd_hosts: Vec<Host>,
    _net: Net,
}

impl Site {
    /// Everything up, the first controller leading, `rps` users' requests
    /// a second on each Envoy (the same 2,000 identities on every one).
    async fn start(rps: u32) -> anyhow::Result<Site> {
        let net = Net::create()?;
        let etcd_hosts = net.hosts(3)?;
        let controller_hosts = net.hosts(2)?;
        let envoy_hosts = net.hosts(ENVOYS)?;
        let etcd = Etcd::start_on(&etcd_hosts.iter().collect::<Vec<_>>()).await?;
        let apps = (
            Upstream::start_at("v1", &net.gateway, 0).await?,
            Upstream::start_at("v2", &net.gateway, 0).await?,
        );
        // Every Envoy's admin on the same port of its own host.
        let admin = 9901;
        let targets: Vec<String> = envoy_hosts
            .iter()
            .map(|h| format!("{}:{admin}", h.ip))
            .collect();
        let prom = Prometheus::start_at(&net.gateway, free_port()?, &targets, &[]).await?;
        let keys = tempfile::tempdir()?;
        let mut site = Site {
            users: Vec::new(),
            envoys: Vec::new(),
            controllers: Vec::new(),
            prom,
            etcd,
            _apps: apps,
            _keys: keys,
            envoy_hosts,
            controller_hosts,
            etcd_hosts,
            _net: net,
        };
        let first = site.start_controller(0).await?;
        site.controllers.push(first);
        wait_leading(&site.controllers[0], Duration::from_secs(10)).await?;
        let second = site.start_controller(1).await?;
        site.controllers.push(second);
        assert!(!leading(&site.controllers[1]).await, "two leaders");
        for i in 0..ENVOYS {
            let envoy = site.start_envoy(i, admin).await?;
            let users = Load::start(Client::new(envoy.url("")), 2000, rps);
            site.envoys.push(envoy);
            site.users.push(users);
        }
        Ok(site)
    }

    async fn start_controller(&self, i: usize) -> anyhow::Result<Controller> {
        let key = self._keys.path().join("audit.key").display().to_string();
        let (store, ttl) = (self.etcd.store_url(), format!("{TTL_S}s"));
        Controller::start_on(
            Some(&self.controller_hosts[i]),
            MetricsFrom::Prometheus(self.prom.url()),
            &[
                "--store",
                &store,
                "--advertise",
                "{URL}",
                "--lease-ttl",
                &ttl,
                "--audit-key",
                &key,
                "--proxy-stale-after",
                "2s",
            ],
        )
        .await
    }

    async fn start_envoy(&self, i: usize, admin: u16) -> anyhow::Result<Envoy> {
        let plugin = json!({"controller": {"cluster": "dimmer-controller", "poll_interval_ms": POLL_MS, "timeout_ms": 400, "token": ENVOY_TOKEN}});
        let (v1, v2) = (self._apps.0.port, self._apps.1.port);
        let mut o = EnvoyOptions::new(plugin, v1, v2).on(&self.envoy_hosts[i]);
        let (a, b) = (&self.controllers[0], &self.controllers[1]);
        o.concurrency = 1;
        o.controller_port = a.port;
        o.admin_port = admin;
        o.listen_port = 10000;
        o.node_id = format!("edge-{i}");
        o.template = Some(workspace_root().join("envoy-configs/envoy-fleet.yaml.tmpl"));
        o.vars = vec![
            ("APP_ADDRESS", self._net.gateway.clone()),
            ("CONTROLLER_ADDRESS", a.host.clone()),
            ("CONTROLLER2_ADDRESS", b.host.clone()),
            ("CONTROLLER2_PORT", b.port.to_string()),
        ];
        Envoy::start(o).await
    }

    /// Which controller leads, waiting up to `within` for one to.
    async fn wait_leader(&self, within: Duration) -> anyhow::Result<(usize, Duration)> {
        let start = Instant::now();
        while start.elapsed() < within {
            for (i, c) in self.controllers.iter().enumerate() {
                if leading(c).await {
                    return Ok((i, start.elapsed()));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("no leader within {within:?}")
    }

    fn apply(&self, via: &Controller, yaml: &str) -> anyhow::Result<String> {
        let path = via.dir().join("spec.yaml");
        std::fs::write(&path, yaml)?;
        via.ok(&["apply", "-f", &path.display().to_string()])
    }

    /// What every Envoy's users were served, by Envoy.
    fn served(&self) -> Vec<Vec<Served>> {
        self.users.iter().map(Load::served).collect()
    }

    /// Waits until a user on every Envoy has reached the canary.
    async fn wait_everyone_reaches_v2(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while !self
            .served()
            .iter()
            .all(|s| s.iter().any(|r| r.version == "v2"))
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "an Envoy never sent anyone to v2"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

/// Nothing a user sees went wrong: every request answered 200, and no user
/// on any Envoy went back from the canary to the stable version (their
/// cohort only grows: weights only rise in these rollouts).
fn users_saw_nothing(site: &Site) {
    for (i, served) in site.served().iter().enumerate() {
        assert!(!served.is_empty(), "edge-{i} served nobody");
        let failed: Vec<_> = served.iter().filter(|s| s.status != 200).collect();
        assert!(
            failed.is_empty(),
            "edge-{i}: {} of {} failed, first {:?}",
            failed.len(),
            served.len(),
            failed.first()
        );
        let mut by_user: BTreeMap<&str, Vec<&Served>> = BTreeMap::new();
        for s in served {
            by_user.entry(&s.user).or_default().push(s);
        }
        for (user, mut seen) in by_user {
            seen.sort_by_key(|s| s.at_ms);
            let first_v2 = seen.iter().position(|s| s.version == "v2");
            if let Some(at) = first_v2 {
                // Requests on separate connections reach Envoy a few ms
                // out of the order they were sent in.
                let changed = seen[at].at_ms;
                assert!(
                    seen[at..]
                        .iter()
                        .all(|s| s.version == "v2" || s.at_ms <= changed + 50),
                    "edge-{i}: {user} went back to v1: {seen:?}"
                );
            }
        }
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

/// The rollout completes at 100%, its chain whole with `steps` steps.
async fn completes_with_each_step_once(c: &Controller, steps: usize) -> anyhow::Result<()> {
    let done = c
        .wait_for("checkout", Duration::from_secs(90), "completed", |v| {
            v["phase"] == "completed"
        })
        .await?;
    assert_eq!(done["weight_bp"], 10_000, "{done}");
    let actions = audit_whole(c, "checkout").await?;
    let taken = actions.iter().filter(|a| *a == "step").count();
    assert_eq!(taken, steps, "{actions:?}");
    Ok(())
}

/// The audit chain as controller `c` serves it: seqs 1..n in order, each
/// step recorded once; verified. The actions, in order.
async fn audit_whole(c: &Controller, rollout: &str) -> anyhow::Result<Vec<String>> {
    let history = c
        .get(&format!("/v1/rollouts/{rollout}/history"), VIEWER_TOKEN)
        .await?;
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
    let verify = c.get("/v1/audit/verify", ADMIN_TOKEN).await?;
    assert_eq!(verify["ok"], true, "{verify}");
    Ok(records
        .iter()
        .filter_map(|r| r["action"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_killed_mid_rollout_is_replaced_within_the_ttl_and_an_interval_and_nothing_is_lost_or_doubled(
) -> anyhow::Result<()> {
    let mut site = Site::start(60).await?;
    // Applied through the follower: forwarded to the leader, answered once
    // it is in etcd.
    let out = site.apply(
        &site.controllers[1],
        &spec_yaml(
            &[(10.0, "4s"), (30.0, "4s"), (60.0, "4s"), (100.0, "2s")],
            30,
        ),
    )?;
    assert!(out.contains("checkout"), "{out}");
    // Mid-rollout, as the follower sees it from its watch.
    let b = &site.controllers[1];
    b.wait_for("checkout", Duration::from_secs(60), "at step 2", |v| {
        v["step"].as_u64().unwrap_or(0) >= 1
    })
    .await?;
    let before = b.rollout("checkout").await?;
    let step_before = before["step"].as_u64().unwrap_or(0);
    site.controllers[0].kill();
    let b = &site.controllers[1];
    // The analysis interval of the spec is 1 s.
    let took = wait_leading(b, Duration::from_secs(TTL_S * 3)).await?;
    assert!(
        took <= Duration::from_secs(TTL_S + 1),
        "takeover took {took:?} for a {TTL_S} s lease and a 1 s interval"
    );
    // It continues from its step: the new leader's first decision is the
    // next step, not a second take of this one or a start from the first.
    let next = b
        .wait_for("checkout", Duration::from_secs(30), "the next step", |v| {
            v["step"].as_u64().unwrap_or(0) > step_before
        })
        .await?;
    assert_eq!(next["step"].as_u64(), Some(step_before + 1), "{next}");
    completes_with_each_step_once(b, 3).await?;
    // Every Envoy routed throughout, and every one reached the canary.
    users_saw_nothing(&site);
    site.wait_everyone_reaches_v2(Duration::from_secs(5))
        .await?;
    Ok(())
}

/// The leader cut off from every etcd member (the proxies and the test
/// still reach it): it stops serving the config it can no longer know is
/// current, the follower is elected, an abort sent to it during the
/// failover lands and reaches every proxy within 2 s of the election, and
/// the old leader, healed, wrote nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_abort_to_the_follower_while_the_leader_is_partitioned_from_etcd_reaches_every_proxy_and_the_old_leader_writes_nothing(
) -> anyhow::Result<()> {
    let site = Site::start(40).await?;
    let (a, b) = (&site.controllers[0], &site.controllers[1]);
    site.apply(a, &spec_yaml(&[(30.0, "1h"), (100.0, "1s")], 30))?;
    site.wait_everyone_reaches_v2(Duration::from_secs(20))
        .await?;

    let etcd_ips: Vec<&str> = site.etcd_hosts.iter().map(|h| h.ip.as_str()).collect();
    site.controller_hosts[0].cut_from(&etcd_ips)?;
    // The old leader, still reachable, knows it is cut off and says so
    // rather than serve the weights an abort may overtake.
    let deadline = Instant::now() + Duration::from_secs(TTL_S + 1);
    while reqwest::get(format!("{}/healthz", a.url())).await?.status() != 503 {
        assert!(Instant::now() < deadline, "the old leader never said so");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An abort typed now, mid-failover, to the follower: nobody can write
    // yet (503, retry-after), the CLI asks again, and it lands once the
    // follower is elected.
    let abort = tokio::process::Command::from(b.cli_command(
        Some(OPERATOR_TOKEN),
        &["abort", "checkout", "--reason", "leader partitioned"],
    )?)
    .output();
    let abort = tokio::spawn(abort);
    let took = wait_leading(b, Duration::from_secs(TTL_S * 4)).await?;
    assert!(
        took <= Duration::from_secs(TTL_S + 2),
        "election took {took:?}"
    );
    let elected_ms = now_ms();
    let out = abort.await??;
    let landed_ms = now_ms();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("aborted"));
    eprintln!(
        "the abort typed during the failover returned {} ms after the election",
        landed_ms - elected_ms
    );
    let poll = reqwest::Client::new()
        .get(format!("{}/v1/config", a.url()))
        .bearer_auth(ENVOY_TOKEN)
        .send()
        .await?;
    assert_eq!(poll.status(), 503);
    assert!(!leading(a).await);
    // Within 2 s of the election, no proxy sends anyone to the canary.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (i, served) in site.served().iter().enumerate() {
        let late: Vec<_> = served
            .iter()
            .filter(|s| s.at_ms > elected_ms + 2000)
            .collect();
        assert!(!late.is_empty(), "edge-{i} served nobody");
        assert!(
            late.iter().all(|s| s.version == "v1" && s.status == 200),
            "edge-{i}: {:?}",
            late.iter().find(|s| s.version != "v1")
        );
    }

    // Healed, the old leader writes nothing: the log is the apply and the
    // abort, whole and verified; it follows, and serves the abort.
    site.controller_hosts[0].heal_from(&etcd_ips)?;
    tokio::time::sleep(Duration::from_secs(TTL_S + 1)).await;
    assert_eq!(audit_whole(b, "checkout").await?, ["apply", "abort"]);
    assert_eq!(audit_whole(a, "checkout").await?, ["apply", "abort"]);
    assert!(leading(b).await && !leading(a).await, "after healing");
    assert_eq!(a.rollout("checkout").await?["phase"], "aborted");
    assert!(
        a.log().contains("lost the leader's lease"),
        "the old leader said nothing:\n{}",
        a.log()
    );
    assert!(site.served().iter().flatten().all(|s| s.status == 200));
    Ok(())
}

/// One proxy cut off from every controller (its own firewall drops both
/// ways): it keeps routing on its last weights, is reported stale in
/// status and metrics while the others apply a promotion, and has the new
/// weights within one poll interval (and the tick the poller fires on) of
/// healing. Another reaches only the follower: the leader counts it as
/// applied all the same (the controllers share what polls they saw).
#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_cut_off_from_every_controller_routes_on_its_last_weights_and_catches_up_within_a_poll(
) -> anyhow::Result<()> {
    let site = Site::start(60).await?;
    let a = &site.controllers[0];
    site.apply(a, &spec_yaml(&[(20.0, "1h"), (100.0, "1h")], 30))?;
    a.wait_for(
        "checkout",
        Duration::from_secs(20),
        "applied by every proxy",
        |v| v["proxies_applied"] == ENVOYS,
    )
    .await?;

    let controllers: Vec<&str> = site.controllers.iter().map(|c| c.host.as_str()).collect();
    let cut = &site.envoy_hosts[0];
    cut.cut_from(&controllers)?;
    site.envoy_hosts[1].cut_from(&controllers[..1])?;
    let cut_ms = now_ms();
    // A person moves everyone to the canary while edge-0 cannot hear it.
    a.ok(&["promote", "checkout", "--reason", "while edge-0 is cut off"])?;
    let stale = a
        .wait_for("checkout", Duration::from_secs(8), "edge-0 stale", |v| {
            v["proxies_stale"]
                .as_array()
                .is_some_and(|s| s.iter().any(|p| p == "edge-0"))
                && v["proxies_applied"] == ENVOYS - 1
        })
        .await?;
    assert_eq!(stale["proxies_applied"], ENVOYS - 1, "{stale}");
    assert_eq!(stale["proxies_lagging"], json!([]), "{stale}");
    let health = a.get("/v1/health", VIEWER_TOKEN).await?;
    assert_eq!(health["proxies_known"], ENVOYS, "{health}");
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", a.url()))
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains("dimmer_proxies_stale 1"), "{metrics}");
    let served = site.served();
    // Fail-static on edge-0: still its last weights (a fifth on the
    // canary), nothing failed; the others have moved.
    let after = |s: &[Served], from: u64| -> Vec<Served> {
        s.iter().filter(|r| r.at_ms > from).cloned().collect()
    };
    let during = after(&served[0], cut_ms + 1000);
    let on_v2 = during.iter().filter(|s| s.version == "v2").count() as f64;
    assert!(
        !during.is_empty() && on_v2 / (during.len() as f64) < 0.5,
        "{on_v2} of {}",
        during.len()
    );
    for (i, s) in served.iter().enumerate().skip(1) {
        let late = after(s, cut_ms + 1500);
        assert!(
            !late.is_empty() && late.iter().all(|r| r.version == "v2"),
            "edge-{i} did not move"
        );
    }

    cut.heal_from(&controllers)?;
    let healed_ms = now_ms();
    tokio::time::sleep(Duration::from_millis(2 * POLL_MS + 500)).await;
    // Within one poll interval, and the tick its poller fires on, every
    // request on edge-0 goes to the canary.
    let bound = POLL_MS + TICK_MS + 50;
    let late = after(&site.served()[0], healed_ms + bound);
    assert!(!late.is_empty());
    assert!(
        late.iter().all(|s| s.version == "v2"),
        "edge-0 not caught up {bound} ms after healing: {:?}",
        late.iter().find(|s| s.version != "v2")
    );
    let first = after(&site.served()[0], healed_ms)
        .iter()
        .filter(|s| s.version == "v2")
        .map(|s| s.at_ms - healed_ms)
        .min();
    eprintln!("edge-0 routed to v2 {first:?} ms after healing (bound {bound} ms)");
    a.wait_for("checkout", Duration::from_secs(5), "caught up", |v| {
        v["proxies_applied"] == ENVOYS
    })
    .await?;
    assert!(site.served().iter().flatten().all(|s| s.status == 200));
    Ok(())
}

/// etcd's own Raft leader SIGKILLed mid-rollout, users on every proxy:
/// nothing they see changes, and the rollout goes on, every step once.
#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_member_killed_mid_rollout_changes_nothing_users_see() -> anyhow::Result<()> {
    let mut site = Site::start(60).await?;
    let a = &site.controllers[0];
    site.apply(
        a,
        &spec_yaml(&[(10.0, "3s"), (40.0, "3s"), (100.0, "1s")], 30),
    )?;
    a.wait_for("checkout", Duration::from_secs(60), "at step 2", |v| {
        v["step"].as_u64().unwrap_or(0) >= 1
    })
    .await?;
    let member = site
        .etcd
        .raft_leader()
        .await
        .ok_or_else(|| anyhow::anyhow!("no etcd member says who leads Raft"))?;
    site.etcd.kill(member);
    let (leader, _) = site.wait_leader(Duration::from_secs(10)).await?;
    let c = &site.controllers[leader];
    completes_with_each_step_once(c, 2).await?;
    site.wait_everyone_reaches_v2(Duration::from_secs(5))
        .await?;
    users_saw_nothing(&site);
    // Every proxy applied the last revision.
    c.wait_for("checkout", Duration::from_secs(5), "applied", |v| {
        v["proxies_applied"] == ENVOYS
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_to_a_follower_are_applied_by_the_leader_and_both_serve_one_config(
) -> anyhow::Result<()> {
    let etcd = Etcd::start(3).await?;
    let admin = free_port()?; // no Envoy: decisions here are people's
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
    std::fs::write(
        &path,
        spec_yaml(&[(20.0, "1h")], 30).replace("checkout", "search"),
    )?;
    let out = b.ok(&["apply", "-f", &path.display().to_string()])?;
    assert!(out.contains("search"), "{out}");
    // Two documents, one change: one etcd transaction, one revision.
    let rev = config(&a).await?["revision"].as_u64().unwrap_or(0);
    let flag = "kind: flag\nkey: new-cart\nowner: shop\nlifecycle: permanent\n\
                identity: [{header: x-user-id}]\ndefault_variant: \"off\"\nvariant: \"on\"\n\
                steps: [{percent: 10}]\n";
    let cart = spec_yaml(&[(10.0, "1h")], 30)
        .replace("name: checkout", "name: cart\nmatch: {path_prefix: /cart}");
    std::fs::write(&path, format!("{cart}---\n{flag}"))?;
    let out = b.ok(&["apply", "-f", &path.display().to_string()])?;
    assert!(out.contains("new-cart"), "{out}");
    assert_eq!(config(&a).await?["revision"].as_u64(), Some(rev + 1));
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
    assert!(leading(&a).await ^ leading(&b).await);
    Ok(())
}

/// Fencing, against a real etcd: a store without the leader's lease cannot
/// write; with it, it can; once the lease is gone, never again — even a
/// leader that has not noticed.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_without_the_leaders_lease_is_refused_ever() -> anyhow::Result<()> {
    use dimmer::store::audit::AuditKey;
    use dimmer::store::etcd::{EtcdStore, Fence};
    use dimmer::store::{Entry, StateStore, StoreError};
    use dimmer_decide::engine::RolloutState;
    use dimmer_decide::spec::RolloutSpec;

    let etcd = Etcd::start(1).await?;
    let endpoints = vec![format!("127.0.0.1:{}", etcd.members[0].client_port)];
    let store = EtcdStore::connect(
        &endpoints,
        "/fence-test/",
        AuditKey::from_bytes([7; 32]),
        Duration::from_secs(2),
        None,
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

/// A controller started with another audit key against the fleet's etcd
/// (a typo in a deployment's secret) is given every chance to lead — the
/// others frozen past their lease — and writes nothing: it never stands,
/// says why in its log, `/v1/health` and to the CLI, and serves reads. The
/// chain still verifies on every controller.
#[tokio::test(flavor = "multi_thread")]
async fn a_controller_with_another_audit_key_never_leads_and_the_chain_stays_whole(
) -> anyhow::Result<()> {
    let etcd = Etcd::start(3).await?;
    let admin = free_port()?; // no Envoy: decisions here are people's
    let keys = tempfile::tempdir()?;
    let store = etcd.store_url();
    let args = |key: &str| {
        [
            "--store",
            &store,
            "--advertise",
            "{URL}",
            "--lease-ttl",
            "2s",
            "--audit-key",
            key,
        ]
        .map(str::to_owned)
    };
    let (good, bad) = (keys.path().join("good.key"), keys.path().join("bad.key"));
    std::fs::write(&good, "11".repeat(32))?;
    std::fs::write(&bad, "22".repeat(32))?;
    let good_args = args(&good.display().to_string());
    let good_args: Vec<&str> = good_args.iter().map(String::as_str).collect();
    let a = Controller::start(MetricsFrom::EnvoyAdmin(admin), &good_args).await?;
    wait_leading(&a, Duration::from_secs(10)).await?;
    let b = Controller::start(MetricsFrom::EnvoyAdmin(admin), &good_args).await?;
    let path = a.dir().join("spec.yaml");
    std::fs::write(&path, spec_yaml(&[(10.0, "1h"), (100.0, "1s")], 30))?;
    a.ok(&["apply", "-f", &path.display().to_string()])?;
    let head = a.get("/v1/audit/head", VIEWER_TOKEN).await?;

    let bad_args = args(&bad.display().to_string());
    let bad_args: Vec<&str> = bad_args.iter().map(String::as_str).collect();
    let c = Controller::start(MetricsFrom::EnvoyAdmin(admin), &bad_args).await?;
    // The others freeze: their lease runs out, nobody else stands.
    let freeze = |sig: &str, ctl: &Controller| {
        std::process::Command::new("kill")
            .args([sig, &ctl.pid().unwrap_or_default().to_string()])
            .status()
    };
    freeze("-STOP", &a)?;
    freeze("-STOP", &b)?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let health = c.get("/v1/health", VIEWER_TOKEN).await?;
    assert_eq!(health["leading"], false, "{health}");
    assert_eq!(health["audit_key_matches"], false, "{health}");
    let why = health["audit_key_problem"].as_str().unwrap_or_default();
    assert!(
        why.contains("audit key does not match the chain's"),
        "{health}"
    );
    assert!(
        c.log().contains("not standing for leader"),
        "its log says why:\n{}",
        c.log()
    );
    // Reads are served; the CLI hears why writes are not.
    let status = c.cli(Some(VIEWER_TOKEN), &["status", "checkout"])?;
    assert!(status.status.success(), "{status:?}");
    let said = String::from_utf8_lossy(&status.stderr);
    assert!(said.contains("audit key does not match"), "{said}");
    assert_eq!(c.get("/v1/audit/head", VIEWER_TOKEN).await?, head);
    freeze("-CONT", &a)?;
    freeze("-CONT", &b)?;
    let (la, lb) = (
        wait_leading(&a, Duration::from_secs(10)).await,
        wait_leading(&b, Duration::from_secs(10)).await,
    );
    assert!(
        la.is_ok() || lb.is_ok(),
        "a controller with the key leads again"
    );
    // Nothing the third wrote: the chain verifies on every controller with
    // the key, head unchanged; the third says it cannot check checkpoints
    // with its key, and that every link is intact.
    for ctl in [&a, &b] {
        let verify = ctl.get("/v1/audit/verify", ADMIN_TOKEN).await?;
        assert_eq!(verify["ok"], true, "{verify}");
        assert_eq!(ctl.get("/v1/audit/head", VIEWER_TOKEN).await?, head);
    }
    assert_eq!(c.get("/v1/audit/head", VIEWER_TOKEN).await?, head);
    let verify = reqwest::Client::new()
        .get(format!("{}/v1/audit/verify", c.url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    assert_eq!(verify.status(), 409);
    let verify: serde_json::Value = verify.json().await?;
    assert_eq!(verify["links_intact"], true, "{verify}");
    assert!(
        verify["error"]
            .as_str()
            .unwrap_or_default()
            .contains("audit key does not match"),
        "{verify}"
    );
    assert_eq!(c.get("/v1/health", VIEWER_TOKEN).await?["leading"], false);
    Ok(())
}
