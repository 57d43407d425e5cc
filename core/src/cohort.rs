//! The cohort function: which of 10 000 buckets an identity falls into.
//!
//! `bucket = fmix64(fnv1a64(salt ++ ":" ++ identity)) mod 10000`: FNV-1a over the
//! raw bytes, then MurmurHash3's 64-bit finalizer. FNV alone is fast but its low
//! bits mix poorly for near-identical inputs such as `user-1`, `user-2`; the
//! finalizer fixes that, and both are trivial to reimplement in any language,
//! which matters because every proxy and every tool must agree on the answer.
//! Test vectors live in `core/testdata/cohort-vectors.json`.

use core::hash::Hasher;
use fnv::FnvHasher;

/// Buckets per rollout: weights are basis points.
pub const BUCKETS: u16 = 10_000;

/// MurmurHash3's 64-bit finalizer.
pub const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// FNV-1a 64-bit over `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = FnvHasher::default();
    h.write(bytes);
    h.finish()
}

/// A rollout's salt, pre-hashed: the FNV state after `salt ++ ":"` is kept so
/// a request hashes only its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cohort {
    prefix_state: u64,
}

impl Cohort {
    pub fn new(salt: &str) -> Self {
        let mut h = FnvHasher::default();
        h.write(salt.as_bytes());
        h.write(b":");
        Cohort {
            prefix_state: h.finish(),
        }
    }

    /// The bucket, in `0..BUCKETS`, of `identity` under this salt.
    pub fn bucket(&self, identity: &[u8]) -> u16 {
        let mut h = FnvHasher::with_key(self.prefix_state);
        h.write(identity);
        (fmix64(h.finish()) % u64::from(BUCKETS)) as u16
    }
}

/// The bucket of `identity` under `salt`; see the module docs.
pub fn bucket(salt: &str, identity: &[u8]) -> u16 {
    Cohort::new(salt).bucket(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_values() {
        // Published FNV-1a 64 values.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fmix64_matches_reference_values() {
        assert_eq!(fmix64(0), 0);
        // From MurmurHash3's reference finalizer.
        assert_eq!(fmix64(1), 0xb456_bcfc_34c2_cb2c);
    }

    #[test]
    fn prehashed_salt_equals_concatenation() {
        let c = Cohort::new("checkout-7");
        for id in ["", "user-1", "alice", "ü"] {
            let mut whole = alloc::vec::Vec::new();
            whole.extend_from_slice(b"checkout-7:");
            whole.extend_from_slice(id.as_bytes());
            let expected = (fmix64(fnv1a64(&whole)) % 10_000) as u16;
            assert_eq!(c.bucket(id.as_bytes()), expected);
        }
    }
}
