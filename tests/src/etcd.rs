//! A real etcd cluster (Debian's `etcd-server`) of several members, on
//! loopback ports or each on a test host of its own, each a process of its
//! own that a test can kill.

use std::path::PathBuf;
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
    tls: Option<EtcdTls>,
}

/// An etcd that speaks only TLS and asks clients for a certificate.
struct EtcdTls {
    ca: PathBuf,
    /// A client's certificate and key (the controllers', the harness's).
    client: (PathBuf, PathBuf),
    server: (PathBuf, PathBuf),
}

impl Etcd {
    /// `n` members forming one cluster on loopback ports, ready to serve.
    pub async fn start(n: usize) -> anyhow::Result<Etcd> {
        let sites = loopback_sites(n)?;
        Self::start_at(sites, None).await
    }

    /// `n` members serving clients over TLS only (`--client-cert-auth`), with
    /// certificates from `certs`' CA.
    pub async fn start_tls(n: usize, certs: &crate::tls::TestCerts) -> anyhow::Result<Etcd> {
        let sites = loopback_sites(n)?;
        let tls = EtcdTls {
            ca: certs.ca.clone(),
            client: certs.issue_client("etcd-client")?,
            server: certs.issue_pair("etcd-server", &["localhost", "127.0.0.1"])?,
        };
        Self::start_at(sites, Some(tls)).await
    }

    /// `dimmer serve`'s flags for this etcd's TLS (none without).
    pub fn client_args(&self) -> Vec<String> {
        match &self.tls {
            None => Vec::new(),
            Some(t) => vec![
                "--etcd-ca".into(),
                t.ca.display().to_string(),
                "--etcd-cert".into(),
                t.client.0.display().to_string(),
                "--etcd-key".into(),
                t.client.1.display().to_string(),
            ],
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// A client of etcd's JSON gateway (with the client certificate over TLS).
    fn http(&self) -> reqwest::Client {
        let Some(t) = &self.tls else {
            return reqwest::Client::new();
        };
        let identity = std::fs::read(&t.client.0)
            .and_then(|mut c| {
                c.extend(std::fs::read(&t.client.1)?);
                Ok(c)
            })
            .ok()
            .and_then(|pem| reqwest::Identity::from_pem(&pem).ok());
        let mut b =
            dimmer::tls::http_client(Some(&t.ca)).unwrap_or_else(|_| dimmer::tls::client_builder());
        if let Some(id) = identity {
            b = b.identity(id);
        }
        b.build().unwrap_or_default()
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
        Self::start_at(sites, None).await
    }

    async fn start_at(sites: Vec<Site>, tls: Option<EtcdTls>) -> anyhow::Result<Etcd> {
        let scheme = if tls.is_some() { "https" } else { "http" };
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
            if let Some(t) = &tls {
                cmd.arg(format!("--cert-file={}", t.server.0.display()))
                    .arg(format!("--key-file={}", t.server.1.display()))
                    .arg(format!("--trusted-ca-file={}", t.ca.display()))
                    .arg("--client-cert-auth");
            }
            let child = cmd
                .args(["--name", &name])
                .arg(format!("--data-dir={}", dir.path().join(&name).display()))
                .arg(format!("--listen-client-urls={scheme}://{a}:{client}"))
                .arg(format!("--advertise-client-urls={scheme}://{a}:{client}"))
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
        let etcd = Etcd { members, dir, tls };
        etcd.wait_healthy(Duration::from_secs(30)).await?;
        Ok(etcd)
    }

    /// `etcd://A:P,B:Q,…` (`etcds://` over TLS), as `dimmer serve --store`
    /// takes it.
    pub fn store_url(&self) -> String {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://{}", self.endpoints().join(","))
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
        let http = self.http();
        let mut ids = Vec::new();
        let mut leader = None;
        for m in &self.members {
            let url = format!(
                "{}://{}:{}/v3/maintenance/status",
                self.scheme(),
                m.address,
                m.client_port
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
        let http = self.http();
        loop {
            let mut healthy = 0;
            for m in &self.members {
                let ok = http
                    .get(format!(
                        "{}://{}:{}/health",
                        self.scheme(),
                        m.address,
                        m.client_port
                    ))
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

/// `n` members' places on loopback, each with ports of its own.
fn loopback_sites(n: usize) -> anyhow::Result<Vec<Site>> {
    (0..n)
        .map(|_| {
            Ok(Site {
                address: "127.0.0.1".into(),
                client: free_port()?,
                peer: free_port()?,
                wrapper: Vec::new(),
            })
        })
        .collect()
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
