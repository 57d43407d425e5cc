//! The audit record: who decided what, when, why, on which numbers. Each
//! record carries the SHA-256 of the one before, so changing, removing or
//! reordering any record breaks the chain from there on.

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
            };
            r.hash = r.compute_hash();
            out.push(r);
        }
        out
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
