//! A real Envoy process running the Dimmer filter, configured from the
//! shipped template `envoy-configs/envoy.yaml.tmpl`.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::paths;
use crate::ports::free_port;

#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// The filter's plugin configuration (docs/filter.md, "Configuration").
    pub plugin_config: serde_json::Value,
    pub v1_port: u16,
    pub v2_port: u16,
    /// Port of the controller the `dimmer-controller` cluster points at.
    pub controller_port: u16,
    /// Worker threads; the tests use several to show per-worker behaviour.
    pub concurrency: u32,
    pub node_id: String,
    /// Fixed ports (for the demo); 0 picks free ones.
    pub listen_port: u16,
    pub admin_port: u16,
    /// The bootstrap template; the shipped `envoy-configs/envoy.yaml.tmpl`
    /// unless set.
    pub template: Option<PathBuf>,
    /// Tokens of a template's own, beyond the shipped one's.
    pub vars: Vec<(&'static str, String)>,
    /// Where it listens (`{{ADDRESS}}` in a template that has it), and the
    /// words that start it there: a test host's (`crate::netns`).
    pub address: String,
    pub wrapper: Vec<std::ffi::OsString>,
}

impl EnvoyOptions {
    pub fn new(plugin_config: serde_json::Value, v1_port: u16, v2_port: u16) -> Self {
        EnvoyOptions {
            plugin_config,
            v1_port,
            v2_port,
            controller_port: 1,
            concurrency: 2,
            node_id: "dimmer-test".into(),
            listen_port: 0,
            admin_port: 0,
            template: None,
            vars: Vec::new(),
            address: "127.0.0.1".into(),
            wrapper: Vec::new(),
        }
    }

    /// On test host `host`: listening on its address, reaching the apps and
    /// controllers given by address.
    pub fn on(mut self, host: &crate::netns::Host) -> Self {
        self.address = host.ip.clone();
        self.wrapper = host.wrapper();
        self
    }
}

pub struct Envoy {
    child: Child,
    /// The address its listener and admin are on.
    pub address: String,
    pub listen_port: u16,
    pub admin_port: u16,
    dir: tempfile::TempDir,
}

/// Fills `{{NAME}}` tokens; an unfilled token is an error, not a silent blank.
pub fn render(template: &str, vars: &[(&str, String)]) -> anyhow::Result<String> {
    let mut out = template.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(at) = out.find("{{") {
        let rest: String = out[at..].chars().take(40).collect();
        bail!("template token left unfilled: {rest}");
    }
    Ok(out)
}

impl Envoy {
    /// Starts Envoy and waits until its admin says it is ready. If Envoy
    /// exits instead, the error carries its log.
    pub async fn start(opts: EnvoyOptions) -> anyhow::Result<Envoy> {
        let listen_port = if opts.listen_port == 0 {
            free_port()?
        } else {
            opts.listen_port
        };
        let admin_port = if opts.admin_port == 0 {
            free_port()?
        } else {
            opts.admin_port
        };
        let template =
            std::fs::read_to_string(opts.template.clone().unwrap_or_else(paths::envoy_template))?;
        let wasm = paths::filter_wasm()?;
        let mut vars = vec![
            ("NODE_ID", opts.node_id.clone()),
            ("ADMIN_PORT", admin_port.to_string()),
            ("LISTEN_PORT", listen_port.to_string()),
            ("WASM", wasm.display().to_string()),
            // A JSON string is a valid YAML double-quoted scalar.
            (
                "PLUGIN_CONFIG",
                serde_json::to_string(&opts.plugin_config.to_string())?,
            ),
            ("V1_PORT", opts.v1_port.to_string()),
            ("V2_PORT", opts.v2_port.to_string()),
            ("CONTROLLER_PORT", opts.controller_port.to_string()),
            ("ADDRESS", opts.address.clone()),
        ];
        vars.extend(opts.vars.iter().cloned());
        let yaml = render(&template, &vars)?;
        if opts.wrapper.is_empty() {
            return Self::start_with_yaml(&yaml, opts.concurrency, listen_port, admin_port).await;
        }
        let binary = paths::envoy_binary()?;
        let at = Place {
            address: opts.address.clone(),
            listen_port,
            admin_port,
        };
        Self::launch(
            &opts.wrapper,
            &binary,
            &yaml,
            opts.concurrency,
            at,
            Duration::from_secs(30),
        )
        .await
    }

    pub async fn start_with_yaml(
        yaml: &str,
        concurrency: u32,
        listen_port: u16,
        admin_port: u16,
    ) -> anyhow::Result<Envoy> {
        // DIMMER_ENVOY_CPUS pins Envoy (the benchmarks give it a core of its own).
        let wrapper = match std::env::var("DIMMER_ENVOY_CPUS") {
            Ok(cpus) => vec!["taskset".into(), "-c".into(), cpus.into()],
            Err(_) => Vec::new(),
        };
        let binary = paths::envoy_binary()?;
        Self::start_under(
            &wrapper,
            &binary,
            yaml,
            concurrency,
            listen_port,
            admin_port,
            Duration::from_secs(30),
        )
        .await
    }

    /// Starts `binary` (an Envoy) under `wrapper` (e.g. valgrind), waiting
    /// up to `ready_within` for its admin to say it is ready.
    pub async fn start_under(
        wrapper: &[std::ffi::OsString],
        binary: &std::path::Path,
        yaml: &str,
        concurrency: u32,
        listen_port: u16,
        admin_port: u16,
        ready_within: Duration,
    ) -> anyhow::Result<Envoy> {
        let at = Place {
            address: "127.0.0.1".into(),
            listen_port,
            admin_port,
        };
        Self::launch(wrapper, binary, yaml, concurrency, at, ready_within).await
    }

    async fn launch(
        wrapper: &[std::ffi::OsString],
        binary: &std::path::Path,
        yaml: &str,
        concurrency: u32,
        at: Place,
        ready_within: Duration,
    ) -> anyhow::Result<Envoy> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, yaml)?;
        let log = std::fs::File::create(dir.path().join("envoy.log"))?;
        let mut cmd = crate::wrapped::wrapped(wrapper, binary);
        let log_level = std::env::var("DIMMER_ENVOY_LOG").unwrap_or_else(|_| "info".into());
        let child = cmd
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", &concurrency.to_string()])
            .arg("--use-dynamic-base-id")
            .args(["-l", &log_level])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting envoy")?;
        let mut envoy = Envoy {
            child,
            address: at.address,
            listen_port: at.listen_port,
            admin_port: at.admin_port,
            dir,
        };
        envoy.wait_ready(ready_within).await?;
        Ok(envoy)
    }

    /// The folder holding this Envoy's config and log.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "envoy exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            let ready = client
                .get(self.admin_url("/ready"))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("envoy not ready within {within:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.address, self.listen_port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.address, self.admin_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("envoy.log")
    }

    pub async fn prometheus(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(self.admin_url("/stats/prometheus"))
            .await?
            .text()
            .await?)
    }
}

struct Place {
    address: String,
    listen_port: u16,
    admin_port: u16,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
