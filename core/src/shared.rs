//! What the filter's VMs share through Envoy's shared data: the poller lease
//! and the last good config. Kept pure so the election rules are tested here.
//!
//! Every VM of an Envoy (main thread and each worker) ticks; only the holder
//! of the lease polls the controller, so an Envoy polls once per interval
//! however many workers it runs.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub holder: u64,
    pub expires_ms: u64,
}

impl Lease {
    pub fn encode(&self) -> String {
        format!("{:016x} {}", self.holder, self.expires_ms)
    }

    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let text = core::str::from_utf8(bytes).ok()?;
        let (holder, expires) = text.split_once(' ')?;
        Some(Lease {
            holder: u64::from_str_radix(holder, 16).ok()?,
            expires_ms: expires.parse().ok()?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStep {
    /// This VM held the lease when it last looked: renew it (with CAS) and poll.
    Renew,
    /// Nobody holds a live lease: try to take it; poll only once a later tick
    /// reads the lease back as ours, so two VMs racing never both poll.
    Take,
    /// Another VM holds it.
    Wait,
}

pub fn lease_step(current: Option<Lease>, me: u64, now_ms: u64) -> LeaseStep {
    match current {
        Some(l) if l.holder == me => LeaseStep::Renew,
        Some(l) if l.expires_ms > now_ms => LeaseStep::Wait,
        _ => LeaseStep::Take,
    }
}

/// The config record in shared data: the controller's ETag, a newline, and the
/// validated `GET /v1/config` body.
pub fn encode_config_record(etag: &str, body: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(etag.len() + 1 + body.len());
    record.extend_from_slice(etag.as_bytes());
    record.push(b'\n');
    record.extend_from_slice(body);
    record
}

/// `(etag, body)`; `None` if the record has no newline.
pub fn decode_config_record(record: &[u8]) -> Option<(&[u8], &[u8])> {
    let nl = record.iter().position(|&b| b == b'\n')?;
    Some((&record[..nl], &record[nl + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_roundtrip_and_rules() {
        let l = Lease {
            holder: 0xdead_beef,
            expires_ms: 1_700_000_000_123,
        };
        assert_eq!(Lease::decode(l.encode().as_bytes()), Some(l));
        assert_eq!(Lease::decode(b"garbage"), None);
        assert_eq!(Lease::decode(b"zz 12"), None);
        assert_eq!(lease_step(None, 1, 10), LeaseStep::Take);
        assert_eq!(lease_step(Some(l), 0xdead_beef, 0), LeaseStep::Renew);
        assert_eq!(lease_step(Some(l), 2, 0), LeaseStep::Wait);
        assert_eq!(lease_step(Some(l), 2, l.expires_ms + 1), LeaseStep::Take);
    }

    #[test]
    fn config_record_roundtrip() {
        let r = encode_config_record("\"rev-3\"", b"{\"revision\":3}");
        assert_eq!(
            decode_config_record(&r),
            Some((&b"\"rev-3\""[..], &b"{\"revision\":3}"[..]))
        );
        assert_eq!(decode_config_record(b"no newline"), None);
    }
}
