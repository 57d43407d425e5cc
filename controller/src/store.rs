//! State in an embedded SQLite file: the rollouts, the config revision, and
//! the audit log. Every transition is one transaction that writes the new
//! state and its audit record together, so a SIGKILL at any moment leaves
//! either both or neither.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::audit::{AuditRecord, GENESIS};
use crate::engine::RolloutState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database holds unreadable state for {name}: {source}")]
    Corrupt {
        name: String,
        source: serde_json::Error,
    },
}

pub struct Store {
    conn: Mutex<Connection>,
}

/// What an audit record says, before it is chained.
pub struct Entry<'a> {
    pub actor: &'a str,
    pub rollout: &'a str,
    pub action: &'a str,
    pub from: String,
    pub to: String,
    pub reason: &'a str,
    pub evidence: serde_json::Value,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
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
                 prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS audit_rollout ON audit (rollout, seq);",
        )?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn revision(&self) -> Result<u64, StoreError> {
        let rev: Option<i64> = self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(rev.unwrap_or(0).max(0) as u64)
    }

    pub fn rollouts(&self) -> Result<Vec<RolloutState>, StoreError> {
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
    pub fn transition(
        &self,
        name: &str,
        state: Option<&mut RolloutState>,
        bump: bool,
        entry: Entry<'_>,
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
        match state {
            Some(state) => {
                if bump {
                    state.revision = revision as u64;
                }
                let json =
                    serde_json::to_string(&*state).map_err(|source| StoreError::Corrupt {
                        name: name.to_owned(),
                        source,
                    })?;
                tx.execute(
                    "INSERT INTO rollouts (name, state) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET state = excluded.state",
                    params![name, json],
                )?;
            }
            None => {
                tx.execute("DELETE FROM rollouts WHERE name = ?1", params![name])?;
            }
        }
        append_audit(&tx, entry, now_ms)?;
        tx.commit()?;
        Ok(revision as u64)
    }

    /// Saves `state` without an audit record: the reason and evidence of a
    /// hold change every interval and are not decisions.
    pub fn save_quietly(&self, state: &RolloutState) -> Result<(), StoreError> {
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

    pub fn audit(&self, rollout: Option<&str>) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.conn();
        let sql = "SELECT seq, at_ms, actor, rollout, action, from_state, to_state, reason, evidence, prev_hash, hash
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
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn append_audit(
    tx: &rusqlite::Transaction<'_>,
    e: Entry<'_>,
    now_ms: u64,
) -> Result<(), StoreError> {
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (prev_seq, prev_hash) = last.unwrap_or((0, GENESIS.to_owned()));
    let mut rec = AuditRecord {
        seq: prev_seq + 1,
        at_ms: now_ms as i64,
        actor: e.actor.to_owned(),
        rollout: e.rollout.to_owned(),
        action: e.action.to_owned(),
        from: e.from,
        to: e.to,
        reason: e.reason.to_owned(),
        evidence: e.evidence,
        prev_hash,
        hash: String::new(),
    };
    rec.hash = rec.compute_hash();
    tx.execute(
        "INSERT INTO audit (seq, at_ms, actor, rollout, action, from_state, to_state, reason, evidence, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
            rec.hash
        ],
    )?;
    Ok(())
}
