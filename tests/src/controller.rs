//! The real `dimmer` binary, run as a user runs it: `dimmer serve` with a
//! state file and a tokens file, and the CLI against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::ports::free_port;

pub const ADMIN_TOKEN: &str = "admin-token-0123456789";
pub const OPERATOR_TOKEN: &str = "operator-token-0123456789";
pub const VIEWER_TOKEN: &str = "viewer-token-0123456789";
pub const ENVOY_TOKEN: &str = "envoy-poll-token-0123456789";

/// The `dimmer` binary next to the running test or tool.
pub fn dimmer_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("DIMMER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("dimmer");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no dimmer binary beside {} (run `make build`)",
        exe.display()
    )
}

/// Where `dimmer serve` reads the filter's counts.
#[derive(Debug, Clone)]
pub enum MetricsFrom {
    /// One Envoy's admin, by port.
    EnvoyAdmin(u16),
    /// A Prometheus server, by URL.
    Prometheus(String),
}

impl MetricsFrom {
    fn args(&self) -> [String; 2] {
        match self {
            MetricsFrom::EnvoyAdmin(port) => {
                ["--envoy-admin".into(), format!("http://127.0.0.1:{port}")]
            }
            MetricsFrom::Prometheus(url) => ["--prometheus".into(), url.clone()],
        }
    }
}

pub struct Controller {
    child: Option<Child>,
    pub port: u16,
    metrics: MetricsFrom,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// The address it listens on (loopback, or its own test host's).
    pub host: String,
    /// The words that start it on its test host; none on loopback.
    wrapper: Vec<std::ffi::OsString>,
    /// With TLS: the CA that signed its certificate (`--tls-cert` among
    /// `extra`); its URL is then `https://`, and the CLI and the harness
    /// verify it against this CA.
    ca: Option<PathBuf>,
}

impl Controller {
    /// Starts `dimmer serve` reading metrics from `metrics`, with viewer,
    /// operator, admin and envoy tokens.
    pub async fn start(metrics: MetricsFrom, extra: &[&str]) -> anyhow::Result<Controller> {
        Self::start_on(None, metrics, extra).await
    }

    /// The same over TLS: `certs` is the controller's certificate and the
    /// CA that signed it (`crate::tls`).
    pub async fn start_tls(
        metrics: MetricsFrom,
        certs: &crate::tls::TestCerts,
        extra: &[&str],
    ) -> anyhow::Result<Controller> {
        Self::start_tls_at(free_port()?, metrics, certs, extra).await
    }

    /// The same on `port`: for what must know its URL before it starts
    /// (an OpenID provider's redirect URI).
    pub async fn start_tls_at(
        port: u16,
        metrics: MetricsFrom,
        certs: &crate::tls::TestCerts,
        extra: &[&str],
    ) -> anyhow::Result<Controller> {
        // --ca: what it verifies its fleet's peers with (the same CA).
        let mut args = vec![
            "--tls-cert".to_string(),
            certs.cert.display().to_string(),
            "--tls-key".to_string(),
            certs.key.display().to_string(),
            "--ca".to_string(),
            certs.ca.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut c = Self::unstarted(None, metrics, &args, Some(port))?;
        c.ca = Some(certs.ca.clone());
        c.spawn().await?;
        Ok(c)
    }

    /// The same on `port` (plain HTTP, loopback): for what must know its
    /// URL before it starts.
    pub async fn start_at(
        port: u16,
        metrics: MetricsFrom,
        extra: &[&str],
    ) -> anyhow::Result<Controller> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut c = Self::unstarted(None, metrics, &extra, Some(port))?;
        c.spawn().await?;
        Ok(c)
    }

