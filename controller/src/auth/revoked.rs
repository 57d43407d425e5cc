//! Proxy certificates that no longer count (`serve --revoked-certs FILE`):
//! their SHA-256 fingerprints, one per line (`#` starts a comment), as
//! `dimmer proxies` and the controller's log show them. Read again when
//! the file changes, like the tokens file: a revoked certificate's polls
//! are refused within a second, without a restart; a file that does not
//! parse keeps the last good list.

use std::collections::HashSet;
use std::path::Path;

use super::watched::Watched;

#[derive(Debug, thiserror::Error)]
#[error("--revoked-certs {path}: {reason}")]
pub struct RevokedError {
    pub path: String,
    pub reason: String,
}

#[derive(Default)]
pub struct Revoked(Option<Watched<HashSet<String>>>);

/// The fingerprints of a revocation file's text, checked line by line.
pub fn parse(text: &str) -> Result<HashSet<String>, String> {
    let mut set = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let hex: String = line.chars().filter(|c| *c != ':').collect();
        let hex = hex.to_ascii_lowercase();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "line {}: {line:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)",
                i + 1
            ));
        }
        set.insert(hex);
    }
    Ok(set)
}

impl Revoked {
    /// None revoked, and no file to watch.
    pub fn none() -> Revoked {
        Revoked::default()
    }

    pub fn from_file(path: &Path) -> Result<Revoked, RevokedError> {
        let err = error(path);
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let set = parse(&text).map_err(err)?;
        Ok(Revoked(Some(Watched::new(path, &text, set))))
    }

    /// Reads the file again if it changed: `Ok(true)` when a new list took
    /// effect; an error changes nothing.
    pub fn reload(&self) -> Result<bool, RevokedError> {
        let Some(file) = &self.0 else {
            return Ok(false);
        };
        let err = error(file.path());
        let Some(text) = file.changed().map_err(|e| err(e.to_string()))? else {
            return Ok(false);
        };
        file.set(parse(&text).map_err(err)?);
        Ok(true)
    }

    pub fn contains(&self, fingerprint: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|file| file.get().contains(&fingerprint.to_ascii_lowercase()))
    }
}

fn error(path: &Path) -> impl Fn(String) -> RevokedError + '_ {
    move |reason| RevokedError {
        path: path.display().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_with_colons_and_comments_parse_and_bad_lines_are_named() {
        let fp = "ab".repeat(32);
        let colons = vec!["CD"; 32].join(":");
        let set = parse(&format!(
            "# revoked 2026-12-06\n{fp}  # edge-1\n\n{colons}\n"
        ))
        .unwrap();
        assert!(set.contains(&fp));
        assert!(set.contains(&"cd".repeat(32)));
        let e = parse(&format!("{fp}\nedge-7\n")).unwrap_err();
        assert!(e.contains("line 2") && e.contains("edge-7"), "{e}");
    }
}
