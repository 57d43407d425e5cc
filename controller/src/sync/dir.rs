//! A sync directory read into spec files: every `.yaml`/`.yml` file below
//! it, in path order; hidden files and folders (`.git`) skipped; anything
//! else refused by name, so that a stray file is never silently ignored.

use std::path::{Path, PathBuf};

use dimmer_decide::spec::yaml_guard;

use crate::service::SpecFile;

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("sync directory {0}: does not exist")]
    Missing(String),
    #[error("sync directory {0}: is not a directory")]
    NotADirectory(String),
    #[error("{0}: not a spec (.yaml or .yml); a sync directory holds specs only")]
    NotYaml(String),
    #[error("{path}: larger than {limit} bytes")]
    TooLarge { path: String, limit: usize },
    #[error("{path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("sync directory {dir}: more than {limit} files")]
    TooMany { dir: String, limit: usize },
}

pub fn read(dir: &Path) -> Result<Vec<SpecFile>, DirError> {
    let shown = dir.display().to_string();
    if !dir.exists() {
        return Err(DirError::Missing(shown));
    }
    if !dir.is_dir() {
        return Err(DirError::NotADirectory(shown));
    }
    let mut paths = Vec::new();
    walk(dir, &mut paths)?;
    paths.sort();
    if paths.len() > crate::service::SYNC_MAX_FILES {
        return Err(DirError::TooMany {
            dir: shown,
            limit: crate::service::SYNC_MAX_FILES,
        });
    }
    paths
        .into_iter()
        .map(|p| {
            let path = p.display().to_string();
            let unreadable = |e: std::io::Error| DirError::Unreadable {
                path: path.clone(),
                reason: e.to_string(),
            };
            let len = std::fs::metadata(&p).map_err(unreadable)?.len();
            if len > yaml_guard::MAX_BYTES as u64 {
                return Err(DirError::TooLarge {
                    path,
                    limit: yaml_guard::MAX_BYTES,
                });
            }
            let text = std::fs::read_to_string(&p).map_err(unreadable)?;
            Ok(SpecFile { path, text })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DirError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DirError::Unreadable {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| DirError::Unreadable {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        } else {
            return Err(DirError::NotYaml(path.display().to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_specs_skips_hidden_and_names_what_it_refuses() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("team-a")).unwrap();
        std::fs::create_dir_all(d.path().join(".git")).unwrap();
        std::fs::write(d.path().join(".git/HEAD"), "ref").unwrap();
        std::fs::write(d.path().join("team-a/b.yaml"), "name: b").unwrap();
        std::fs::write(d.path().join("a.yml"), "name: a").unwrap();
        let files = read(d.path()).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(names, ["name: a", "name: b"]);
        std::fs::write(d.path().join("README.md"), "#").unwrap();
        let e = read(d.path()).unwrap_err().to_string();
        assert!(e.contains("README.md: not a spec"), "{e}");
        let e = read(&d.path().join("nope")).unwrap_err().to_string();
        assert!(e.ends_with("nope: does not exist"), "{e}");
    }
}
