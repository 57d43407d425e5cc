//! People sign in with OpenID Connect, against a real, certified provider
//! (panva's `oidc-provider`, run by tests/oidc/provider.mjs): the page by
//! the code flow with PKCE into a signed session cookie with CSRF
//! protection, the CLI by the device flow; groups become roles and teams;
//! ID tokens that must not pass do not (another application's, tampered,
//! unsigned, symmetric, expired, of a person with no role); the provider's
//! key rotation is followed; a provider that does not answer stops the
//! controller at start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use dimmer_e2e::controller::{Controller, MetricsFrom, ADMIN_TOKEN};
use dimmer_e2e::oidc::{browser_by_hand, web_sign_in, Provider, Setup};
use dimmer_e2e::ports::free_port;
use dimmer_e2e::tls::TestCerts;

/// The company's people: the groups its provider puts in their tokens.
fn people() -> serde_json::Value {
    serde_json::json!({
        "alice": ["sre", "engineering"],
        "bob": ["payments-dev", "engineering"],
        "carol": ["engineering"],
        "mallory": ["visitors"],
    })
}

fn oidc_file(dir: &std::path::Path, issuer: &str, controller_port: u16) -> String {
    oidc_file_for(dir, issuer, &format!("https://127.0.0.1:{controller_port}"))
}

