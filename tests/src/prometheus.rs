//! A real Prometheus (Debian's package), scraping Envoys' admin endpoints:
//! the multi-proxy path (docs/controller.md, "One proxy or many").

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::ports::free_port;

pub struct Prometheus {
    child: Child,
    address: String,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `/stats/prometheus` of each Envoy admin port every second.
    pub async fn start(admin_ports: &[u16]) -> anyhow::Result<Prometheus> {
        Self::start_scraping(admin_ports, &[]).await
    }

    /// The same, and the apps' own `/shop/metrics` on `app_ports`.
    pub async fn start_scraping(
        admin_ports: &[u16],
        app_ports: &[u16],
    ) -> anyhow::Result<Prometheus> {
        Self::start_on(free_port()?, admin_ports, app_ports).await
    }

    /// On a given port: a Prometheus started again where it was.
    pub async fn start_on(
        port: u16,
        admin_ports: &[u16],
        app_ports: &[u16],
    ) -> anyhow::Result<Prometheus> {
        let local = |ports: &[u16]| -> Vec<String> {
            ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
        };
        Self::start_at("127.0.0.1", port, &local(admin_ports), &local(app_ports)).await
    }

    /// Listening on `address` (a test net's gateway, for controllers on
    /// test hosts), scraping Envoy admins and apps at `host:port` targets.
    pub async fn start_at(
        address: &str,
        port: u16,
        envoys: &[String],
        apps: &[String],
    ) -> anyhow::Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let targets = |list: &[String]| {
            list.iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n- job_name: envoy\n  metrics_path: /stats/prometheus\n  \
             static_configs:\n  - targets: [{}]\n",
            targets(envoys)
        );
        if !apps.is_empty() {
            config += &format!(
                "- job_name: shop\n  metrics_path: /shop/metrics\n  \
                 static_configs:\n  - targets: [{}]\n",
                targets(apps)
            );
        }
        std::fs::write(dir.path().join("prometheus.yml"), config)?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(
            std::env::var("DIMMER_PROMETHEUS").unwrap_or_else(|_| "prometheus".into()),
        )
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={address}:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting prometheus (make setup installs it)")?;
        let mut p = Prometheus {
            child,
            address: address.to_owned(),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = p.child.try_wait()? {
                bail!("prometheus exited ({status}):\n{}", p.log());
            }
            let ready = reqwest::get(format!("{}/-/ready", p.url()))
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready within 30 s:\n{}", p.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.address, self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
