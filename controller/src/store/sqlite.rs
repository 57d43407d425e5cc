//! The state in one SQLite file (the default): rollouts, revision and the
//! audit log in one database, each transition one transaction, and the
//! audit head's checkpoint in a file beside it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dimmer_decide::engine::RolloutState;
use rusqlite::{params, Connection, OptionalExtension};

use super::audit::{self, chain_next, AuditKey, AuditRecord, ChainError, Entry, Head, GENESIS};
use super::backend::{Change, StateStore, StoreError};

pub struct SqliteStore {
    conn: Mutex<Connection>,
    key: AuditKey,
    head_path: PathBuf,
}

/// Where the head checkpoint of the audit log in `db` is kept.
pub fn head_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".head");
    PathBuf::from(p)
}

/// Where the audit key of `db` is kept unless told otherwise.
pub fn default_key_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".key");
    PathBuf::from(p)
}

impl SqliteStore {
    pub fn open(path: &Path, key: AuditKey) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS rollouts (name TEXT PRIMARY KEY, state TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS audit (
                 seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, actor TEXT NOT NULL,
                 rollout TEXT NOT NULL, action TEXT NOT NULL, from_state TEXT NOT NULL,
                 to_state TEXT NOT NULL, reason TEXT NOT NULL, evidence TEXT NOT NULL,
                 prev_hash TEXT NOT NULL, hash TEXT NOT NULL, mac TEXT NOT NULL DEFAULT '');
             CREATE INDEX IF NOT EXISTS audit_rollout ON audit (rollout, seq);",
        )?;
        // Logs written before keyed checkpoints lack the column; their
        // records then fail verification as unkeyed, which is the truth.
        let has_mac: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('audit') WHERE name = 'mac'")?
            .exists([])?;
        if !has_mac {
            conn.execute_batch("ALTER TABLE audit ADD COLUMN mac TEXT NOT NULL DEFAULT ''")?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            key,
            head_path: head_path(path),
        })
    }

    fn write_head(&self, head: &Head) -> Result<(), StoreError> {
        let bad = |reason: String| StoreError::HeadFile {
            path: self.head_path.display().to_string(),
            reason,
        };
        let json = serde_json::to_vec(head).map_err(|e| bad(e.to_string()))?;
        audit::write_private(&self.head_path, &json).map_err(|e| bad(e.to_string()))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateStore for SqliteStore {
    fn audit_key(&self) -> &AuditKey {
        &self.key
    }

    /// The audit log's head now, from the log itself.
    fn head(&self) -> Result<Head, StoreError> {
        let last: Option<(i64, String, String)> = self
            .conn()
            .query_row(
                "SELECT seq, hash, mac FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(last.map_or(
            Head {
                seq: 0,
                hash: GENESIS.to_owned(),
                mac: String::new(),
            },
            |(seq, hash, mac)| Head { seq, hash, mac },
        ))
    }

    /// The head checkpoint file, `None` if it does not exist.
    fn head_file(&self) -> Result<Option<Head>, StoreError> {
        read_head(&self.head_path)
    }

    /// Verifies the whole log: the chain, each record's keyed checkpoint,
    /// and the head checkpoint file.
    fn verify(&self) -> Result<Result<usize, ChainError>, StoreError> {
        let records = self.audit(None)?;
        let head = self.head_file()?;
        Ok(audit::verify_keyed(&records, &self.key, head.as_ref()))
    }

    fn revision(&self) -> Result<u64, StoreError> {
        let rev: Option<i64> = self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(rev.unwrap_or(0).max(0) as u64)
    }

    fn rollouts(&self) -> Result<Vec<RolloutState>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, state FROM rollouts ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, json) = row?;
            out.push(
                serde_json::from_str(&json)
                    .map_err(|source| StoreError::Corrupt { name, source })?,
            );
        }
        Ok(out)
    }

    /// Writes `state` (or deletes the rollout, if `None`) with its audit
    /// record, bumping the config revision if `bump`. Returns the revision.
    fn transition_many(
        &self,
        changes: &mut [Change<'_>],
        bump: bool,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut revision: i64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0);
        if bump {
            revision += 1;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('revision', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![revision],
            )?;
        }
        let mut head = None;
        for c in changes.iter_mut() {
            match &mut c.state {
                Some(state) => {
                    if bump {
                        state.revision = revision as u64;
                        state.revision_ms = now_ms;
                    }
                    let json =
                        serde_json::to_string(&*state).map_err(|source| StoreError::Corrupt {
                            name: c.name.to_owned(),
                            source,
                        })?;
                    tx.execute(
                        "INSERT INTO rollouts (name, state) VALUES (?1, ?2)
                         ON CONFLICT(name) DO UPDATE SET state = excluded.state",
                        params![c.name, json],
                    )?;
                }
                None => {
                    tx.execute("DELETE FROM rollouts WHERE name = ?1", params![c.name])?;
                }
            }
            head = Some(append_audit(&tx, c.entry.clone(), now_ms, &self.key)?);
        }
        tx.commit()?;
        // After the commit: a crash between the two leaves the file one
        // record behind, which verification allows; never ahead.
        if let Some(head) = head {
            self.write_head(&head)?;
        }
        Ok(revision as u64)
    }

    /// Saves `state` without an audit record: the reason and evidence of a
    /// hold change every interval and are not decisions.
    fn save_quietly(&self, state: &RolloutState) -> Result<(), StoreError> {
        let json = serde_json::to_string(state).map_err(|source| StoreError::Corrupt {
            name: state.spec.name.clone(),
            source,
        })?;
        self.conn().execute(
            "UPDATE rollouts SET state = ?2 WHERE name = ?1",
            params![state.spec.name, json],
        )?;
        Ok(())
    }

    fn audit(&self, rollout: Option<&str>) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.conn();
        let sql = "SELECT seq, at_ms, actor, rollout, action, from_state, to_state, reason, evidence, prev_hash, hash, mac
                   FROM audit WHERE (?1 IS NULL OR rollout = ?1) ORDER BY seq";
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(params![rollout], |r| {
            let evidence: String = r.get(8)?;
            Ok(AuditRecord {
                seq: r.get(0)?,
                at_ms: r.get(1)?,
                actor: r.get(2)?,
                rollout: r.get(3)?,
                action: r.get(4)?,
                from: r.get(5)?,
                to: r.get(6)?,
                reason: r.get(7)?,
                evidence: serde_json::from_str(&evidence)
                    .unwrap_or(serde_json::Value::String(evidence)),
                prev_hash: r.get(9)?,
                hash: r.get(10)?,
                mac: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Reads a head checkpoint file; `None` if it does not exist.
pub fn read_head(path: &Path) -> Result<Option<Head>, StoreError> {
    let bad = |reason: String| StoreError::HeadFile {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| bad(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(bad(e.to_string())),
    }
}

fn append_audit(
    tx: &rusqlite::Transaction<'_>,
    e: Entry<'_>,
    now_ms: u64,
    key: &AuditKey,
) -> Result<Head, StoreError> {
    let last: Option<(i64, String, String)> = tx
        .query_row(
            "SELECT seq, hash, mac FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let (seq, hash, mac) = last.unwrap_or((0, GENESIS.to_owned(), String::new()));
    let prev = Head { seq, hash, mac };
    if !key.signs(&prev) {
        return Err(StoreError::KeyMismatch { seq });
    }
    let rec = chain_next(prev.seq, prev.hash, e, now_ms, key);
    tx.execute(
        "INSERT INTO audit (seq, at_ms, actor, rollout, action, from_state, to_state, reason, evidence, prev_hash, hash, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            rec.seq,
            rec.at_ms,
            rec.actor,
            rec.rollout,
            rec.action,
            rec.from,
            rec.to,
            rec.reason,
            rec.evidence.to_string(),
            rec.prev_hash,
            rec.hash,
            rec.mac
        ],
    )?;
    Ok(Head::of(std::slice::from_ref(&rec)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_log_from_before_checkpoints_opens_and_fails_verification_as_unkeyed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE audit (
                 seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, actor TEXT NOT NULL,
                 rollout TEXT NOT NULL, action TEXT NOT NULL, from_state TEXT NOT NULL,
                 to_state TEXT NOT NULL, reason TEXT NOT NULL, evidence TEXT NOT NULL,
                 prev_hash TEXT NOT NULL, hash TEXT NOT NULL);",
        )
        .unwrap();
        let mut rec = AuditRecord {
            seq: 1,
            at_ms: 1,
            actor: "a".into(),
            rollout: "r".into(),
            action: "apply".into(),
            from: "none".into(),
            to: "x".into(),
            reason: "r".into(),
            evidence: serde_json::json!({}),
            prev_hash: GENESIS.into(),
            hash: String::new(),
            mac: String::new(),
        };
        rec.hash = rec.compute_hash();
        conn.execute(
            "INSERT INTO audit VALUES (1, 1, 'a', 'r', 'apply', 'none', 'x', 'r', '{}', ?1, ?2)",
            params![rec.prev_hash, rec.hash],
        )
        .unwrap();
        drop(conn);
        let store = Store::open(&path, AuditKey::from_bytes([3; 32])).unwrap();
        assert_eq!(store.audit(None).unwrap().len(), 1);
        assert_eq!(store.verify().unwrap(), Err(ChainError::Forged { seq: 1 }));
    }
}
