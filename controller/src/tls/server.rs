//! The HTTPS listener: `--tls-cert`/`--tls-key` (PEM), TLS 1.2 and 1.3,
//! and a certificate re-read when its files change, so that a rotation
//! (cert-manager renewing a Secret, an operator replacing the files) takes
//! effect at the next handshake with no restart and no dropped poll:
//! connections already open keep the certificate they began with.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a client may take over its handshake before it is dropped:
/// a stalled one must hold no task or socket for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the certificate's files are looked at.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("--tls-cert {path}: {why}")]
    Cert { path: String, why: String },
    #[error("--tls-key {path}: {why}")]
    Key { path: String, why: String },
    #[error("--tls-cert and --tls-key: {0}")]
    Pair(String),
    #[error("--client-ca {path}: {why}")]
    ClientCa { path: String, why: String },
}

/// The client certificate a connection presented and the `--client-ca`
/// verified: a proxy's identity in mutual TLS. Every request of a TLS
/// connection carries one (`None` without a certificate).
#[derive(Debug, Clone)]
pub struct PeerCert(pub Option<ClientCert>);

#[derive(Debug, Clone)]
pub struct ClientCert {
    /// SHA-256 of the certificate (hex): what `--revoked-certs` lists.
    pub fingerprint: String,
    /// Its first DNS or URI name (a SPIFFE ID, say), else its subject's
    /// common name: who the proxy is in the log and the audit.
    pub name: Option<String>,
}

impl ClientCert {
    pub fn of(der: &[u8]) -> ClientCert {
        ClientCert {
            fingerprint: hex::encode(Sha256::digest(der)),
            name: cert_name(der),
        }
    }
}

fn cert_name(der: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::DNSName(d) | GeneralName::URI(d) => Some((*d).to_owned()),
                _ => None,
            })
        });
    san.or_else(|| {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    })
}

/// A verifier of client certificates against the CA in `path`, for mutual
/// TLS: a client may still come without one (people with tokens do).
fn client_verifier(
    path: &std::path::Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let bad = |why: String| TlsError::ClientCa {
        path: path.display().to_string(),
        why,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| bad(e.to_string()))
}

/// Whether the leaf certificate is valid now: an expired (or not yet
/// valid) one would be refused by every client, so it is refused here,
/// saying when.
fn check_validity(der: &[u8]) -> Result<(), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let v = cert.validity();
    if now > v.not_after.timestamp() {
        return Err(format!("expired at {} (renew it)", v.not_after));
    }
    if now < v.not_before.timestamp() {
        return Err(format!("not valid before {}", v.not_before));
    }
    Ok(())
}

/// Where the certificate chain and its private key are.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// The chain and key, checked to belong together.
    fn load(&self) -> Result<CertifiedKey, TlsError> {
        let cert_err = |why: String| TlsError::Cert {
            path: self.cert.display().to_string(),
            why,
        };
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| cert_err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(e.to_string()))?;
        let Some(leaf) = chain.first() else {
            return Err(cert_err("no PEM certificate in it".into()));
        };
        check_validity(leaf.as_ref()).map_err(cert_err)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| TlsError::Key {
            path: self.key.display().to_string(),
            why: e.to_string(),
        })?;
        let provider = rustls::crypto::ring::default_provider();
        CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Pair(e.to_string()))
    }

    /// When the files last changed, to notice a rotation.
    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let at = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((at(&self.cert)?, at(&self.key)?))
    }
}

/// The certificate being served, swapped whole when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: CertFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// Bumped on each reload: open connections then close once idle, so
    /// every client handshakes again and sees the new certificate.
    rotated: tokio::sync::watch::Sender<u64>,
}

impl ReloadingCert {
    /// Loads the files now: a bad certificate is an error at start.
    pub fn load(files: CertFiles) -> Result<Arc<ReloadingCert>, TlsError> {
        let key = files.load()?;
        Ok(Arc::new(ReloadingCert {
            files,
            current: RwLock::new(Arc::new(key)),
            rotated: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// Changes on every reload (for [`serve`]).
    pub fn rotations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rotated.subscribe()
    }

    /// Looks at the files every second; a change that loads is served from
    /// the next handshake, one that does not (a key written before its
    /// certificate, a typo) is logged and the last good pair kept.
    pub async fn watch(self: Arc<Self>) {
        let mut seen = self.files.stamp();
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let now = self.files.stamp();
            if now == seen {
                continue;
            }
            match self.files.load() {
                Ok(key) => {
                    if let Ok(mut current) = self.current.write() {
                        *current = Arc::new(key);
                    }
                    seen = now;
                    self.rotated.send_modify(|n| *n += 1);
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate not reloaded; serving the last good one")
                }
            }
        }
    }

    /// The server's TLS config; with `client_ca`, client certificates are
    /// asked for and verified against it (mutual TLS), but not required.
    pub fn config(
        self: &Arc<Self>,
        client_ca: Option<&std::path::Path>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Pair(e.to_string()))?;
        let builder = match client_ca {
            Some(path) => builder.with_client_cert_verifier(client_verifier(path)?),
            None => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // No session resumption: a resumed session skips the certificate,
        // so after a rotation (a name fixed, a compromised key replaced)
        // clients would go on trusting the old one. Polls keep their
        // connections open; a full handshake per new connection is cheap.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` completes. Each
/// handshake runs in a task of its own, bounded in time, so a slow or
/// silent client never holds up the accept loop. Handlers see the peer's
/// address as `ConnectInfo<SocketAddr>`, as over plain HTTP.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: Arc<ServerConfig>,
    rotations: tokio::sync::watch::Receiver<u64>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(config);
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: pause, then go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut rotations = rotations.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let peer = PeerCert(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(<[_]>::first)
                    .map(|leaf| ClientCert::of(leaf.as_ref())),
            );
            // After a rotation a kept-alive connection would go on under
            // the old certificate: its next answer says `Connection: close`,
            // so the client handshakes again, with no request lost (closing
            // an idle connection instead races the client's next request).
            let born = *rotations.borrow_and_update();
            let app = app.layer(axum::middleware::map_response(
                move |mut resp: axum::response::Response| {
                    let rotations = rotations.clone();
                    async move {
                        if *rotations.borrow() != born {
                            resp.headers_mut().insert(
                                axum::http::header::CONNECTION,
                                axum::http::HeaderValue::from_static("close"),
                            );
                        }
                        resp
                    }
                },
            ));
            let service = TowerToHyperService::new(
                app.layer(Extension(ConnectInfo(addr)))
                    .layer(Extension(peer)),
            );
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(%addr, error = %e, "connection ended");
            }
        });
    }
}
