//! A file the controller reads again when it changes (the tokens file, the
//! revoked certificates): its parsed value, swapped whole. A file that
//! cannot be read or parsed keeps the last good value, and a text that did
//! not parse is not parsed again until it changes.

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use sha2::{Digest, Sha256};

pub struct Watched<T> {
    path: PathBuf,
    value: RwLock<T>,
    /// The SHA-256 of the text last looked at.
    seen: RwLock<[u8; 32]>,
}

impl<T> Watched<T> {
    /// `value`, parsed from `text`, the file's contents now.
    pub fn new(path: &Path, text: &str, value: T) -> Self {
        Watched {
            path: path.to_owned(),
            value: RwLock::new(value),
            seen: RwLock::new(Sha256::digest(text.as_bytes()).into()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's text if it changed since the last look, which it becomes.
    pub fn changed(&self) -> std::io::Result<Option<String>> {
        let text = std::fs::read_to_string(&self.path)?;
        let now: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return Ok(None);
        }
        *seen = now;
        Ok(Some(text))
    }

    pub fn set(&self, value: T) {
        *self.value.write().unwrap_or_else(|e| e.into_inner()) = value;
    }

    pub fn get(&self) -> RwLockReadGuard<'_, T> {
        self.value.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_text_is_handed_over_once_and_the_value_kept_until_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let w = Watched::new(&path, "one", 1);
        assert_eq!(w.changed().unwrap(), None);
        std::fs::write(&path, "two").unwrap();
        assert_eq!(w.changed().unwrap().as_deref(), Some("two"));
        assert_eq!(w.changed().unwrap(), None, "seen once, not again");
        assert_eq!(*w.get(), 1, "the value changes only when set");
        w.set(2);
        assert_eq!(*w.get(), 2);
        std::fs::remove_file(&path).unwrap();
        assert!(w.changed().is_err());
        assert_eq!(*w.get(), 2, "a file gone keeps the last value");
    }
}
