//! The rollout service against a fake metrics source.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dimmer_decide::engine::Phase;

use super::*;
use crate::metrics::fake::{Behaviour, FakeSource};
use crate::metrics::MetricsSource;
use crate::store::audit::AuditKey;
use crate::store::Store;
use dimmer_decide::counts::{Snapshot, VersionCounts};
use dimmer_decide::spec::RolloutSpec;

fn spec(extra: &str) -> RolloutSpec {
    RolloutSpec::from_yaml(&format!(
        "name: checkout\nstable: v1\ncanary: v2\nidentity: [{{header: x-user-id}}]\n\
         steps:\n- {{percent: 10, approval: true}}\n- {{percent: 100}}\n\
         analysis: {{min_requests: 50, interval: 200ms, promote_on: no_alarm}}\n{extra}"
    ))
    .unwrap()
}

fn snap(v1: f64, v2: f64) -> Snapshot {
    let c = |n: f64| {
        let mut c = VersionCounts::default();
        c.by_class.insert("2xx".into(), n);
        c
    };
    Snapshot::from_versions([("v1".to_string(), c(v1)), ("v2".to_string(), c(v2))].into())
}

struct Fixture {
    service: Arc<Service>,
    source: Arc<FakeSource>,
    _dir: tempfile::TempDir,
}

fn fixture(timeout: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db"), AuditKey::from_bytes([1; 32])).unwrap();
    let source = Arc::new(FakeSource::default());
    let service = Service::new(
        store,
        Arc::clone(&source) as Arc<dyn MetricsSource>,
        Settings {
            metrics_timeout: timeout,
            ..Settings::default()
        },
    )
    .unwrap();
    Fixture {
        service,
        source,
        _dir: dir,
    }
}

