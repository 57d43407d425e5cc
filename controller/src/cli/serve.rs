//! `dimmer serve`: the controller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, App};
use crate::auth::tokens::Auth;
use crate::metrics::envoy_admin::EnvoyAdmin;
use crate::metrics::prometheus::Prometheus;
use crate::metrics::MetricsSource;
use crate::service::{Limits, Service, Settings};
use crate::store::audit::AuditKey;
use crate::store::{self, Store};
use anyhow::{bail, Context};

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Serve HTTPS with this certificate chain (PEM), re-read when the file
    /// changes; with --tls-key. TLS 1.2 and 1.3 only (docs/security.md).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM), with --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS for proxies: the CA (PEM) that signs their client
    /// certificates. A poll with a certificate it verifies needs no token;
    /// such a certificate is a proxy, never more (docs/security.md).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// With --client-ca: proxy certificates that no longer count, by their
    /// SHA-256 fingerprints, one a line; read again when it changes.
    #[arg(long, requires = "client_ca")]
    revoked_certs: Option<PathBuf>,
    /// Converge on this directory of specs (GitOps; kept by git-sync or a
    /// CI checkout): every few seconds while this controller leads, as
    /// `dimmer sync DIR` does (docs/pipeline.md).
    #[arg(long)]
    sync: Option<PathBuf>,
    /// With --sync: delete rollouts the directory no longer holds.
    #[arg(long, requires = "sync")]
    sync_prune: bool,
    /// With --sync: how often the directory is read.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration, requires = "sync")]
    sync_every: Duration,
    /// SQLite state file: rollouts, revision, audit log.
    #[arg(long, default_value = "dimmer.db")]
    db: PathBuf,
    /// Read metrics from this Envoy's admin (one proxy).
    #[arg(
        long,
        default_value = "http://127.0.0.1:9901",
        conflicts_with = "prometheus"
    )]
    envoy_admin: String,
    /// Read metrics from Prometheus (every proxy).
    #[arg(long)]
    prometheus: Option<String>,
    /// Tokens and roles (YAML); see docs/controller.md.
    #[arg(long, required_unless_present_any = ["no_auth", "oidc"])]
    tokens: Option<PathBuf>,
    /// People sign in with this OpenID Connect provider: the file names it
    /// and maps its groups to roles and teams (docs/security.md). The
    /// controller does not start if the provider does not answer.
    #[arg(long, conflicts_with = "no_auth")]
    oidc: Option<PathBuf>,
    /// Accept every request as admin: only for a controller bound to loopback.
    #[arg(long)]
    no_auth: bool,
    /// POST every state change to this URL (repeatable).
    #[arg(long)]
    webhook: Vec<String>,
    /// The key of the audit log's checkpoints (64 hex digits), created if
    /// missing. Keep it away from the state file: default is the state
    /// file's name + `.key`.
    #[arg(long)]
    audit_key: Option<PathBuf>,
    /// Longest wait for one batch of metrics.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    metrics_timeout: Duration,
    /// How long a live proxy that has not applied a rollout's revision holds
    /// its step before it is reported stale instead.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    proxy_stale_after: Duration,
    /// Most proxies the registry remembers (the least recently seen goes
    /// first); each costs about as much memory as bench/RESULTS.md says.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_proxies: u32,
    /// Keep the state in etcd instead of --db, for a fleet of controllers:
    /// `etcd://HOST:PORT[,HOST:PORT...]`. One leader decides; every
    /// controller serves the config (docs/operations.md, "A fleet").
    #[arg(long)]
    store: Option<String>,
    /// With --store etcds://: the CA (PEM) of etcd's certificate.
    #[arg(long, requires = "store")]
    etcd_ca: Option<PathBuf>,
    /// With --store etcds://: this controller's client certificate (PEM),
    /// for an etcd that asks for one (`--client-cert-auth`); with --etcd-key.
    #[arg(long, requires_all = ["store", "etcd_key"])]
    etcd_cert: Option<PathBuf>,
    #[arg(long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// With --store etcd: the URL other controllers reach this one at, to
    /// forward mutating calls to it when it leads.
    #[arg(long, requires = "store")]
    advertise: Option<String>,
    /// With --store etcd: the leader's lease; a leader that cannot renew it
    /// stops deciding within two thirds of it, and another takes over after it.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
}

