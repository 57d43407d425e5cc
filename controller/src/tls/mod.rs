//! The TLS layer, below every other: the controller's HTTPS listener with
//! a certificate that is re-read when its files change, and the one place
//! HTTP clients are made, so that every outgoing call (the CLI's, a fleet
//! peer's, a webhook's, a metrics source's) verifies servers the same way,
//! with rustls (TLS 1.2 and 1.3 only). May import: nothing of this crate.

mod client;
mod server;

pub use client::{client_builder, http_client, install_provider, TlsClientError};
pub use server::{serve, CertFiles, ClientCert, PeerCert, ReloadingCert, TlsError};