/// Runs the analysis until `check` holds, at most 50 looks.
async fn look_until(f: &Fixture, check: impl Fn(&StatusView) -> bool) -> StatusView {
    for _ in 0..50 {
        f.service.state.lock().await.last_analysis.clear();
        f.service.tick().await;
        let v = f.service.status(Some("checkout")).await.unwrap().remove(0);
        if check(&v) {
            return v;
        }
    }
    panic!(
        "never reached: {:?}",
        f.service.status(Some("checkout")).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn polls_and_aborts_do_not_wait_for_a_hanging_source() {
    let f = fixture(Duration::from_secs(30));
    f.service.apply(spec(""), "alice", false).await.unwrap();
    f.source.behave(Behaviour::Hang);
    let runner = {
        let s = Arc::clone(&f.service);
        tokio::spawn(async move { s.tick().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!runner.is_finished(), "the fetch should still hang");
    let start = Instant::now();
    let doc = f.service.config_doc();
    let v = f
        .service
        .command("checkout", Command::Abort, "alice", "paging")
        .await
        .unwrap();
    let v2 = f
        .service
        .apply(spec("slo: {objective_percent: 99}\n"), "alice", false)
        .await;
    let took = start.elapsed();
    assert_eq!(v.weight_bp, 0);
    assert!(v2.is_ok());
    assert!(doc.revision >= 1);
    assert!(took < Duration::from_millis(500), "waited {took:?}");
    runner.abort();
}

#[tokio::test]
async fn a_hanging_source_costs_one_timeout_and_holds_with_the_reason() {
    let f = fixture(Duration::from_millis(100));
    f.service.apply(spec(""), "alice", false).await.unwrap();
    f.source.behave(Behaviour::Hang);
    let start = Instant::now();
    f.service.tick().await;
    assert!(start.elapsed() < Duration::from_secs(2));
    let v = f.service.status(Some("checkout")).await.unwrap().remove(0);
    assert!(
        v.reason.contains("no metrics") && v.reason.contains("did not answer"),
        "{}",
        v.reason
    );
    assert!(v.metrics_lost_since_ms.is_some());
    assert_eq!(v.phase, Phase::Progressing);
}

#[tokio::test]
async fn promoted_during_an_outage_the_last_step_is_judged_on_its_own_data() {
    let f = fixture(Duration::from_secs(1));
    f.source.set("checkout", snap(1000.0, 100.0));
    f.service.apply(spec(""), "alice", false).await.unwrap();
    look_until(&f, |v| v.reason.contains("baseline taken")).await;
    f.source.set("checkout", snap(1900.0, 200.0));
    look_until(&f, |v| v.reason.contains("waiting for approval")).await;
    // Metrics go down; a person promotes to the last step.
    f.source.behave(Behaviour::Fail);
    f.service.tick().await;
    let v = f
        .service
        .command("checkout", Command::Promote, "alice", "go")
        .await
        .unwrap();
    assert_eq!((v.step, v.weight_bp), (1, 10_000));
    // Metrics come back, with no traffic since: never completed on that.
    f.source.set("checkout", snap(5000.0, 900.0));
    f.source.behave(Behaviour::Answer);
    for _ in 0..10 {
        f.service.state.lock().await.last_analysis.clear();
        f.service.tick().await;
    }
    let v = f.service.status(Some("checkout")).await.unwrap().remove(0);
    assert_eq!(v.phase, Phase::Progressing, "{}", v.reason);
    assert!(v.reason.contains("canary has 0 of 50"), "{}", v.reason);
    // Traffic at 100% completes it.
    f.source.set("checkout", snap(5000.0, 1000.0));
    let v = look_until(&f, |v| v.phase == Phase::Completed).await;
    assert!(v.reason.contains("last step"), "{}", v.reason);
}

#[tokio::test]
async fn apply_is_idempotent_in_every_phase_and_restart_is_explicit() {
    let f = fixture(Duration::from_secs(1));
    let s = &f.service;
    let first = s.apply(spec(""), "alice", false).await.unwrap();
    assert_eq!(first.applied, Some(Applied::Created));
    let again = s.apply(spec(""), "alice", false).await.unwrap();
    assert_eq!(again.applied, Some(Applied::Unchanged));
    assert_eq!(again.revision, first.revision);
    s.command("checkout", Command::Pause, "alice", "x")
        .await
        .unwrap();
    let v = s.apply(spec(""), "alice", false).await.unwrap();
    assert_eq!(
        (v.applied, v.phase),
        (Some(Applied::Unchanged), Phase::Paused)
    );
    s.command("checkout", Command::Resume, "alice", "x")
        .await
        .unwrap();
    s.command("checkout", Command::Promote, "alice", "x")
        .await
        .unwrap();
    s.command("checkout", Command::Promote, "alice", "x")
        .await
        .unwrap();
    let done = s.status(Some("checkout")).await.unwrap().remove(0);
    assert_eq!(done.phase, Phase::Completed);
    let v = s.apply(spec(""), "alice", false).await.unwrap();
    assert_eq!(
        (v.applied, v.phase, v.weight_bp),
        (Some(Applied::Unchanged), Phase::Completed, 10_000)
    );
    // Aborted: re-applying does not send users back to the canary.
    s.apply(spec("slo: {objective_percent: 99}\n"), "alice", false)
        .await
        .unwrap();
    s.command("checkout", Command::Abort, "alice", "x")
        .await
        .unwrap();
    let v = s
        .apply(spec("slo: {objective_percent: 99}\n"), "alice", false)
        .await
        .unwrap();
    assert_eq!(
        (v.applied, v.phase, v.weight_bp),
        (Some(Applied::Unchanged), Phase::Aborted, 0)
    );
    let v = s
        .apply(spec("slo: {objective_percent: 99}\n"), "bob", true)
        .await
        .unwrap();
    assert_eq!(
        (v.applied, v.phase, v.weight_bp),
        (Some(Applied::Restarted), Phase::Progressing, 1000)
    );
    let history = s.history("checkout").unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.action.as_str(), last.actor.as_str()),
        ("restart", "bob")
    );
}

#[tokio::test]
async fn every_receiver_hears_a_delete_and_the_head_moves() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let f = fixture(Duration::from_secs(1));
    f.service
        .apply(spec(&format!("webhooks: [{url}]\n")), "alice", false)
        .await
        .unwrap();
    let head_before = f.service.audit_head();
    f.service.delete("checkout", "alice", "done").await.unwrap();
    let mut actions = Vec::new();
    while actions.len() < 2 {
        let v = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        actions.push(v["action"].as_str().unwrap_or_default().to_owned());
        assert!(v["audit_head"]["seq"].as_i64().unwrap_or(0) >= 1, "{v}");
    }
    assert_eq!(actions, ["apply", "delete"]);
    assert_eq!(f.service.audit_head().seq, head_before.seq + 1);
    assert_eq!(f.service.verify_audit().unwrap(), Ok(2));
    // History outlives the rollout; an unknown name has none.
    assert_eq!(f.service.history("checkout").unwrap().len(), 2);
    assert!(matches!(
        f.service.history("nope"),
        Err(ServiceError::NotFound(_))
    ));
}

fn flag(key: &str, extra: &str) -> RolloutSpec {
    RolloutSpec::from_yaml(&format!(
        "kind: flag\nkey: {key}\nowner: team-a\nlifecycle: permanent\nidentity: [{{header: x-user-id}}]\n\
         default_variant: \"off\"\nvariant: \"on\"\nsteps:\n- {{percent: 10}}\n- {{percent: 100}}\n\
         analysis: {{min_requests: 50, interval: 200ms, promote_on: no_alarm}}\n{extra}"
    ))
    .unwrap()
}

#[tokio::test]
async fn flags_are_served_beside_rollouts_and_bound_by_their_prerequisites() {
    let f = fixture(Duration::from_secs(1));
    f.service.apply(spec(""), "alice", false).await.unwrap();
    f.service
        .apply(flag("parent", ""), "alice", false)
        .await
        .unwrap();
    // A prerequisite that does not exist is refused at apply, naming it.
    let err = f
        .service
        .apply(
            flag("child", "requires: [{flag: ghost, variants: [\"on\"]}]\n"),
            "alice",
            false,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no flag \"ghost\""), "{err}");
    f.service
        .apply(
            flag("child", "requires: [{flag: parent, variants: [\"on\"]}]\n"),
            "alice",
            false,
        )
        .await
        .unwrap();
    let doc = f.service.config_doc();
    assert_eq!(doc.rollouts.len(), 1);
    let keys: Vec<&str> = doc.flags.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys, ["child", "parent"]);
    assert_eq!(doc.flags[1].variants[1].weight, 1000);
    // Deleting what another flag requires would leave a config no proxy takes.
    let err = f
        .service
        .delete("parent", "alice", "cleanup")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused") && err.contains("parent"), "{err}");
    f.service.delete("child", "alice", "done").await.unwrap();
    f.service.delete("parent", "alice", "done").await.unwrap();
    // Whatever the proxies were served was valid all along.
    let body = serde_json::to_vec(&*f.service.config_doc()).unwrap();
    dimmer_core::parse_config_doc(&body).unwrap();
}