/// `etcd://a:2379,b:2379` (or `etcds://…`, over TLS) as its endpoints, and
/// whether TLS.
fn etcd_endpoints(store: &str) -> anyhow::Result<(Vec<String>, bool)> {
    let (rest, tls) = match (store.strip_prefix("etcds://"), store.strip_prefix("etcd://")) {
        (Some(rest), _) => (rest, true),
        (None, Some(rest)) => (rest, false),
        _ => bail!(
            "--store {store:?}: only etcd://HOST:PORT[,HOST:PORT...] or etcds:// for TLS (SQLite is the default, --db)"
        ),
    };
    let endpoints: Vec<String> = rest
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() || endpoints.iter().any(|e| !e.contains(':')) {
        bail!("--store {store:?}: each endpoint is HOST:PORT");
    }
    let endpoints = match tls {
        true => endpoints.iter().map(|e| format!("https://{e}")).collect(),
        false => endpoints,
    };
    Ok((endpoints, tls))
}

/// The TLS to etcd the flags ask for: `etcds://` needs `--etcd-ca`, and
/// the flags mean nothing without it (never a quiet plain connection).
fn etcd_tls(
    tls: bool,
    ca: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<Option<crate::store::etcd::EtcdTls>> {
    let read = |flag: &str, p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("{flag} {}", p.display()))
    };
    match (tls, ca) {
        (false, None) => Ok(None),
        (false, Some(_)) => bail!("--etcd-ca is for TLS: write the store as etcds://HOST:PORT"),
        (true, None) => {
            bail!("--store etcds:// needs --etcd-ca FILE, the CA of etcd's certificate")
        }
        (true, Some(ca)) => {
            let ca_pem = read("--etcd-ca", ca)?;
            if !String::from_utf8_lossy(&ca_pem).contains("-----BEGIN CERTIFICATE-----") {
                bail!("--etcd-ca {}: no PEM certificate in it", ca.display());
            }
            let identity = match (cert, key) {
                (Some(c), Some(k)) => Some((read("--etcd-cert", c)?, read("--etcd-key", k)?)),
                _ => None,
            };
            Ok(Some(crate::store::etcd::EtcdTls { ca_pem, identity }))
        }
    }
}

