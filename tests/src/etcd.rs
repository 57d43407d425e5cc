//! A real etcd cluster (Debian's `etcd-server`) of several members, on
//! loopback ports or each on a test host of its own, each a process of its
//! own that a test can kill.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::ports::free_port;

pub struct Member {
    child: Option<Child>,
    pub name: String,
    /// Where clients reach it.
    pub address: String,
    pub client_port: u16,
}

pub struct Etcd {
    pub members: Vec<Member>,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// `n` members forming one cluster on loopback ports, ready to serve.
    pub async fn start(n: usize) -> anyhow::Result<Etcd> {
        let sites = (0..n)
            .map(|_| {
                Ok(Site {
                    address: "127.0.0.1".into(),
                    client: free_port()?,
                    peer: free_port()?,
                    wrapper: Vec::new(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Self::start_at(sites).await
    }

    /// One member on each of `hosts` (test hosts, `crate::netns`), on
    /// etcd's own ports of that host's address.
    pub async fn start_on(hosts: &[&crate::netns::Host]) -> anyhow::Result<Etcd> {
        let sites = hosts
            .iter()
            .map(|h| Site {
                address: h.ip.clone(),
                client: 2379,
                peer: 2380,
                wrapper: h.wrapper(),
            })
            .collect();
        Self::start_at(sites).await
    }

    async fn start_at(sites: Vec<Site>) -> anyhow::Result<Etcd> {
        let dir = tempfile::tempdir()?;
        let cluster: Vec<String> = sites
            .iter()
            .enumerate()
            .map(|(i, s)| format!("m{i}=http://{}:{}", s.address, s.peer))
            .collect();
        let mut members = Vec::new();
        for (i, site) in sites.iter().enumerate() {
            let name = format!("m{i}");
            let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
            let mut cmd = crate::wrapped::wrapped(&site.wrapper, "etcd");
            let (a, client, peer) = (&site.address, site.client, site.peer);
            let child = cmd
                .args(["--name", &name])
                .arg(format!("--data-dir={}", dir.path().join(&name).display()))
                .arg(format!("--listen-client-urls=http://{a}:{client}"))
                .arg(format!("--advertise-client-urls=http://{a}:{client}"))
                .arg(format!("--listen-peer-urls=http://{a}:{peer}"))
                .arg(format!("--initial-advertise-peer-urls=http://{a}:{peer}"))
                .arg(format!("--initial-cluster={}", cluster.join(",")))
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "dimmer-test"])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting etcd (make setup installs it)")?;
            members.push(Member {
                child: Some(child),
                name,
                address: a.clone(),
                client_port: client,
            });
        }
        let etcd = Etcd { members, dir };
        etcd.wait_healthy(Duration::from_secs(30)).await?;
        Ok(etcd)
    }

    /// `etcd://A:P,B:Q,…`, as `dimmer serve --store` takes it.
    pub fn store_url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}:{}", m.address, m.client_port))
            .collect()
    }

    /// The member that leads etcd's Raft now, as the members that answer
    /// say (through etcd's JSON gateway).
    pub async fn raft_leader(&self) -> Option<usize> {
        let http = reqwest::Client::new();
        let mut ids = Vec::new();
        let mut leader = None;
        for m in &self.members {
            let url = format!(
                "http://{}:{}/v3/maintenance/status",
                m.address, m.client_port
            );
            let answer = http
                .post(url)
                .body("{}")
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            let status: serde_json::Value = match answer {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            ids.push(status["header"]["member_id"].as_str().map(str::to_owned));
            leader = leader.or_else(|| status["leader"].as_str().map(str::to_owned));
        }
        let leader = leader?;
        ids.iter()
            .position(|id| id.as_deref() == Some(leader.as_str()))
    }

    async fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let http = reqwest::Client::new();
        loop {
            let mut healthy = 0;
            for m in &self.members {
                let ok = http
                    .get(format!("http://{}:{}/health", m.address, m.client_port))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await;
                if let Ok(r) = ok {
                    if r.text().await.unwrap_or_default().contains("\"true\"") {
                        healthy += 1;
                    }
                }
            }
            if healthy == self.members.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd not healthy within {within:?}:\n{}", self.log(0));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL one member.
    pub fn kill(&mut self, i: usize) {
        if let Some(m) = self.members.get_mut(i) {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("m{i}.log"))).unwrap_or_default()
    }
}

struct Site {
    address: String,
    client: u16,
    peer: u16,
    wrapper: Vec<std::ffi::OsString>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
