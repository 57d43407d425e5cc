//! `make bench-etcd`: what the fleet's store costs. A real 3-member etcd on
//! loopback (its members share this machine's 2 cores and disk), the
//! controller's own store code with a real leader's fence: writes per
//! second of a look's quiet save and of a transition (state, revision,
//! audit record and head in one fenced transaction), one writer, as the
//! leader writes.

use std::time::{Duration, Instant};

use dimmer::store::audit::AuditKey;
use dimmer::store::etcd::{EtcdStore, Fence};
use dimmer::store::{Entry, StateStore};
use dimmer_decide::engine::RolloutState;
use dimmer_decide::spec::RolloutSpec;
use dimmer_e2e::etcd::Etcd;
use dimmer_e2e::fixtures::spec_yaml;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider: one for the process.
    dimmer::tls::install_provider();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let etcd = Etcd::start(3).await?;
    let endpoints: Vec<String> = etcd
        .members
        .iter()
        .map(|m| format!("{}:{}", m.address, m.client_port))
        .collect();
    let store = EtcdStore::connect(
        &endpoints,
        "/bench/",
        AuditKey::from_bytes([9; 32]),
        Duration::from_secs(5),
        None,
    )
    .await?;
    let mut c = store.client();
    let lease = c.lease_grant(60, None).await?.id();
    let won = c.campaign("/bench-election", "bench", lease).await?;
    let leader = won
        .leader()
        .ok_or_else(|| anyhow::anyhow!("no leader key"))?;
    *store
        .fence_handle()
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(Fence {
        key: leader.key().to_vec(),
        create_revision: leader.rev(),
    });
    let spec = RolloutSpec::from_yaml(&spec_yaml(&[(10.0, "1h")], 100))?;
    let mut state = RolloutState::new(spec, 1);
    let entry = || Entry {
        actor: "bench",
        rollout: "checkout",
        action: "step",
        from: "a".into(),
        to: "b".into(),
        reason: "bench",
        evidence: serde_json::json!({"canary_requests": 1000.0}),
    };
    store.transition("checkout", Some(&mut state), true, entry(), 1)?;
    let bytes = serde_json::to_vec(&state)?.len();
    let t = Instant::now();
    for _ in 0..n {
        store.save_quietly(&state)?;
    }
    let quiet = t.elapsed();
    let t = Instant::now();
    for i in 0..n {
        store.transition("checkout", Some(&mut state), true, entry(), 2 + i as u64)?;
    }
    let trans = t.elapsed();
    assert_eq!(store.verify()?, Ok(n + 1));
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / n as f64;
    println!(
        "3-member etcd on loopback, one writer, rollout state {bytes} bytes, {n} writes each:"
    );
    println!(
        "  quiet save (a look):  {:.2} ms each, {:.0} writes/s",
        per(quiet),
        n as f64 / quiet.as_secs_f64()
    );
    println!(
        "  transition (fenced txn, 4 keys, after 2 reads): {:.2} ms each, {:.0} /s",
        per(trans),
        n as f64 / trans.as_secs_f64()
    );
    println!("  audit chain of {} records verified", n + 1);
    Ok(())
}
