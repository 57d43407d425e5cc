//! Who is asking, and what they may do (`principal`). Bearer tokens from a file of
//! digests (`tokens`); people signed in with the company's OpenID Connect
//! provider (`oidc`: the provider's keys and ID tokens; `oidc_config`: the
//! file that says which groups are which roles); the page's session, a
//! signed cookie (`session`); proxy certificates revoked (`revoked`).
//!
//! May import: `tls` (the one maker of HTTP clients); nothing above it.

pub mod oidc;
pub mod oidc_config;
pub mod principal;
pub mod revoked;
pub mod session;
pub mod tokens;
pub mod watched;

pub use oidc::{Identity, Oidc, OidcError};
pub use oidc_config::OidcConfig;
pub use principal::{Principal, Role};
pub use revoked::Revoked;
pub use session::{LoginState, Session, Sessions};
pub use tokens::{Auth, AuthError};
