//! A real OpenID Connect provider for the sign-in tests: panva's
//! `oidc-provider` (OpenID Certified) from the npm registry, run by
//! `tests/oidc/provider.mjs` (`make setup` installs it), and the parts a
//! person plays: signing in on its form, approving a device code.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::paths::workspace_root;
use crate::ports::free_port;

pub struct Provider {
    child: Option<Child>,
    pub port: u16,
    keys: tempfile::TempDir,
    redirect_uri: String,
    groups: String,
    log: PathBuf,
}

/// What a restart changes.
pub struct Setup<'a> {
    /// Published key ids, the first signs (`new,old` while rotating).
    pub key_ids: &'a str,
    /// Seconds an ID token lives.
    pub id_token_ttl: u64,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            key_ids: "k1",
            id_token_ttl: 600,
        }
    }
}

impl Provider {
    /// `redirect_uri`: the controller's `/auth/callback`; `groups`: JSON,
    /// login name → its groups.
    pub async fn start(redirect_uri: &str, groups: &serde_json::Value) -> anyhow::Result<Provider> {
        let keys = tempfile::tempdir()?;
        let log = keys.path().join("provider.log");
        let mut p = Provider {
            child: None,
            port: free_port()?,
            keys,
            redirect_uri: redirect_uri.to_owned(),
            groups: groups.to_string(),
            log,
        };
        p.spawn(&Setup::default()).await?;
        Ok(p)
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it and starts it again on the same port (its keys kept in
    /// their directory), as a provider is redeployed with new keys.
    pub async fn restart(&mut self, setup: &Setup<'_>) -> anyhow::Result<()> {
        self.stop();
        self.spawn(setup).await
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn spawn(&mut self, setup: &Setup<'_>) -> anyhow::Result<()> {
        let script = workspace_root().join("tests/oidc/provider.mjs");
        if !workspace_root()
            .join("tests/oidc/node_modules/oidc-provider")
            .exists()
        {
            bail!("tests/oidc/node_modules is missing: run `make setup`");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new("node")
            .arg(&script)
            .env("PORT", self.port.to_string())
            .env("REDIRECT_URI", &self.redirect_uri)
            .env("KEYS_DIR", self.keys.path())
            .env("KEY_IDS", setup.key_ids)
            .env("ID_TOKEN_TTL", setup.id_token_ttl.to_string())
            .env("ACCOUNT_GROUPS", &self.groups)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting node tests/oidc/provider.mjs")?;
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("the OpenID provider exited ({status}):\n{}", self.log());
                }
            }
            if http
                .get(&url)
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the OpenID provider not up within 20 s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn keys_dir(&self) -> &Path {
        self.keys.path()
    }

    /// A person at the provider: approves the device code of
    /// `verification_uri_complete` and signs in as `login`.
    pub async fn approve_device(&self, verification: &str, login: &str) -> anyhow::Result<()> {
        let http = browser(None)?;
        let page = http.get(verification).send().await?.text().await?;
        let xsrf = attribute_after(&page, "name=\"xsrf\" value=\"")
            .context("no xsrf on the device page")?;
        let code = reqwest::Url::parse(verification)?
            .query_pairs()
            .find(|(k, _)| k == "user_code")
            .map(|(_, v)| v.into_owned())
            .context("no user_code in the verification URI")?;
        let resp = http
            .post(format!("{}/device", self.issuer()))
            .form(&[
                ("xsrf", xsrf.as_str()),
                ("user_code", &code),
                ("confirm", "yes"),
            ])
            .send()
            .await?;
        let form = resp.text().await?;
        let done = sign_in_on_form(&http, &self.issuer(), &form, login).await?;
        if !done.status().is_success() {
            bail!("the device sign-in ended with {}", done.status());
        }
        Ok(())
    }

    /// An ID token for `client_id` (a device-flow client), signed in as
    /// `login`: what `dimmer login` gets, or another application's.
    pub async fn device_token(&self, client_id: &str, login: &str) -> anyhow::Result<String> {
        let http = reqwest::Client::new();
        let start: serde_json::Value = http
            .post(format!("{}/device/auth", self.issuer()))
            .form(&[
                ("client_id", client_id),
                ("scope", "openid profile email groups"),
            ])
            .send()
            .await?
            .json()
            .await?;
        let uri = start["verification_uri_complete"]
            .as_str()
            .context("no verification_uri_complete")?;
        self.approve_device(uri, login).await?;
        let answer: serde_json::Value = http
            .post(format!("{}/token", self.issuer()))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", start["device_code"].as_str().unwrap_or("")),
                ("client_id", client_id),
            ])
            .send()
            .await?
            .json()
            .await?;
        answer["id_token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no id_token: {answer}"))
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A browser's HTTP side: cookies kept, redirects followed; trusting the
/// controller's CA when given.
pub fn browser(ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    Ok(dimmer::tls::http_client(ca)?.cookie_store(true).build()?)
}

fn attribute_after(page: &str, marker: &str) -> Option<String> {
    let start = page.find(marker)? + marker.len();
    let end = page[start..].find('"')?;
    Some(page[start..start + end].to_owned())
}

/// Fills the provider's sign-in form (`page`) as `login`; the answer is
/// wherever the redirects end (for a client that follows them).
pub async fn sign_in_on_form(
    http: &reqwest::Client,
    issuer: &str,
    page: &str,
    login: &str,
) -> anyhow::Result<reqwest::Response> {
    let action = attribute_after(page, "<form method=\"post\" action=\"")
        .with_context(|| format!("no sign-in form in: {page}"))?;
    Ok(http
        .post(format!("{issuer}{action}"))
        .form(&[("login", login)])
        .send()
        .await?)
}

/// Where a browser's sign-in ended, and every cookie set on the way.
pub struct SignIn {
    pub status: u16,
    pub url: String,
    pub body: String,
    pub set_cookies: Vec<String>,
}

/// The page's whole sign-in as `login`: `/auth/login` → the provider's
/// form → back at the controller, redirects followed one by one (to see
/// each `Set-Cookie`). `http` keeps cookies and follows no redirect
/// ([`browser_by_hand`]).
pub async fn web_sign_in(
    http: &reqwest::Client,
    controller: &str,
    issuer: &str,
    login: &str,
) -> anyhow::Result<SignIn> {
    let mut cookies = Vec::new();
    let form = follow(
        http,
        http.get(format!("{controller}/auth/login")),
        &mut cookies,
    )
    .await?;
    let action = attribute_after(&form.body, "<form method=\"post\" action=\"")
        .with_context(|| format!("no sign-in form at {}: {}", form.url, form.body))?;
    let post = http
        .post(format!("{issuer}{action}"))
        .form(&[("login", login)]);
    let mut end = follow(http, post, &mut cookies).await?;
    end.set_cookies = cookies;
    Ok(end)
}

/// A client that keeps cookies, follows no redirect and trusts `ca`.
pub fn browser_by_hand(ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    Ok(dimmer::tls::http_client(ca)?
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

async fn follow(
    http: &reqwest::Client,
    first: reqwest::RequestBuilder,
    cookies: &mut Vec<String>,
) -> anyhow::Result<SignIn> {
    let mut resp = first.send().await?;
    for _ in 0..20 {
        cookies.extend(
            resp.headers()
                .get_all(reqwest::header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned)),
        );
        if !resp.status().is_redirection() {
            return Ok(SignIn {
                status: resp.status().as_u16(),
                url: resp.url().to_string(),
                body: resp.text().await?,
                set_cookies: Vec::new(),
            });
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .context("a redirect without Location")?;
        let next = resp.url().join(location)?;
        resp = http.get(next).send().await?;
    }
    bail!("more than 20 redirects")
}
