//! HTTP clients: rustls with ring as the process's crypto, and the
//! operator's CA (`--ca`) as the only roots when given.

use std::path::Path;
use std::sync::Once;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsClientError {
    #[error("--ca {path}: {why}")]
    Ca { path: String, why: String },
    #[error("building the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// rustls needs one crypto provider for the process; reqwest is built
/// without a default one (and panics building a client without one), so
/// every process installs it first: `main` does, and so does every maker
/// of clients here.
pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only if one is installed already: that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client builder with TLS 1.2+ against the system's roots: for calls
/// out of the controller (metrics sources, webhooks, hooks).
pub fn client_builder() -> reqwest::ClientBuilder {
    install_provider();
    reqwest::Client::builder().tls_version_min(reqwest::tls::Version::TLS_1_2)
}

/// A client builder with TLS 1.2+ and, given `ca` (a PEM file of one or
/// more certificates), those as the only trusted roots: a controller's
/// certificate from a private CA verifies, nothing else does. Without
/// `ca` the system's roots. Verification is never switched off.
pub fn http_client(ca: Option<&Path>) -> Result<reqwest::ClientBuilder, TlsClientError> {
    let builder = client_builder();
    let Some(ca) = ca else {
        return Ok(builder);
    };
    let bad = |why: String| TlsClientError::Ca {
        path: ca.display().to_string(),
        why,
    };
    let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(builder.tls_certs_only(certs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_is_not_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = http_client(Some(&path)).unwrap_err().to_string();
        assert!(err.starts_with("--ca ") && err.contains("ca.pem"), "{err}");
        let err = http_client(Some(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
