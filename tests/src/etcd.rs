//! A real etcd cluster (Debian's `etcd-server`) of several members on
//! loopback ports, each a process of its own that a test can kill.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::ports::free_port;

pub struct Member {
    child: Option<Child>,
    pub name: String,
    pub client_port: u16,
}

pub struct Etcd {
    pub members: Vec<Member>,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// `n` members forming one cluster, ready to serve.
    pub async fn start(n: usize) -> anyhow::Result<Etcd> {
        Self::start_reachable(n, &[]).await
    }

    /// The same, each member also listening on `addresses` (the test's side
    /// of a test host's link), so that controllers there reach it.
    pub async fn start_reachable(n: usize, addresses: &[String]) -> anyhow::Result<Etcd> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
            let child = Command::new("etcd")
                .args(["--name", &name])
                .arg(format!("--data-dir={}", dir.path().join(&name).display()))
                .arg(format!(
                    "--listen-client-urls=http://127.0.0.1:{client}{}",
                    addresses
                        .iter()
                        .map(|a| format!(",http://{a}:{client}"))
                        .collect::<String>()
                ))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
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
                client_port: *client,
            });
        }
        let etcd = Etcd { members, dir };
        etcd.wait_healthy(Duration::from_secs(30)).await?;
        Ok(etcd)
    }

    /// `etcd://127.0.0.1:A,127.0.0.1:B,…`, as `dimmer serve --store` takes it.
    pub fn store_url(&self) -> String {
        let eps: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        format!("etcd://{}", eps.join(","))
    }

    /// The same, as reached at `address`.
    pub fn store_url_at(&self, address: &str) -> String {
        let eps: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{address}:{}", m.client_port))
            .collect();
        format!("etcd://{}", eps.join(","))
    }

    async fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let http = reqwest::Client::new();
        loop {
            let mut healthy = 0;
            for m in &self.members {
                let ok = http
                    .get(format!("http://127.0.0.1:{}/health", m.client_port))
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

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