#[tokio::test]
async fn experiments_of_one_group_may_not_overlap_and_kinds_do_not_mix() {
    let f = fixture(Duration::from_secs(1));
    let ex = |from: u32, to: u32| {
        format!("exclusion: {{group: checkout-exp, from_percent: {from}, to_percent: {to}}}\n")
    };
    f.service
        .apply(flag("a", &ex(0, 50)), "alice", false)
        .await
        .unwrap();
    let err = f
        .service
        .apply(flag("b", &ex(40, 100)), "alice", false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("overlaps flag \"a\""), "{err}");
    f.service
        .apply(flag("b", &ex(50, 100)), "alice", false)
        .await
        .unwrap();
    f.service.apply(spec(""), "alice", false).await.unwrap();
    let err = f
        .service
        .apply(flag("checkout", ""), "alice", false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is a rollout"), "{err}");
}

#[tokio::test]
async fn turning_a_flag_off_serves_the_default_at_once_and_is_audited() {
    let f = fixture(Duration::from_secs(1));
    f.service
        .apply(flag("dark", ""), "alice", false)
        .await
        .unwrap();
    let before = f.service.config_doc().revision;
    let v = f
        .service
        .set_flag("dark", false, "bob", "incident 42")
        .await
        .unwrap();
    assert!(v.flag_off && v.is_flag);
    assert_eq!(v.phase, Phase::Paused, "a flag switched off stops stepping");
    let doc = f.service.config_doc();
    assert!(doc.revision > before);
    assert_eq!(doc.flags[0].state, dimmer_core::config::FlagState::Disabled);
    // The same state again changes nothing.
    f.service
        .set_flag("dark", false, "bob", "again")
        .await
        .unwrap();
    assert_eq!(f.service.config_doc().revision, doc.revision);
    // A changed spec keeps it off: only a person turns it on.
    f.service
        .apply(flag("dark", "description: reworded\n"), "alice", false)
        .await
        .unwrap();
    assert_eq!(
        f.service.config_doc().flags[0].state,
        dimmer_core::config::FlagState::Disabled
    );
    f.service
        .set_flag("dark", true, "bob", "fixed")
        .await
        .unwrap();
    assert_eq!(
        f.service.config_doc().flags[0].state,
        dimmer_core::config::FlagState::Enabled
    );
    let actions: Vec<String> = f
        .service
        .history("dark")
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {}", r.actor, r.action))
        .collect();
    assert_eq!(
        actions,
        ["alice apply", "bob flag-off", "alice apply", "bob flag-on"]
    );
    // Rollouts are not switched like flags.
    f.service.apply(spec(""), "alice", false).await.unwrap();
    let err = f
        .service
        .set_flag("checkout", false, "bob", "x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a flag"), "{err}");
    // The listing marks what nobody evaluated.
    f.source.set("dark", Snapshot::default());
    let list = f.service.flags(0).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].toggles_7d, 2);
    assert!(
        list[0].marks.contains(&"never evaluated".to_owned()),
        "{:?}",
        list[0].marks
    );
}

