//! `dimmer login`: a person signs in with the company's OpenID Connect
//! provider by the device flow (RFC 8628) — the CLI shows a code, the
//! person enters it in any browser — and the ID token is kept in a file
//! only its owner can read, sent as the bearer token until it expires.
//! `dimmer logout` removes it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::auth::oidc::{discover, unverified_claims, CALL_TIMEOUT};
use crate::auth::session::now_secs;
use crate::store::audit::write_private;

/// What `dimmer login` keeps: the token, for which controller.
#[derive(Serialize, Deserialize)]
pub struct Saved {
    pub server: String,
    pub id_token: String,
    /// Unix seconds.
    pub expires: u64,
}

/// `$DIMMER_TOKEN_FILE`, else `$XDG_CONFIG_HOME/dimmer/token`, else
/// `~/.config/dimmer/token`.
pub fn default_file() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("DIMMER_TOKEN_FILE") {
        return Some(PathBuf::from(f));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("dimmer").join("token"))
}

/// The saved token for `server`, if there is one that has not expired.
pub fn saved_token(server: &str) -> Option<String> {
    let text = std::fs::read_to_string(default_file()?).ok()?;
    let saved: Saved = serde_json::from_str(&text).ok()?;
    (saved.server == server && saved.expires > now_secs()).then_some(saved.id_token)
}

#[derive(Deserialize)]
struct AuthConfig {
    issuer: String,
    cli_client_id: Option<String>,
    scopes: Vec<String>,
}

#[derive(Deserialize)]
struct DeviceStart {
    device_code: String,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    #[serde(default)]
    interval: Option<u64>,
    expires_in: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct WhoAmI {
    name: String,
    role: String,
    teams: Option<Vec<String>>,
}

/// `controller`: verifies the controller (`--ca`); `provider`: the
/// provider (system roots, or `--provider-ca`).
pub async fn login(
    server: &str,
    controller: &reqwest::Client,
    provider: &reqwest::Client,
    file: &Path,
) -> anyhow::Result<()> {
    let base = server.trim_end_matches('/');
    let resp = controller
        .get(format!("{base}/auth/config"))
        .send()
        .await
        .with_context(|| format!("cannot reach the controller at {base}"))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        bail!("{base} has no OpenID Connect sign-in (serve --oidc); use a token (--token or DIMMER_TOKEN)");
    }
    let config: AuthConfig = resp
        .error_for_status()?
        .json()
        .await
        .context("the controller's /auth/config")?;
    let Some(client_id) = config.cli_client_id else {
        bail!("the controller's --oidc file names no cli_client_id: sign in on the page, or use a token");
    };
    let meta = discover(provider, &config.issuer).await?;
    let device = meta
        .device_authorization_endpoint
        .with_context(|| format!("{} offers no device flow", config.issuer))?;
    let token_endpoint = meta.token_endpoint;
    let start: DeviceStart = provider
        .post(&device)
        .timeout(CALL_TIMEOUT)
        .form(&[
            ("client_id", client_id.as_str()),
            ("scope", &config.scopes.join(" ")),
        ])
        .send()
        .await
        .with_context(|| format!("{device} did not answer"))?
        .error_for_status()
        .with_context(|| format!("{device} refused the device flow for {client_id}"))?
        .json()
        .await
        .with_context(|| format!("{device}: not a device authorization"))?;
    let open = start
        .verification_uri_complete
        .as_deref()
        .unwrap_or(&start.verification_uri);
    println!(
        "To sign in, open {open}\nand check the code there is {}",
        start.user_code
    );
    let mut every = Duration::from_secs(start.interval.unwrap_or(5).clamp(1, 60));
    let until = std::time::Instant::now() + Duration::from_secs(start.expires_in.min(1800));
    let id_token = loop {
        tokio::time::sleep(every).await;
        if std::time::Instant::now() > until {
            bail!("the code expired before the sign-in finished: run dimmer login again");
        }
        let answer: TokenAnswer = provider
            .post(&token_endpoint)
            .timeout(CALL_TIMEOUT)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", start.device_code.as_str()),
                ("client_id", client_id.as_str()),
            ])
            .send()
            .await
            .with_context(|| format!("{token_endpoint} did not answer"))?
            .json()
            .await
            .with_context(|| format!("{token_endpoint}: not a token answer"))?;
        if let Some(t) = answer.id_token {
            break t;
        }
        match answer.error.as_deref() {
            Some("authorization_pending") => {}
            Some("slow_down") => every += Duration::from_secs(5),
            other => bail!(
                "the provider ended the sign-in: {} {}",
                other.unwrap_or("no token"),
                answer.error_description.unwrap_or_default()
            ),
        }
    };
    // The controller says who that is (and refuses a person of no role).
    let resp = controller
        .get(format!("{base}/v1/whoami"))
        .bearer_auth(&id_token)
        .send()
        .await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        bail!(
            "signed in at the provider, but the controller refuses it ({status}): {}",
            body.get("error").and_then(|e| e.as_str()).unwrap_or("")
        );
    }
    let who: WhoAmI = resp.json().await?;
    // Only to say until when and to stop sending it after: the controller
    // checks the token itself.
    let expires = unverified_claims(&id_token)
        .and_then(|c| c.get("exp").and_then(|e| e.as_u64()))
        .unwrap_or(0);
    let saved = Saved {
        server: server.to_owned(),
        id_token,
        expires,
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    write_private(file, &serde_json::to_vec(&saved)?)
        .with_context(|| file.display().to_string())?;
    let teams = who
        .teams
        .map_or_else(|| "every team".to_owned(), |t| t.join(", "));
    println!(
        "signed in as {} ({} of {teams}) until {} UTC; the token is in {}",
        who.name,
        who.role,
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(expires)),
        file.display()
    );
    Ok(())
}

pub fn logout(file: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(file) {
        Ok(()) => println!("signed out: {} removed", file.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("not signed in ({} is not there)", file.display())
        }
        Err(e) => return Err(e).with_context(|| file.display().to_string()),
    }
    Ok(())
}