fn oidc_file_for(dir: &std::path::Path, issuer: &str, controller: &str) -> String {
    let path = dir.join("oidc.yaml");
    std::fs::write(
        &path,
        format!(
            "issuer: {issuer}\nclient_id: dimmer\ncli_client_id: dimmer-cli\n\
             redirect_url: {controller}/auth/callback\n\
             groups:\n  - {{group: sre, role: admin}}\n  \
             - {{group: payments-dev, role: operator, teams: [payments]}}\n  \
             - {{group: engineering, role: viewer}}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

struct World {
    provider: Provider,
    controller: Controller,
    certs: TestCerts,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new(dir.path()).unwrap();
    let port = free_port().unwrap();
    let provider = Provider::start(
        &format!("https://127.0.0.1:{port}/auth/callback"),
        &people(),
    )
    .await
    .unwrap();
    let file = oidc_file(dir.path(), &provider.issuer(), port);
    let controller = Controller::start_tls_at(
        port,
        MetricsFrom::Prometheus("http://127.0.0.1:9".into()),
        &certs,
        &["--oidc", &file],
    )
    .await
    .unwrap();
    World {
        provider,
        controller,
        certs,
        _dir: dir,
    }
}

fn rollout(name: &str, team: &str) -> String {
    format!(
        "name: {name}\nteam: {team}\nidentity: [{{header: x-user-id}}]\nstable: v1\ncanary: v2\n\
         steps: [{{percent: 10, pause: 1h}}, {{percent: 100}}]\nanalysis: {{min_requests: 10}}\n"
    )
}

/// A signed-in page: its client (with the session cookie) and CSRF secret.
struct Page {
    http: reqwest::Client,
    url: String,
    csrf: String,
    /// What `GET /auth/session` said after the sign-in.
    session: serde_json::Value,
}

impl Page {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        csrf: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .body(body.to_owned());
        if let Some(c) = csrf {
            req = req.header("x-dimmer-csrf", c);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn change(&self, path: &str, body: &str) -> (u16, String) {
        self.send(reqwest::Method::POST, path, Some(&self.csrf.clone()), body)
            .await
    }
}

/// `who` is among checkout's audit records' actors.
async fn assert_acted(w: &World, who: &str) {
    let history = w
        .controller
        .get("/v1/rollouts/checkout/history", ADMIN_TOKEN)
        .await
        .unwrap()
        .to_string();
    assert!(history.contains(&format!("\"{who}\"")), "{history}");
}

async fn sign_in(w: &World, login: &str) -> Page {
    let http = browser_by_hand(Some(&w.certs.ca)).unwrap();
    let url = w.controller.url();
    let end = web_sign_in(&http, &url, &w.provider.issuer(), login)
        .await
        .unwrap();
    assert_eq!(end.status, 200, "{login}: {} {}", end.url, end.body);
    assert_eq!(end.url, format!("{url}/ui/"), "{login} lands on the page");
    let session: serde_json::Value = http
        .get(format!("{url}/auth/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Page {
        http,
        url,
        csrf: session["csrf"].as_str().unwrap().to_owned(),
        session,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_signs_in_by_code_flow_and_groups_become_roles_and_teams() {
    let w = world().await;
    let url = w.controller.url();

    // The session cookie: HttpOnly, Secure, SameSite=Strict, __Host-.
    let http = browser_by_hand(Some(&w.certs.ca)).unwrap();
    let end = web_sign_in(&http, &url, &w.provider.issuer(), "bob")
        .await
        .unwrap();
    assert_eq!(end.status, 200, "{}", end.body);
    let session_cookie = end
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-dimmer-session=") && !c.contains("Max-Age=0"))
        .unwrap_or_else(|| panic!("no session cookie in {:?}", end.set_cookies));
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(session_cookie.contains(attr), "{session_cookie}");
    }
    let login_cookie = end
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-dimmer-login="))
        .unwrap();
    assert!(login_cookie.contains("SameSite=Lax") && login_cookie.contains("Secure"));

    let bob = sign_in(&w, "bob").await;
    let me = &bob.session;
    assert_eq!(me["name"], "bob");
    assert_eq!(me["role"], "operator");
    assert_eq!(me["teams"], serde_json::json!(["payments"]));

    // An operator of payments: its rollouts, with the CSRF header only.
    let (s, b) = bob
        .change("/v1/rollouts", &rollout("checkout", "payments"))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = bob
        .send(
            reqwest::Method::POST,
            "/v1/rollouts/checkout/pause",
            None,
            "",
        )
        .await;
    assert_eq!(s, 403, "a change without the CSRF header: {b}");
    assert!(b.contains("x-dimmer-csrf"), "{b}");
    let (s, b) = bob
        .send(
            reqwest::Method::POST,
            "/v1/rollouts/checkout/pause",
            Some("forged"),
            "",
        )
        .await;
    assert_eq!(s, 403, "a wrong CSRF header: {b}");
    let (s, b) = bob.change("/v1/rollouts/checkout/pause", "").await;
    assert_eq!(s, 200, "{b}");
    // Another team's: refused, naming the scope.
    let (s, b) = bob
        .change("/v1/rollouts", &rollout("search", "search"))
        .await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("payments only"), "{b}");

    // An admin: every team's.
    let alice = sign_in(&w, "alice").await;
    let (s, b) = alice
        .change("/v1/rollouts", &rollout("search", "search"))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = bob.change("/v1/rollouts/search/abort", "").await;
    assert_eq!(s, 403, "bob aborts search: {b}");
    let (s, b) = alice.change("/v1/rollouts/search/abort", "").await;
    assert_eq!(s, 200, "{b}");

    // A viewer reads, and changes nothing, CSRF header or not.
    let carol = sign_in(&w, "carol").await;
    let (s, b) = carol
        .send(reqwest::Method::GET, "/v1/rollouts", None, "")
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = carol.change("/v1/rollouts/checkout/resume", "").await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("carol"), "{b}");

    // Who did what, in the audit log, by the name the provider gave.
    assert_acted(&w, "bob").await;

    // A person in no mapped group never gets a session.
    let http = browser_by_hand(Some(&w.certs.ca)).unwrap();
    let end = web_sign_in(&http, &url, &w.provider.issuer(), "mallory")
        .await
        .unwrap();
    assert_eq!(end.status, 403, "{}", end.body);
    assert!(
        end.body.contains("no group that has a role"),
        "{}",
        end.body
    );
    let (s, _) = (
        http.get(format!("{url}/v1/rollouts"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        (),
    );
    assert_eq!(s, 401);

    // An answer that is not this browser's sign-in's: refused.
    let http = browser_by_hand(Some(&w.certs.ca)).unwrap();
    let r = http.get(format!("{url}/auth/login")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let r = http
        .get(format!("{url}/auth/callback?code=stolen&state=not-mine"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("state"));

    // Signing out needs the CSRF header too; then the cookie is gone.
    let (s, _) = bob
        .send(reqwest::Method::POST, "/auth/logout", None, "")
        .await;
    assert_eq!(s, 403);
    let (s, _) = bob.change("/auth/logout", "").await;
    assert_eq!(s, 204);
    let (s, _) = bob
        .send(reqwest::Method::GET, "/auth/session", None, "")
        .await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_signs_in_by_the_device_flow() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("dimmer/token");
    let mut login = w.controller.cli_command(None, &["login"]).unwrap();
    let mut child = login
        .env("DIMMER_TOKEN_FILE", &token_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let verification = line
        .trim()
        .strip_prefix("To sign in, open ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    w.provider
        .approve_device(&verification, "alice")
        .await
        .unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{rest}\n{err}");
    assert!(
        rest.contains("signed in as alice (admin of every team)"),
        "{rest}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the token file is its owner's only");
    }

    // The next commands use it: alice's name in the audit log.
    let spec = dir.path().join("checkout.yaml");
    std::fs::write(&spec, rollout("checkout", "payments")).unwrap();
    let apply = w
        .controller
        .cli_command(None, &["apply", "--file", spec.to_str().unwrap()])
        .unwrap()
        .env("DIMMER_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    assert_acted(&w, "alice").await;

    // Signed out: the next command is refused.
    let out = w
        .controller
        .cli_command(None, &["logout"])
        .unwrap()
        .env("DIMMER_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!token_file.exists());
    let status = w
        .controller
        .cli_command(None, &["status"])
        .unwrap()
        .env("DIMMER_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    assert!(!status.status.success());
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_real_browser_the_page_signs_in_with_the_provider_and_acts_with_csrf() {
    // Plain HTTP on loopback (a browser has no test CA): the cookies are
    // then not `Secure` and not `__Host-`, as the file's http:// says.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let controller_url = format!("http://127.0.0.1:{port}");
    let provider = Provider::start(&format!("{controller_url}/auth/callback"), &people())
        .await
        .unwrap();
    let file = oidc_file_for(dir.path(), &provider.issuer(), &controller_url);
    let c = Controller::start_at(
        port,
        MetricsFrom::Prometheus("http://127.0.0.1:9".into()),
        &["--oidc", &file],
    )
    .await
    .unwrap();
    let spec = dir.path().join("checkout.yaml");
    std::fs::write(&spec, rollout("checkout", "payments")).unwrap();
    c.cli(
        Some(ADMIN_TOKEN),
        &["apply", "--file", spec.to_str().unwrap()],
    )
    .unwrap();
    let browser = dimmer_e2e::paths::workspace_root().join("tests/browser");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(browser.join("sso.mjs"))
            .env("DIMMER_URL", controller_url)
            .env("DIMMER_LOGIN", "bob")
            .env("DIMMER_ROLLOUT", "checkout")
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser run failed:\n{stdout}\n{}\nprovider: {}",
        String::from_utf8_lossy(&out.stderr),
        provider.log()
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["role"], "operator", "{seen}");
    assert!(
        seen["provider_page"]
            .as_str()
            .unwrap()
            .starts_with(&provider.issuer()),
        "{seen}"
    );
    let abort = c.first_record("checkout", "abort").await.unwrap();
    assert_eq!(abort["actor"], "bob", "{abort}");
}

async fn whoami(w: &World, token: &str) -> (u16, String) {
    let r = w
        .controller
        .http()
        .unwrap()
        .get(format!("{}/v1/whoami", w.controller.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn part(token: &str, i: usize) -> serde_json::Value {
    let p = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&B64.decode(p).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn id_tokens_that_must_not_pass_do_not() {
    let mut w = world().await;
    let good = w.provider.device_token("dimmer-cli", "bob").await.unwrap();
    let (s, b) = whoami(&w, &good).await;
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("\"bob\"") && b.contains("operator"), "{b}");

    // Another application's token of the same provider.
    let wiki = w.provider.device_token("wiki", "alice").await.unwrap();
    let (s, b) = whoami(&w, &wiki).await;
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("not for Dimmer"), "{b}");

    // Tampered: bob made an SRE, signature kept.
    let mut claims = part(&good, 1);
    claims["groups"] = serde_json::json!(["sre"]);
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims.to_string()),
        parts[2]
    );
    // Unsigned, and signed with a shared secret: refused by name.
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(claims.to_string())
    );
    let hs = format!(
        "{}.{}.c2ln",
        B64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        B64.encode(claims.to_string())
    );
    for (token, says) in [(&forged, "signature"), (&none, "unsigned"), (&hs, "HS256")] {
        let (s, b) = whoami(&w, token).await;
        assert_eq!(s, 401, "{b}");
        assert!(b.contains(says), "{says}: {b}");
    }

    // A person the provider knows but no group maps: 403, saying so.
    let mallory = w
        .provider
        .device_token("dimmer-cli", "mallory")
        .await
        .unwrap();
    let (s, b) = whoami(&w, &mallory).await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("visitors"), "{b}");

    // The provider rotates its key: a new one signs, the old one is still
    // published. The controller fetches the keys again for the new key id;
    // tokens of both verify.
    w.provider
        .restart(&Setup {
            key_ids: "k2,k1",
            ..Setup::default()
        })
        .await
        .unwrap();
    let newer = w
        .provider
        .device_token("dimmer-cli", "carol")
        .await
        .unwrap();
    assert_eq!(part(&newer, 0)["kid"], "k2");
    // Keys are fetched at most every 2 s (made-up key ids must not make
    // the controller hammer the provider): the first look after that.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(part(&good, 0)["kid"], "k1");
    let (s, b) = whoami(&w, &newer).await;
    assert_eq!(s, 200, "a token of the new key: {b}");
    let (s, b) = whoami(&w, &good).await;
    assert_eq!(s, 200, "a token of the old key, still published: {b}");

    // Expired: one-second tokens, looked at past the 5 s leeway.
    w.provider
        .restart(&Setup {
            key_ids: "k2,k1",
            id_token_ttl: 1,
        })
        .await
        .unwrap();
    let short = w
        .provider
        .device_token("dimmer-cli", "carol")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (s, b) = whoami(&w, &short).await;
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("expired"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_does_not_answer_stops_the_controller_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new(dir.path()).unwrap();
    let silent = format!("http://127.0.0.1:{}", free_port().unwrap());
    let port = free_port().unwrap();
    let file = oidc_file(dir.path(), &silent, port);
    let err = match Controller::start_tls_at(
        port,
        MetricsFrom::Prometheus("http://127.0.0.1:9".into()),
        &certs,
        &["--oidc", &file],
    )
    .await
    {
        Ok(_) => panic!("started without its provider"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("--oidc") && err.contains("not starting"),
        "{err}"
    );
    assert!(err.contains(&silent), "{err}");

    // A file that would send tokens in the clear: refused, naming the field.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "issuer: http://login.example.com\nclient_id: dimmer\n\
         redirect_url: https://d.example.com/auth/callback\ngroups: [{group: a, role: admin}]\n",
    )
    .unwrap();
    let err = match Controller::start(
        MetricsFrom::Prometheus("http://127.0.0.1:9".into()),
        &["--oidc", bad.to_str().unwrap()],
    )
    .await
    {
        Ok(_) => panic!("started with an http:// issuer"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("issuer") && err.contains("https://"), "{err}");
}