#[tokio::test]
async fn the_listing_marks_expired_flags_and_flags_ready_for_removal() {
    let f = fixture(Duration::from_secs(1));
    let old = RolloutSpec::from_yaml(
        "kind: flag\nkey: old\nowner: team-a\nexpires: 2020-01-01\nidentity: [{header: x-user-id}]\n\
         default_variant: \"off\"\nvariant: \"on\"\nsteps:\n- {percent: 100}\n",
    )
    .unwrap();
    f.service.apply(old, "alice", false).await.unwrap();
    f.service
        .apply(flag("kept", "expires: 2999-01-01\n"), "alice", false)
        .await
        .unwrap();
    let before = f.service.config_doc().revision;
    f.service
        .command("old", Command::Promote, "alice", "done")
        .await
        .unwrap();
    // Completing at 100% changes no weight, but it changes the document (no
    // more latency per variant): a new revision, or no proxy would fetch it.
    assert!(f.service.config_doc().revision > before);
    let mut c = VersionCounts::default();
    c.by_class.insert("2xx".into(), 12.0);
    f.source.set(
        "old",
        Snapshot::from_versions([("on".to_string(), c)].into()),
    );
    // A finished flag's latency is no longer recorded; one being rolled out's is.
    let doc = f.service.config_doc();
    let recorded: Vec<(&str, bool)> = doc
        .flags
        .iter()
        .map(|f| (f.key.as_str(), f.record_latency))
        .collect();
    assert_eq!(recorded, [("kept", true), ("old", false)]);
    let list = f.service.flags(0).await.unwrap();
    let marks = |key: &str| {
        list.iter()
            .find(|v| v.key == key)
            .map(|v| v.marks.clone())
            .unwrap()
    };
    assert_eq!(marks("old"), ["expired", "ready for code removal"]);
    // A permanent flag is never due for removal, and it has no counts at all.
    assert_eq!(marks("kept"), ["never evaluated"]);
    let old = list.iter().find(|v| v.key == "old").unwrap();
    assert_eq!(
        (old.evaluations, old.evaluations_window_ms),
        (Some(12.0), 0)
    );
    // Not yet due with the default two weeks.
    let list = f.service.flags(14 * 24 * 3600 * 1000).await.unwrap();
    assert_eq!(
        list.iter().find(|v| v.key == "old").unwrap().marks,
        ["expired"]
    );
}

#[tokio::test]
async fn a_rollout_counted_by_envoy_reads_its_clusters_and_holds_without_them() {
    let f = fixture(Duration::from_secs(1));
    let counted = "counting: {by: envoy, clusters: {v1: app-v1, v2: app-v2}}\n";
    f.service
        .apply(spec(counted), "alice", false)
        .await
        .unwrap();
    // The filter does not count it.
    assert!(!f.service.config_doc().rollouts[0].count);
    // Counts under the rollout's name are not its counts: only its clusters'.
    f.source.set("checkout", snap(1000.0, 1000.0));
    let v = look_until(&f, |v| v.reason.contains("no counts")).await;
    assert_eq!(v.phase, Phase::Progressing);
    let mut clusters = Snapshot::default();
    for (cluster, n) in [("app-v1", 900.0), ("app-v2", 100.0), ("other", 5.0)] {
        clusters
            .counts_mut("", cluster)
            .by_class
            .insert("2xx".into(), n);
    }
    f.source.set_clusters(clusters.clone());
    let v = look_until(&f, |v| v.reason.contains("baseline taken")).await;
    // More traffic, all healthy: the gate is the only thing that holds it.
    for (cluster, n) in [("app-v1", 1800.0), ("app-v2", 200.0)] {
        clusters
            .counts_mut("", cluster)
            .by_class
            .insert("2xx".into(), n);
    }
    f.source.set_clusters(clusters);
    let v2 = look_until(&f, |v| v.reason.contains("approval")).await;
    assert_eq!(
        v2.phase,
        Phase::Progressing,
        "{} then {}",
        v.reason,
        v2.reason
    );
}