/// `ca`: the global `--ca`, the CA of the fleet's controllers' certificates
/// (their peer calls verify against it).
pub async fn serve(args: ServeArgs, ca: Option<PathBuf>) -> anyhow::Result<()> {
    let ServeArgs {
        listen,
        db,
        envoy_admin,
        prometheus,
        tokens,
        no_auth,
        webhook: webhooks,
        audit_key,
        metrics_timeout,
        proxy_stale_after,
        max_proxies,
        store: store_url,
        advertise,
        lease_ttl,
        sync,
        sync_prune,
        sync_every,
        tls_cert,
        tls_key,
        client_ca,
        oidc,
        revoked_certs,
        etcd_ca,
        etcd_cert,
        etcd_key,
    } = args;
    let args_tls = (tls_cert, tls_key);
    let auth = match (tokens, no_auth) {
        (Some(path), _) => Auth::from_file(&path)?,
        // People sign in; proxies use their client certificates.
        (None, false) if oidc.is_some() => Auth::Tokens(Vec::new()),
        (None, true) => {
            let addr: SocketAddr = listen
                .parse()
                .with_context(|| format!("--listen {listen}: not an IP address and port"))?;
            if !addr.ip().is_loopback() {
                bail!("--no-auth makes every caller an admin: it needs a loopback --listen, not {listen}");
            }
            Auth::Open
        }
        (None, false) => bail!("--tokens FILE is required (or --no-auth on loopback)"),
    };
    for (i, url) in webhooks.iter().enumerate() {
        if reqwest::Url::parse(url).is_err() || !url.starts_with("http") {
            bail!("--webhook #{}: {url:?} is not an http(s) URL", i + 1);
        }
    }
    let queries = Arc::new(crate::metrics::providers::HttpQuery::new(
        prometheus.clone(),
        metrics_timeout,
    ));
    let source: Arc<dyn MetricsSource> = match prometheus {
        Some(url) => Arc::new(Prometheus::new(&url, metrics_timeout)),
        None => Arc::new(EnvoyAdmin::new(&envoy_admin, metrics_timeout)),
    };
    let key_path = audit_key.unwrap_or_else(|| store::default_key_path(&db));
    let key = AuditKey::load_or_create(&key_path)?;
    // Checked before anything is opened: no sign-in, no start (never a
    // controller that quietly lets nobody, or everybody, in).
    let oidc = match oidc {
        None => None,
        Some(path) => {
            let config = crate::auth::OidcConfig::load(&path)?;
            let http = crate::tls::http_client(config.ca.as_deref())?
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            let sessions = crate::auth::Sessions::new(
                &key.derive("session"),
                config.session_ttl,
                config.secure_cookies(),
            );
            let issuer = config.issuer.clone();
            let oidc = crate::auth::Oidc::start(config, http)
                .await
                .with_context(|| {
                    format!(
                        "--oidc {}: the provider {issuer} is needed to sign anyone in; not starting",
                        path.display()
                    )
                })?;
            tracing::info!(issuer = %issuer, "people sign in with OpenID Connect");
            Some((oidc, sessions))
        }
    };
    let (store, fleet) = match &store_url {
        None => (
            Store::open(&db, key).with_context(|| format!("opening {}", db.display()))?,
            None,
        ),
        Some(url) => {
            let (endpoints, tls) = etcd_endpoints(url)?;
            let tls = etcd_tls(
                tls,
                etcd_ca.as_deref(),
                etcd_cert.as_deref(),
                etcd_key.as_deref(),
            )?;
            let Some(me) = advertise.clone() else {
                bail!("--store etcd needs --advertise URL: where the other controllers reach this one");
            };
            if reqwest::Url::parse(&me).is_err() || !me.starts_with("http") {
                bail!("--advertise {me:?} is not an http(s) URL");
            }
            if lease_ttl < Duration::from_secs(1) || lease_ttl > Duration::from_secs(60) {
                bail!("--lease-ttl must be from 1s to 60s");
            }
            let peer_secret = key.derive("fleet-peer");
            let etcd = crate::store::etcd::EtcdStore::connect(
                &endpoints,
                "/dimmer/",
                key,
                Duration::from_secs(2),
                tls,
            )
            .await
            .with_context(|| format!("connecting to {url}"))?;
            // Peers are verified against --ca (the fleet's own CA) when
            // given; no redirects: a peer answers for itself.
            let peers = crate::tls::http_client(ca.as_deref())?
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            let role = Arc::new(crate::service::Role::new(
                &me,
                lease_ttl,
                peer_secret,
                peers,
            ));
            let fleet = crate::fleet::Fleet {
                client: etcd.client(),
                election: "/dimmer-election/leader".into(),
                prefix: etcd.prefix().to_owned(),
                role: Arc::clone(&role),
                fence: etcd.fence_handle(),
            };
            (Store::on(etcd), Some((fleet, role)))
        }
    };
    let settings = Settings {
        metrics_timeout,
        webhooks,
        proxies: Limits {
            stale_ms: proxy_stale_after.as_millis() as u64,
            max_proxies: max_proxies as usize,
            ..Limits::default()
        },
        queries,
        fleet: fleet.as_ref().map(|(_, role)| Arc::clone(role)),
        ..Settings::default()
    };
    let service = Service::new(store, source, settings)?;
    if let Some((fleet, _)) = fleet {
        tokio::spawn(Arc::new(fleet).run(Arc::clone(&service)));
    }
    // Checked before binding: a bad certificate is an error at start.
    let tls = match (&args_tls.0, &args_tls.1) {
        (Some(cert), Some(key)) => {
            let cert = crate::tls::ReloadingCert::load(crate::tls::CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            })?;
            let config = cert.config(client_ca.as_deref())?;
            Some((cert, config))
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(%listen, db = %db.display(), tls = tls.is_some(), "dimmer controller serving");
    tokio::spawn(Arc::clone(&service).run());
    if let Some(dir) = sync {
        // Checked now: a directory that is not there is a mistake at start.
        crate::sync::read(&dir).with_context(|| "--sync")?;
        tokio::spawn(crate::sync::watch(
            Arc::clone(&service),
            dir,
            sync_prune,
            sync_every.max(Duration::from_millis(200)),
        ));
    }
    let mut app = App::new(service, auth);
    if let Some((oidc, sessions)) = oidc {
        app = app.with_oidc(oidc, sessions);
    }
    if let Some(path) = &revoked_certs {
        app.revoked = Arc::new(crate::auth::Revoked::from_file(path)?);
    }
    // The tokens file is read again when it changes: a token created or
    // revoked takes effect within a second, and a bad edit keeps the last
    // good tokens.
    let auth = std::sync::Arc::clone(&app.auth);
    let revoked = Arc::clone(&app.revoked);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            every.tick().await;
            match revoked.reload() {
                Ok(true) => tracing::info!("revoked certificates changed: the new list applies"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "revoked certificates not reloaded; the last good list still applies")
                }
            }
            match auth.reload() {
                Ok(true) => tracing::info!("tokens file changed: its tokens now apply"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "tokens file not reloaded; the last good tokens still apply")
                }
            }
        }
    });
    let app = api::router(app);
    if let Some((cert, config)) = tls {
        let rotations = cert.rotations();
        tokio::spawn(cert.watch());
        crate::tls::serve(listener, app, config, rotations, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        return Ok(());
    }
    // Each connection's address: live streams are limited per address too.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
