//! Test certificates, made fresh by each test with `rcgen`: a CA, and the
//! controller's certificate for `localhost` and 127.0.0.1 signed by it,
//! written as PEM files the controller and Envoy read.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// The name the controller's certificate is for, and the one Envoy checks.
pub const SERVER_NAME: &str = "localhost";

pub struct TestCerts {
    /// The CA's certificate: what clients trust.
    pub ca: PathBuf,
    /// The controller's certificate and key (`--tls-cert`, `--tls-key`).
    pub cert: PathBuf,
    pub key: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCerts {
    /// A new CA and a first server certificate, in `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<TestCerts> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "dimmer test CA");
        let key = KeyPair::generate()?;
        let ca = params.self_signed(&key)?;
        let certs = TestCerts {
            ca: dir.join("ca.pem"),
            cert: dir.join("controller.pem"),
            key: dir.join("controller.key"),
            issuer: Issuer::new(params, key),
        };
        std::fs::write(&certs.ca, ca.pem())?;
        certs.issue()?;
        Ok(certs)
    }

    /// Writes a new server certificate, with a new key, over the files (as a
    /// rotation does); returns it, DER, to compare with what is served.
    pub fn issue(&self) -> anyhow::Result<Vec<u8>> {
        let params = CertificateParams::new(vec![SERVER_NAME.to_string(), "127.0.0.1".into()])?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        // The key first: a reader that sees the new certificate with the
        // old key refuses the pair and keeps serving, then sees both.
        std::fs::write(&self.key, key.serialize_pem())?;
        std::fs::write(&self.cert, cert.pem())?;
        Ok(cert.der().to_vec())
    }

    /// Writes a server certificate for `names` only (not [`SERVER_NAME`]:
    /// a certificate of the wrong name for Envoy's check).
    pub fn issue_named(&self, names: &[&str]) -> anyhow::Result<()> {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        std::fs::write(&self.key, key.serialize_pem())?;
        std::fs::write(&self.cert, cert.pem())?;
        Ok(())
    }

    /// Writes a server certificate of the right names signed by a CA of
    /// nobody's (a stranger's, as a man in the middle would show).
    pub fn issue_by_stranger(&self) -> anyhow::Result<()> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate()?;
        let stranger = Issuer::new(params, ca_key);
        let params = CertificateParams::new(vec![SERVER_NAME.to_string(), "127.0.0.1".into()])?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &stranger)?;
        std::fs::write(&self.key, key.serialize_pem())?;
        std::fs::write(&self.cert, cert.pem())?;
        Ok(())
    }

    /// A certificate of the right names and CA that expired yesterday,
    /// written beside the others: `(certificate, key)`.
    pub fn expired(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string(), "127.0.0.1".into()])?;
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(30 * 86400)).into();
        params.not_after = (now - std::time::Duration::from_secs(86400)).into();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let dir = self.ca.parent().unwrap_or(Path::new("."));
        let (cert_path, key_path) = (dir.join("expired.pem"), dir.join("expired.key"));
        std::fs::write(&key_path, key.serialize_pem())?;
        std::fs::write(&cert_path, cert.pem())?;
        Ok((cert_path, key_path))
    }

    /// A client certificate for `name` signed by this CA (a proxy's, for
    /// mutual TLS), written beside the others: `(certificate, key)`.
    pub fn issue_client(&self, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.issue_pair(name, &[name])
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this
    /// CA, written beside the others as `STEM.pem` and `STEM.key`.
    pub fn issue_pair(&self, stem: &str, names: &[&str]) -> anyhow::Result<(PathBuf, PathBuf)> {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let dir = self.ca.parent().unwrap_or(Path::new("."));
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&key_path, key.serialize_pem())?;
        std::fs::write(&cert_path, cert.pem())?;
        Ok((cert_path, key_path))
    }
}