#[test]
fn counting_by_envoy_names_a_cluster_per_version() {
    let bad = [
        (
            "counting: {by: envoy}\n",
            "names no cluster for version \"v1\"",
        ),
        (
            "counting: {by: envoy, clusters: {v1: a, v2: a}}\n",
            "a cluster of its own",
        ),
        (
            "counting: {by: envoy, clusters: {v1: a, v2: b, v3: c}}\n",
            "names exactly the versions",
        ),
        (
            "counting: {by: envoy, clusters: {v1: a, v2: \"b,c\"}}\n",
            "counting.clusters.v2",
        ),
        (
            "counting: {clusters: {v1: a, v2: b}}\n",
            "only with `by: envoy`",
        ),
    ];
    for (extra, want) in bad {
        let text =
            format!("name: checkout\nstable: v1\ncanary: v2\nsteps:\n- {{percent: 10}}\n{extra}");
        let err = RolloutSpec::from_yaml(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}

fn abn() -> RolloutSpec {
    RolloutSpec::from_yaml(
        "name: checkout\nstable: v1\narms: [v2, v3]\nidentity: [{header: x-user-id}]\n\
         steps:\n- {percent: 10}\n- {percent: 40}\n\
         analysis: {min_requests: 50, interval: 200ms, method: threshold, promote_on: no_alarm}\n",
    )
    .unwrap()
}

fn counts3(v1: (f64, f64), v2: (f64, f64), v3: (f64, f64)) -> Snapshot {
    let c = |(ok, err): (f64, f64)| {
        let mut c = VersionCounts::default();
        c.by_class.insert("2xx".into(), ok);
        c.by_class.insert("5xx".into(), err);
        c
    };
    Snapshot::from_versions(
        [
            ("v1".to_string(), c(v1)),
            ("v2".to_string(), c(v2)),
            ("v3".to_string(), c(v3)),
        ]
        .into(),
    )
}

async fn arm(f: &Fixture, name: &str) -> StatusView {
    f.service.status(Some(name)).await.unwrap().remove(0)
}

async fn look(f: &Fixture) {
    f.service.state.lock().await.last_analysis.clear();
    f.service.tick().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ab_n_arms_share_one_route_in_lanes_and_one_is_aborted_alone() {
    let f = fixture(Duration::from_secs(5));
    let v = f.service.apply(abn(), "alice", false).await.unwrap();
    let names: Vec<&str> = v.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["checkout.v2", "checkout.v3"]);
    assert!(
        v.arms[0].label.contains("arm v2 of A/B/n checkout"),
        "{}",
        v.arms[0].label
    );
    // The A/B/n's own name shows every arm.
    let group = f.service.status(Some("checkout")).await.unwrap().remove(0);
    let names: Vec<&str> = group.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["checkout.v2", "checkout.v3"]);
    let doc = f.service.config_doc();
    assert_eq!(doc.rollouts.len(), 1, "one route: {doc:?}");
    let r = &doc.rollouts[0];
    assert_eq!(
        (r.name.as_str(), r.lanes, r.salt.as_str()),
        ("checkout", true, "checkout")
    );
    let w: Vec<(&str, u32)> = r
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v.weight))
        .collect();
    assert_eq!(w, [("v1", 8000), ("v2", 1000), ("v3", 1000)]);

    // The arms are counted under the one route; v3 fails, v2 does not.
    f.source
        .set("checkout", counts3((0.0, 0.0), (0.0, 0.0), (0.0, 0.0)));
    look(&f).await;
    f.source.set(
        "checkout",
        counts3((800.0, 0.0), (100.0, 0.0), (60.0, 40.0)),
    );
    look(&f).await;
    let (v2, v3) = (arm(&f, "checkout.v2").await, arm(&f, "checkout.v3").await);
    assert_eq!(
        (v3.phase, v3.weight_bp),
        (Phase::Aborted, 0),
        "{}",
        v3.reason
    );
    assert_eq!(
        (v2.phase, v2.weight_bp),
        (Phase::Progressing, 4000),
        "{}",
        v2.reason
    );
    let doc = f.service.config_doc();
    let w: Vec<u32> = doc.rollouts[0].versions.iter().map(|v| v.weight).collect();
    assert_eq!(w, [6000, 4000, 0]);

    // v2 passes its last step and waits in its lane for a person.
    f.source.set(
        "checkout",
        counts3((1600.0, 0.0), (500.0, 0.0), (60.0, 40.0)),
    );
    look(&f).await;
    let v2 = arm(&f, "checkout.v2").await;
    assert_eq!(
        (v2.phase, v2.weight_bp),
        (Phase::Completed, 4000),
        "{}",
        v2.reason
    );
    assert!(
        v2.label.contains("dimmer promote makes it the winner"),
        "{}",
        v2.label
    );
    let v = f
        .service
        .command("checkout.v2", Command::Promote, "alice", "v2 converts best")
        .await
        .unwrap();
    assert_eq!(v.weight_bp, 10_000);
    let doc = f.service.config_doc();
    let r = &doc.rollouts[0];
    assert!(!r.lanes);
    let w: Vec<u32> = r.versions.iter().map(|v| v.weight).collect();
    assert_eq!(w, [0, 10_000, 0]);
    let history = f.service.history("checkout").unwrap();
    assert!(history
        .iter()
        .any(|r| r.rollout == "checkout.v3" && r.action == "abort"));
    assert!(history
        .iter()
        .any(|r| r.rollout == "checkout.v2" && r.action == "promote"));

    // Deleting the A/B/n deletes every arm.
    f.service.delete("checkout", "alice", "done").await.unwrap();
    assert!(f.service.status(None).await.unwrap().is_empty());
    assert!(f.service.config_doc().rollouts.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ab_n_specs_are_checked_and_names_cannot_clash() {
    let bad = |yaml: &str| RolloutSpec::from_yaml(yaml).unwrap_err().to_string();
    let base = "name: checkout\nstable: v1\nidentity: [{header: x-user-id}]\n";
    let e = bad(&format!("{base}arms: [v2, v3]\nsteps: [{{percent: 60}}]\n"));
    assert!(
        e.contains("steps[0].percent: each of 2 arms has a lane of 50%"),
        "{e}"
    );
    let e = bad(&format!(
        "{base}arms: [v2, v3]\ncanary: v2\nsteps: [{{percent: 5}}]\n"
    ));
    assert!(e.contains("canary: not with `arms`"), "{e}");
    let e = bad(&format!("{base}arms: [v2, v2]\nsteps: [{{percent: 5}}]\n"));
    assert!(e.contains("arms[1]"), "{e}");
    let e = bad(&format!("{base}arms: [v2]\nsteps: [{{percent: 5}}]\n"));
    assert!(e.contains("arms: A/B/n takes 2"), "{e}");
    let e = bad(&format!("{base}arms: [v2, v1]\nsteps: [{{percent: 5}}]\n"));
    assert!(e.contains("arms[1]: must differ from stable"), "{e}");
    let e = bad(&format!("{base}steps: [{{percent: 5}}]\n"));
    assert!(e.contains("canary: names the new version"), "{e}");
    let e = bad(&format!(
        "{base}arms: [v2, v3]\nsteps: [{{percent: 5}}]\narm_of: other\n"
    ));
    assert!(e.contains("arm_of: is set by the controller"), "{e}");

    let f = fixture(Duration::from_secs(5));
    f.service.apply(spec(""), "alice", false).await.unwrap();
    let e = f.service.apply(abn(), "alice", false).await.unwrap_err();
    assert!(e.to_string().contains("rollout with one canary"), "{e}");
    f.service.delete("checkout", "alice", "x").await.unwrap();
    f.service.apply(abn(), "alice", false).await.unwrap();
    let e = f.service.apply(spec(""), "alice", false).await.unwrap_err();
    assert!(e.to_string().contains("is an A/B/n rollout"), "{e}");
    // Re-applied with one arm fewer: that arm is gone, the others stay.
    let mut three = abn();
    three.arms.push("v4".into());
    three.steps = vec![dimmer_decide::spec::Step {
        percent: 10.0,
        ..abn().steps[0].clone()
    }];
    f.service
        .apply(three.clone(), "alice", false)
        .await
        .unwrap();
    let mut two = three.clone();
    two.arms.pop();
    f.service.apply(two, "alice", false).await.unwrap();
    let names: Vec<String> = f
        .service
        .status(None)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["checkout.v2", "checkout.v3"]);
}

