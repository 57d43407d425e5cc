//! The audit record: who decided what, when, why, on which numbers. Each
//! record carries the SHA-256 of the one before, so changing, removing or
//! reordering any record breaks the chain from there on.
//!
//! A hash chain alone cannot tell a shortened chain from a short one, nor a
//! rewritten one from an honest one: whoever can write the database can
//! re-hash. So each record also carries a keyed checkpoint (HMAC-SHA-256
//! over its sequence number and hash, the key kept outside the database),
//! and the head of the chain is written, with its checkpoint, to a file
//! beside the database and exposed (status, webhooks, `/metrics`) to be
//! pinned elsewhere.

use std::path::Path;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at_ms: i64,
    /// `controller` for automatic decisions, the token's name for people.
    pub actor: String,
    pub rollout: String,
    pub action: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    pub evidence: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
    /// The keyed checkpoint over `seq` and `hash`.
    #[serde(default)]
    pub mac: String,
}

/// The hash chain's first link.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditRecord {
    /// SHA-256 over the previous hash and every field but `hash` itself.
    pub fn compute_hash(&self) -> String {
        let body = serde_json::json!({
            "seq": self.seq,
            "at_ms": self.at_ms,
            "actor": self.actor,
            "rollout": self.rollout,
            "action": self.action,
            "from": self.from,
            "to": self.to,
            "reason": self.reason,
            "evidence": self.evidence,
        });
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(b"\n");
        h.update(body.to_string().as_bytes());
        hex::encode(h.finalize())
    }
}

/// The keys of the checkpoints, kept outside the database: 32 random bytes
/// each, one per line of the key file (64 hex digits). The first signs new
/// records; the others, older ones a rotation kept, only verify the records
/// they signed. Each checkpoint names its key (`kid:mac`), so a chain says
/// which key signed what; a checkpoint written before rotation existed has
/// no name, and any key of the ring may have signed it.
#[derive(Clone)]
pub struct AuditKey(Vec<[u8; 32]>);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("audit key {path}: {reason}")]
    Bad { path: String, reason: String },
}

/// A key's public name: 8 hex digits of a hash of it.
fn kid_of(key: &[u8; 32]) -> String {
    use sha2::Digest;
    let d = Sha256::digest([b"dimmer-audit-kid/".as_slice(), key.as_slice()].concat());
    hex::encode(&d[..4])
}

fn hmac_of(key: &[u8; 32], seq: i64, hash: &str) -> Option<Hmac<Sha256>> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).ok()?;
    m.update(format!("dimmer-audit/{seq}/{hash}").as_bytes());
    Some(m)
}

impl AuditKey {
    pub fn from_bytes(b: [u8; 32]) -> AuditKey {
        AuditKey(vec![b])
    }

