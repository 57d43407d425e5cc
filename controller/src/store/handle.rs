//! [`Store`]: the state back-end a controller runs on, whichever it is.

use std::ops::Deref;
use std::path::Path;

use super::audit::AuditKey;
use super::backend::{StateStore, StoreError};
use super::sqlite::SqliteStore;

/// Where the state is: one SQLite file, or etcd. Its calls are the
/// [`StateStore`] trait's.
pub struct Store(Box<dyn StateStore>);

impl Store {
    /// The SQLite file at `path`, created if missing.
    pub fn open(path: &Path, key: AuditKey) -> Result<Store, StoreError> {
        SqliteStore::open(path, key).map(|s| Store(Box::new(s)))
    }

    /// Any back-end: etcd for a fleet, or a test's own.
    pub fn on(backend: impl StateStore + 'static) -> Store {
        Store(Box::new(backend))
    }
}

impl Deref for Store {
    type Target = dyn StateStore;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}