/// Holds are written every few looks, a step's baseline and decisions at
/// once; a controller started from the store's state counts every request
/// since, so nothing of the evidence is lost.
#[tokio::test]
async fn holds_are_written_every_few_looks_and_a_restart_loses_no_evidence() {
    let f = fixture(Duration::from_secs(5));
    f.service.apply(spec(""), "alice", false).await.unwrap();
    let stored = || {
        f.service
            .store
            .rollouts()
            .unwrap()
            .into_iter()
            .find(|s| s.spec.name == "checkout")
            .unwrap()
    };
    let mut written = Vec::new();
    for i in 1..=7 {
        f.source
            .set("checkout", snap(1000.0 * i as f64, 100.0 * i as f64));
        let before = serde_json::to_string(&stored()).unwrap();
        look(&f).await;
        written.push(serde_json::to_string(&stored()).unwrap() != before);
    }
    // The first look takes the step's baseline (written); then every third.
    assert_eq!(
        written,
        [true, false, true, false, false, true, false],
        "{written:?}"
    );
    assert!(stored().step_baseline.is_some());
    // What is in memory went on; the stored state is a look behind, and a
    // controller starting from it judges everything since its last look.
    let memory = f.service.state.lock().await.rollouts["checkout"].clone();
    let on_disk = stored();
    assert_ne!(memory.analysed_at, on_disk.analysed_at);
    assert_eq!(memory.step_baseline, on_disk.step_baseline);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_whose_audit_key_does_not_sign_the_chain_writes_nothing() {
    let f = fixture(Duration::from_secs(1));
    f.service.apply(spec(""), "alice", false).await.unwrap();
    let path = f._dir.path().join("s.db");
    let head = f.service.audit_head();
    drop(f.service);
    // The same state file, started again with another key.
    let store = Store::open(&path, AuditKey::from_bytes([2; 32])).unwrap();
    let other = Service::new(
        store,
        Arc::new(FakeSource::default()) as Arc<dyn MetricsSource>,
        Settings::default(),
    )
    .unwrap();
    let why = other.key_problem().expect("the mismatch is seen at start");
    assert!(
        why.contains("audit key does not match the chain's"),
        "{why}"
    );
    assert!(!other.is_leader(), "it must not decide");
    // Reads still work; every write is refused, naming the cause.
    assert_eq!(other.status(Some("checkout")).await.unwrap().len(), 1);
    let err = other
        .command("checkout", Command::Abort, "bob", "key test")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("audit key does not match"),
        "{err}"
    );
    assert_eq!(other.audit_head(), head, "nothing was appended");
    // The chain still verifies with the key that wrote it.
    drop(other);
    let store = Store::open(&path, AuditKey::from_bytes([1; 32])).unwrap();
    assert_eq!(store.verify().unwrap(), Ok(head.seq as usize));
    assert!(store.check_key().is_ok());
}