    /// Reads the key (64 hex digits) from `path`, creating it (mode 0600)
    /// if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<AuditKey, KeyError> {
        let bad = |reason: String| KeyError::Bad {
            path: path.display().to_string(),
            reason,
        };
        if !path.exists() {
            let key: [u8; 32] = rand::random();
            write_private(path, hex::encode(key).as_bytes()).map_err(|e| bad(e.to_string()))?;
            return Ok(AuditKey(vec![key]));
        }
        AuditKey::load(path)
    }

    /// Reads the key file: one key per line (64 hex digits), the signing
    /// key first; blank lines and `#` comments are skipped.
    pub fn load(path: &Path) -> Result<AuditKey, KeyError> {
        let bad = |reason: String| KeyError::Bad {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes =
                hex::decode(line).map_err(|e| bad(format!("line {}: not hex: {e}", i + 1)))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| bad(format!("line {}: must be 64 hex digits (32 bytes)", i + 1)))?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(bad("holds no key (64 hex digits)".into()));
        }
        Ok(AuditKey(keys))
    }

    /// A new signing key in front of the ring, the older ones kept to
    /// verify what they signed; the file's text.
    pub fn rotated(&self) -> (AuditKey, String) {
        let mut keys = vec![rand::random::<[u8; 32]>()];
        keys.extend(self.0.iter().copied());
        let text = keys.iter().map(hex::encode).collect::<Vec<_>>().join("\n") + "\n";
        (AuditKey(keys), text)
    }

    /// The signing key's name.
    pub fn kid(&self) -> String {
        self.0.first().map_or_else(String::new, kid_of)
    }

    /// HMAC-SHA-256 over a record's sequence number and hash, named by the
    /// signing key: `kid:mac`.
    pub fn mac(&self, seq: i64, hash: &str) -> String {
        let Some(m) = self.0.first().and_then(|k| hmac_of(k, seq, hash)) else {
            return String::new();
        };
        format!("{}:{}", self.kid(), hex::encode(m.finalize().into_bytes()))
    }

    /// A secret for another use than the chain, derived from the signing
    /// key (HMAC of a label): the fleet's controllers share the key, so
    /// they share it too, and knowing it tells nothing of the key.
    pub fn derive(&self, label: &str) -> String {
        let Some(Ok(mut m)) = self.0.first().map(|k| Hmac::<Sha256>::new_from_slice(k)) else {
            return String::new();
        };
        m.update(format!("dimmer-derived/{label}").as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// Whether the chain whose head is `head` was checkpointed with a key
    /// of this ring: every controller of a fleet shares the keys, so one
    /// that cannot check the head must not append (its records would fail
    /// every other controller's verification). An empty chain takes any key.
    pub fn signs(&self, head: &Head) -> bool {
        head.seq == 0 || self.checks(head.seq, &head.hash, &head.mac)
    }

    fn checks(&self, seq: i64, hash: &str, mac: &str) -> bool {
        self.signer(seq, hash, mac).is_some()
    }

    /// Which key of the ring signed a checkpoint, by its name; `None` when
    /// none did.
    pub fn signer(&self, seq: i64, hash: &str, mac: &str) -> Option<String> {
        let (named, hex_mac) = match mac.split_once(':') {
            Some((kid, m)) => (Some(kid), m),
            None => (None, mac),
        };
        let given = hex::decode(hex_mac).ok()?;
        self.0
            .iter()
            .filter(|k| named.is_none_or(|kid| kid_of(k) == kid))
            .find(|k| hmac_of(k, seq, hash).is_some_and(|m| m.verify_slice(&given).is_ok()))
            .map(kid_of)
    }
}

/// Which key signed which records: `(kid, first seq, last seq)` in order.
pub fn signers(records: &[AuditRecord], key: &AuditKey) -> Vec<(String, i64, i64)> {
    let mut out: Vec<(String, i64, i64)> = Vec::new();
    for r in records {
        let kid = key
            .signer(r.seq, &r.hash, &r.mac)
            .unwrap_or_else(|| "?".into());
        match out.last_mut() {
            Some(last) if last.0 == kid => last.2 = r.seq,
            _ => out.push((kid, r.seq, r.seq)),
        }
    }
    out
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it),
/// readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The chain's head: its last record's sequence number and hash, with their
/// checkpoint. Pin it elsewhere to detect a chain cut back and re-grown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
    #[serde(default)]
    pub mac: String,
}

impl Head {
    pub fn of(records: &[AuditRecord]) -> Head {
        records.last().map_or(
            Head {
                seq: 0,
                hash: GENESIS.to_owned(),
                mac: String::new(),
            },
            |r| Head {
                seq: r.seq,
                hash: r.hash.clone(),
                mac: r.mac.clone(),
            },
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error(
        "audit record {seq}: its hash does not match its content (changed after it was written)"
    )]
    Altered { seq: i64 },
    #[error(
        "audit record {seq}: it does not follow record {prev} (a record was removed or reordered)"
    )]
    Broken { seq: i64, prev: i64 },
    #[error("audit record {seq}: its keyed checkpoint does not match (rewritten by someone without the key)")]
    Forged { seq: i64 },
    #[error("audit record {seq}: signed by key {kid}, which is not in this key file (a newer key? `dimmer audit rotate-key` keeps the older ones in the file)")]
    UnknownKey { seq: i64, kid: String },
    #[error("audit records {from}–{to} are missing: the head checkpoint says the chain reached record {to} (hash {hash}), the log ends at record {last}")]
    Missing {
        from: i64,
        to: i64,
        last: i64,
        hash: String,
    },
    #[error("audit record {seq}: its hash differs from the head checkpoint's ({hash}): the chain was rewritten")]
    HeadMismatch { seq: i64, hash: String },
    #[error("the head checkpoint is not signed by this key: it was replaced")]
    HeadForged,
    #[error("the head checkpoint file is missing but the log has {records} records")]
    NoHead { records: usize },
}