    /// The same, on a test host of its own (`crate::netns`), listening on
    /// its address.
    pub async fn start_on(
        host: Option<&crate::netns::Host>,
        metrics: MetricsFrom,
        extra: &[&str],
    ) -> anyhow::Result<Controller> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut c = Self::unstarted(host, metrics, &extra, None)?;
        c.spawn().await?;
        Ok(c)
    }

    fn unstarted(
        host: Option<&crate::netns::Host>,
        metrics: MetricsFrom,
        extra: &[String],
        port: Option<u16>,
    ) -> anyhow::Result<Controller> {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("tokens.yaml"),
            format!(
                "tokens:\n- {{name: alice, role: admin, token: {ADMIN_TOKEN}}}\n\
                 - {{name: deploy-bot, role: operator, token: {OPERATOR_TOKEN}}}\n\
                 - {{name: dashboard, role: viewer, token: {VIEWER_TOKEN}}}\n\
                 - {{name: envoy, role: proxy, token: {ENVOY_TOKEN}}}\n"
            ),
        )?;
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let addr = host.map_or("127.0.0.1".to_string(), |h| h.ip.clone());
        // `{URL}` in an argument is this controller's own URL (--advertise).
        let scheme = if extra.iter().any(|a| a == "--tls-cert") {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{addr}:{port}");
        let c = Controller {
            child: None,
            port,
            metrics,
            dir,
            extra: extra.iter().map(|s| s.replace("{URL}", &url)).collect(),
            host: addr,
            wrapper: host.map(crate::netns::Host::wrapper).unwrap_or_default(),
            ca: None,
        };
        Ok(c)
    }

    /// The running `dimmer serve`'s process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("dimmer.db")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// An HTTP client that verifies this controller (over TLS, against its
    /// CA).
    pub fn http(&self) -> anyhow::Result<reqwest::Client> {
        Ok(dimmer::tls::http_client(self.ca.as_deref())?
            .tls_info(true)
            .build()?)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dimmer.log")).unwrap_or_default()
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("dimmer.log"))?;
        let mut cmd = crate::wrapped::wrapped(&self.wrapper, dimmer_binary()?);
        cmd.arg("serve")
            .args(["--listen", &format!("{}:{}", self.host, self.port)])
            .arg("--db")
            .arg(self.db_path())
            .args(self.metrics.args());
        let child = cmd
            .arg("--tokens")
            .arg(self.dir.path().join("tokens.yaml"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dimmer serve")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let http = self.http()?;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("dimmer serve exited ({status}):\n{}", self.log());
                }
            }
            let up = http
                .get(format!("{}/healthz", self.url()))
                .timeout(Duration::from_millis(300))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("dimmer serve not up within 20 s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no flush, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    /// Runs the CLI with `token` against this controller.
    pub fn cli(&self, token: Option<&str>, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self.cli_command(token, args)?.output()?)
    }

    /// The CLI's command against this controller, not yet run (to run it
    /// beside something else).
    pub fn cli_command(&self, token: Option<&str>, args: &[&str]) -> anyhow::Result<Command> {
        let mut cmd = Command::new(dimmer_binary()?);
        cmd.args(args)
            .env("DIMMER_SERVER", self.url())
            .env_remove("DIMMER_TOKEN")
            .env_remove("DIMMER_CA");
        if let Some(ca) = &self.ca {
            cmd.env("DIMMER_CA", ca);
        }
        if let Some(t) = token {
            cmd.env("DIMMER_TOKEN", t);
        }
        Ok(cmd)
    }

    /// The CLI as an operator; fails unless it succeeds, returning stdout.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cli(Some(OPERATOR_TOKEN), args)?;
        if !out.status.success() {
            bail!(
                "dimmer {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The ids of the proxies its registry knows (`GET /v1/proxies`).
    pub async fn proxy_ids(&self) -> anyhow::Result<Vec<String>> {
        let proxies = self.get("/v1/proxies", VIEWER_TOKEN).await?;
        Ok(proxies
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["id"].as_str().map(str::to_owned))
            .collect())
    }

    /// `GET path` with `token`, as JSON.
    pub async fn get(&self, path: &str, token: &str) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .http()?
            .get(format!("{}{path}", self.url()))
            .bearer_auth(token)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// The first audit record of `name` whose action is `action` (`null` if none).
    pub async fn first_record(
        &self,
        name: &str,
        action: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let history = self
            .get(&format!("/v1/rollouts/{name}/history"), VIEWER_TOKEN)
            .await?;
        Ok(history
            .as_array()
            .and_then(|h| h.iter().find(|r| r["action"] == action))
            .cloned()
            .unwrap_or_default())
    }

    pub async fn rollout(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        self.get(&format!("/v1/rollouts/{name}"), VIEWER_TOKEN)
            .await
    }

    /// Runs `dimmer status NAME --watch --until-done` on this terminal, as a
    /// person would, for at most `within`.
    pub async fn watch_until_done(&self, name: &str, within: Duration) -> anyhow::Result<()> {
        let mut watch = self
            .cli_command(
                Some(VIEWER_TOKEN),
                &["status", name, "--watch", "--until-done"],
            )?
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting dimmer status --watch")?;
        let deadline = Instant::now() + within;
        while watch.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = watch.kill();
                bail!("{name} did not finish within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Waits until the rollout has completed or aborted; returns its status.
    pub async fn wait_decided(
        &self,
        name: &str,
        within: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        self.wait_for(name, within, "decided", |v| v["phase"] != "progressing")
            .await
    }

    /// Waits until `check` holds for the rollout's status.
    pub async fn wait_for(
        &self,
        name: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            // A follower learns of a forwarded apply from its etcd watch, a
            // moment after the leader answered: until then it has no such
            // rollout, which is "not yet", not a failure.
            let v = match self.rollout(name).await {
                Ok(v) => v,
                Err(_) if Instant::now() <= deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if check(&v) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!(
                    "{name}: not {what} within {within:?}; now {v}\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}