#[tokio::test]
async fn a_person_who_promotes_without_evidence_is_recorded_as_such() {
    let f = fixture(Duration::from_secs(1));
    f.source.set("checkout", snap(1000.0, 100.0));
    let evidence_spec = RolloutSpec::from_yaml(
        "name: checkout\nstable: v1\ncanary: v2\nidentity: [{header: x-user-id}]\n\
         steps:\n- {percent: 10}\n- {percent: 100}\n\
         analysis: {min_requests: 50, interval: 200ms}\n",
    )
    .unwrap();
    f.service
        .apply(evidence_spec, "alice", false)
        .await
        .unwrap();
    look_until(&f, |v| v.reason.contains("baseline taken")).await;
    f.source.set("checkout", snap(1900.0, 200.0));
    let v = look_until(&f, |v| {
        v.reason.starts_with("waiting for evidence of safety")
    })
    .await;
    assert!(
        v.reason.contains("errors: canary at most +"),
        "{}",
        v.reason
    );
    f.service
        .command(
            "checkout",
            Command::Promote,
            "alice",
            "release train leaves",
        )
        .await
        .unwrap();
    let history = f.service.history("checkout").unwrap();
    let promote = history.iter().find(|r| r.action == "promote").unwrap();
    assert!(
        promote.reason.starts_with(
            "release train leaves (promoted without evidence of safety: errors at most +"
        ),
        "{}",
        promote.reason
    );
}