/// Checks the chain, every record's keyed checkpoint, and the log against
/// the head checkpoint kept beside it. `head` is `None` when the file is
/// missing. `Ok(n)`: the number of records verified.
pub fn verify_keyed(
    records: &[AuditRecord],
    key: &AuditKey,
    head: Option<&Head>,
) -> Result<usize, ChainError> {
    let n = verify(records)?;
    for r in records {
        if !key.checks(r.seq, &r.hash, &r.mac) {
            return Err(match r.mac.split_once(':') {
                Some((kid, _)) if !key.0.iter().any(|k| kid_of(k) == kid) => {
                    ChainError::UnknownKey {
                        seq: r.seq,
                        kid: kid.to_owned(),
                    }
                }
                _ => ChainError::Forged { seq: r.seq },
            });
        }
    }
    let last = records.last().map_or(0, |r| r.seq);
    let Some(head) = head else {
        return if records.is_empty() {
            Ok(0)
        } else {
            Err(ChainError::NoHead { records: n })
        };
    };
    if head.seq > 0 && !key.checks(head.seq, &head.hash, &head.mac) {
        return Err(ChainError::HeadForged);
    }
    if head.seq > last {
        return Err(ChainError::Missing {
            from: last + 1,
            to: head.seq,
            last,
            hash: head.hash.clone(),
        });
    }
    // The head file may lag the log by the record being written when the
    // process died; the record it names must still be the same.
    if let Some(r) = records.iter().find(|r| r.seq == head.seq) {
        if r.hash != head.hash {
            return Err(ChainError::HeadMismatch {
                seq: r.seq,
                hash: head.hash.clone(),
            });
        }
    }
    Ok(n)
}

/// Checks the whole chain; `Ok(n)` is the number of records verified.
pub fn verify(records: &[AuditRecord]) -> Result<usize, ChainError> {
    let mut prev_hash = GENESIS.to_owned();
    let mut prev_seq = 0;
    for r in records {
        if r.prev_hash != prev_hash || r.seq != prev_seq + 1 {
            return Err(ChainError::Broken {
                seq: r.seq,
                prev: prev_seq,
            });
        }
        if r.compute_hash() != r.hash {
            return Err(ChainError::Altered { seq: r.seq });
        }
        prev_hash = r.hash.clone();
        prev_seq = r.seq;
    }
    Ok(records.len())
}

/// What an audit record says, before it is chained.
#[derive(Clone)]
pub struct Entry<'a> {
    pub actor: &'a str,
    pub rollout: &'a str,
    pub action: &'a str,
    pub from: String,
    pub to: String,
    pub reason: &'a str,
    pub evidence: serde_json::Value,
}

