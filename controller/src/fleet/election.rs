//! A fleet of controllers on etcd: one leader, elected with etcd's election
//! API under a lease, makes every decision; every controller keeps its
//! copy of the state from a watch of etcd and serves `GET /v1/config` from
//! it, so polls never depend on the leader.
//!
//! The leader's lease is kept alive every third of its TTL. When a
//! keep-alive fails or is not answered within the TTL the controller stops
//! deciding at once and says so; its writes were already fenced by the
//! store (`crate::store::etcd`), so even a leader that has not noticed
//! cannot write after its lease ended.
//!
//! Any controller whose keep-alive etcd has not answered for ⅔ of the TTL
//! is out of touch: it refuses to serve the config (`crate::api`, `crate::fleet::forward`), which an
//! abort elsewhere may have overtaken. And every controller fetches from
//! the others which proxies poll them, so its view of the proxies is the
//! fleet's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, WatchOptions};

use crate::service::{ProxySeen, Role, Service};
use crate::store::etcd::Fence;

pub struct Fleet {
    pub client: Client,
    /// The election's name, under the store's prefix.
    pub election: String,
    pub prefix: String,
    pub role: Arc<Role>,
    pub fence: Arc<Mutex<Option<Fence>>>,
}

impl Fleet {
    /// Campaigns, leads while the lease lives, and campaigns again: forever.
    pub async fn run(self: Arc<Self>, service: Arc<Service>) {
        tokio::spawn(Arc::clone(&self).follow(Arc::clone(&service)));
        tokio::spawn(Arc::clone(&self).track_leader());
        tokio::spawn(Arc::clone(&self).exchange_proxies(Arc::clone(&service)));
        loop {
            if let Err(e) = self.lead_once(&service).await {
                tracing::warn!(error = %e, "election");
            }
            self.step_down("not leading");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn step_down(&self, why: &str) {
        let was = self.role.set_leading(false);
        *self.fence.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if was {
            tracing::error!(why, "lost the leader's lease: not deciding, not writing");
        }
    }

    /// One term: a lease, a campaign, leadership until the lease is lost.
    async fn lead_once(&self, service: &Arc<Service>) -> Result<(), etcd_client::Error> {
        let mut c = self.client.clone();
        let ttl = self.role.ttl;
        let lease = c.lease_grant(ttl.as_secs().max(1) as i64, None).await?.id();
        let (mut keeper, mut answers) = c.lease_keep_alive(lease).await?;
        // The lease is kept alive while campaigning, too.
        let role = Arc::clone(&self.role);
        role.touched();
        let keep = tokio::spawn(async move {
            loop {
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                match tokio::time::timeout(ttl, answers.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => role.touched(),
                    _ => return,
                }
                tokio::time::sleep(ttl / 3).await;
            }
        });
        // A controller whose audit key does not sign the chain never
        // campaigns: as leader it could only write records nobody can
        // verify. It keeps its lease alive all the same, so that it stays
        // in touch with the store and serves reads.
        loop {
            if let Err(e) = service.reload().await {
                tracing::warn!(error = %e, "cannot read the state from etcd");
            }
            let Some(why) = service.key_problem() else {
                break;
            };
            tracing::error!(problem = %why, "not standing for leader");
            tokio::time::sleep(Duration::from_secs(5)).await;
            if !self.role.in_touch() {
                keep.abort();
                return Ok(());
            }
        }
        let campaign = c.campaign(self.election.clone(), self.role.me.clone(), lease);
        let won = tokio::select! {
            r = campaign => r,
            _ = wait_lost(&self.role) => {
                keep.abort();
                return Ok(());
            }
        };
        let won = match won {
            Ok(w) => w,
            Err(e) => {
                keep.abort();
                return Err(e);
            }
        };
        let Some(leader) = won.leader() else {
            keep.abort();
            return Ok(());
        };
        *self.fence.lock().unwrap_or_else(|e| e.into_inner()) = Some(Fence {
            key: leader.key().to_vec(),
            create_revision: leader.rev(),
        });
        // Decide from what etcd holds, not from what was last watched.
        if let Err(e) = service.reload().await {
            tracing::error!(error = %e, "elected but cannot read the state; standing down");
            keep.abort();
            let _ = c.lease_revoke(lease).await;
            return Ok(());
        }
        if let Some(why) = service.key_problem() {
            tracing::error!(problem = %why, "elected but the audit key does not sign the chain; standing down");
            keep.abort();
            let _ = c.lease_revoke(lease).await;
            return Ok(());
        }
        self.role.set_leader_url(Some(self.role.me.clone()));
        self.role.set_leading(true);
        tracing::info!(me = %self.role.me, "leading");
        wait_lost(&self.role).await;
        keep.abort();
        self.step_down("its lease was not renewed within the TTL");
        let _ = c.lease_revoke(lease).await;
        Ok(())
    }

    /// Keeps this controller's copy of the state as etcd has it while it
    /// follows: a watch of the prefix, and a full read every few seconds in
    /// case a watch broke.
    async fn follow(self: Arc<Self>, service: Arc<Service>) {
        loop {
            let mut c = self.client.clone();
            let watch = c
                .watch(self.prefix.clone(), Some(WatchOptions::new().with_prefix()))
                .await;
            let mut stream = match watch {
                Ok(s) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let next = tokio::time::timeout(Duration::from_secs(3), stream.message()).await;
                match next {
                    Ok(Ok(Some(_))) | Err(_) => {
                        if !self.role.leading() {
                            if let Err(e) = service.reload().await {
                                tracing::warn!(error = %e, "cannot read the state from etcd");
                            }
                        }
                    }
                    Ok(_) => break,
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Keeps the leader's URL known, for forwarding mutating calls.
    async fn track_leader(self: Arc<Self>) {
        loop {
            if !self.role.leading() {
                let mut c = self.client.clone();
                let url = match c.leader(self.election.clone()).await {
                    Ok(r) => r.kv().and_then(|kv| kv.value_str().ok().map(str::to_owned)),
                    Err(_) => None,
                };
                self.role.set_leader_url(url);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every second, asks each other controller in the election (every
    /// candidate's key holds its URL) which proxies poll it, so that this
    /// controller's view of the proxies is the fleet's. Each ask has its own
    /// timeout and they run side by side: a hung peer delays nothing.
    async fn exchange_proxies(self: Arc<Self>, service: Arc<Service>) {
        let http = self.role.peers.clone();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut c = self.client.clone();
            let candidates = c
                .get(
                    format!("{}/", self.election),
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await;
            let Ok(candidates) = candidates else {
                continue;
            };
            let peers: Vec<String> = candidates
                .kvs()
                .iter()
                .filter_map(|kv| kv.value_str().ok().map(str::to_owned))
                .filter(|url| *url != self.role.me)
                .collect();
            let asks = peers.iter().map(|peer| {
                let (http, secret) = (&http, self.role.peer_secret());
                async move {
                    let answer = http
                        .get(format!("{}/v1/fleet/proxies", peer.trim_end_matches('/')))
                        .timeout(PEER_TIMEOUT)
                        .bearer_auth(secret)
                        .send()
                        .await
                        .and_then(reqwest::Response::error_for_status);
                    let seen = match answer {
                        Ok(r) => r.json::<Vec<ProxySeen>>().await.ok(),
                        Err(_) => None,
                    };
                    (peer.clone(), seen)
                }
            });
            for (peer, seen) in futures_util::future::join_all(asks).await {
                if let Some(seen) = seen {
                    service.registry().absorb(&peer, seen);
                }
            }
            service.registry().keep_peers(&peers);
        }
    }
}

/// How long a peer has to say which proxies poll it.
const PEER_TIMEOUT: Duration = Duration::from_millis(500);

/// Returns once etcd has not answered for ⅔ of the TTL: before etcd could
/// expire the lease, since an answer came after etcd had renewed it.
async fn wait_lost(role: &Role) {
    while role.in_touch() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