/// The next audit record after `(prev_seq, prev_hash)`: chained and keyed.
pub fn chain_next(
    prev_seq: i64,
    prev_hash: String,
    e: Entry<'_>,
    now_ms: u64,
    key: &AuditKey,
) -> AuditRecord {
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
        mac: String::new(),
    };
    rec.hash = rec.compute_hash();
    rec.mac = key.mac(rec.seq, &rec.hash);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let mut r = AuditRecord {
                seq,
                at_ms: 1000 * seq,
                actor: "controller".into(),
                rollout: "checkout".into(),
                action: "step".into(),
                from: "1%".into(),
                to: "10%".into(),
                reason: "analysis passed".into(),
                evidence: serde_json::json!({"canary_requests": seq}),
                prev_hash: out.last().map_or(GENESIS.to_owned(), |p| p.hash.clone()),
                hash: String::new(),
                mac: String::new(),
            };
            r.hash = r.compute_hash();
            r.mac = key().mac(r.seq, &r.hash);
            out.push(r);
        }
        out
    }

    fn key() -> AuditKey {
        AuditKey::from_bytes([7; 32])
    }

    #[test]
    fn removing_the_newest_records_is_named() {
        let c = chain(5);
        let head = Head::of(&c);
        assert_eq!(verify_keyed(&c, &key(), Some(&head)), Ok(5));
        // Plain chain checking cannot see it.
        assert_eq!(verify(&c[..3]), Ok(3));
        let err = verify_keyed(&c[..3], &key(), Some(&head)).unwrap_err();
        assert!(
            matches!(
                err,
                ChainError::Missing {
                    from: 4,
                    to: 5,
                    last: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("records 4–5 are missing"), "{err}");
        assert_eq!(
            verify_keyed(&c, &key(), None),
            Err(ChainError::NoHead { records: 5 })
        );
    }

    #[test]
    fn a_rewritten_and_rehashed_chain_is_caught_without_the_key() {
        let mut c = chain(5);
        let head = Head::of(&c);
        c[2].reason = "nothing to see".into();
        for i in 2..5 {
            if i > 2 {
                c[i].prev_hash = c[i - 1].hash.clone();
            }
            c[i].hash = c[i].compute_hash();
        }
        assert_eq!(verify(&c), Ok(5), "the bare chain is fooled");
        assert_eq!(
            verify_keyed(&c, &key(), Some(&head)),
            Err(ChainError::Forged { seq: 3 })
        );
        // With checkpoints made by another key: caught too, naming it...
        let other = AuditKey::from_bytes([8; 32]);
        for r in &mut c {
            r.mac = other.mac(r.seq, &r.hash);
        }
        assert_eq!(
            verify_keyed(&c, &key(), Some(&head)),
            Err(ChainError::UnknownKey {
                seq: 1,
                kid: other.kid()
            })
        );
        // ...or passed off under this key's name.
        for r in &mut c {
            let (_, m) = r.mac.split_once(':').unwrap();
            r.mac = format!("{}:{m}", key().kid());
        }
        assert_eq!(
            verify_keyed(&c, &key(), Some(&head)),
            Err(ChainError::Forged { seq: 1 })
        );
    }

    #[test]
    fn a_rotated_ring_signs_anew_and_still_verifies_the_old_records() {
        let old = key();
        let mut c = chain(3);
        // A checkpoint from before keys had names verifies too.
        c[0].mac = c[0].mac.split_once(':').unwrap().1.to_owned();
        let (ring, text) = old.rotated();
        assert_eq!(text.lines().count(), 2);
        assert_ne!(ring.kid(), old.kid());
        for seq in 4..=5 {
            let entry = Entry {
                actor: "a",
                rollout: "r",
                action: "apply",
                from: "x".into(),
                to: "y".into(),
                reason: "z",
                evidence: serde_json::Value::Null,
            };
            let prev = c.last().unwrap().clone();
            let next = chain_next(prev.seq, prev.hash.clone(), entry, seq as u64, &ring);
            c.push(next);
        }
        let head = Head::of(&c);
        assert_eq!(verify_keyed(&c, &ring, Some(&head)), Ok(5));
        assert!(ring.signs(&head));
        assert_eq!(
            signers(&c, &ring),
            vec![(old.kid(), 1, 3), (ring.kid(), 4, 5)]
        );
        // The old key alone cannot vouch for the new records, and says why.
        assert_eq!(
            verify_keyed(&c, &old, Some(&head)),
            Err(ChainError::UnknownKey {
                seq: 4,
                kid: ring.kid()
            })
        );
    }

    #[test]
    fn a_head_from_another_key_is_refused() {
        let c = chain(3);
        let mut head = Head::of(&c);
        head.mac = AuditKey::from_bytes([9; 32]).mac(head.seq, &head.hash);
        assert_eq!(
            verify_keyed(&c, &key(), Some(&head)),
            Err(ChainError::HeadForged)
        );
    }

    #[test]
    fn a_clean_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
    }

    #[test]
    fn evidence_with_floats_survives_a_trip_through_text() {
        // The store keeps evidence as JSON text; the hash must hold after reading it back.
        let mut c = chain(1);
        c[0].evidence =
            serde_json::json!({"p99": 0.6873913043478237, "rate": 1.0 / 3.0, "n": 4817.0});
        c[0].hash = c[0].compute_hash();
        let text = c[0].evidence.to_string();
        c[0].evidence = serde_json::from_str(&text).unwrap();
        assert_eq!(verify(&c), Ok(1));
    }

    #[test]
    fn any_change_is_caught() {
        let mut c = chain(5);
        c[2].reason = "nothing to see".into();
        assert_eq!(verify(&c), Err(ChainError::Altered { seq: 3 }));
        let mut c = chain(5);
        c[1].evidence = serde_json::json!({"canary_requests": 0});
        assert_eq!(verify(&c), Err(ChainError::Altered { seq: 2 }));
        let mut c = chain(5);
        c.remove(3);
        assert_eq!(verify(&c), Err(ChainError::Broken { seq: 5, prev: 3 }));
    }
}
