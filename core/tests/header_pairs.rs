//! The header map as one proxy-wasm call hands it over: read in place,
//! never panicking on a map that does not parse, and giving the flags and
//! the rollout the same answers as single-header reads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::HashMap;

use dimmer_core::flags::{header_value, HeaderContext};
use dimmer_core::{parse_config_doc, CompiledFlags, HeaderPairs, Request};
use proptest::prelude::*;
use serde_json::json;

/// The ABI's serialization: a count, each pair's two lengths, then each
/// key and value followed by a NUL (proxy-wasm's spec, as Envoy writes it).
fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut b = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        b.extend((k.len() as u32).to_le_bytes());
        b.extend((v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        b.extend(*k);
        b.push(0);
        b.extend(*v);
        b.push(0);
    }
    b
}

struct Map(HashMap<String, Vec<u8>>);

impl Request for Map {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.0.get(name).cloned()
    }
}

#[test]
fn a_name_gets_its_first_value_whatever_its_case() {
    let h = HeaderPairs::new(serialize(&[
        (b":authority", b"app.example"),
        (b"cookie", b"a=1"),
        (b"x-user-id", b"u-1"),
        (b"cookie", b"b=2"),
        (b"x-empty", b""),
    ]));
    assert_eq!(h.get("x-user-id"), Some(&b"u-1"[..]));
    assert_eq!(h.get("X-User-Id"), Some(&b"u-1"[..]));
    assert_eq!(
        h.get("cookie"),
        Some(&b"a=1"[..]),
        "Envoy's single read gives the first"
    );
    assert_eq!(h.get("x-empty"), Some(&b""[..]));
    assert_eq!(h.get("x-user"), None);
    assert_eq!(h.get(":authority"), Some(&b"app.example"[..]));
}

#[test]
fn a_map_that_does_not_parse_reads_as_the_pairs_before_the_fault() {
    let whole = serialize(&[(b"x-a", b"1"), (b"x-b", b"22")]);
    // Cut in the second value: the first pair still reads, the second not.
    let cut = HeaderPairs::new(whole[..whole.len() - 2].to_vec());
    assert_eq!(cut.get("x-a"), Some(&b"1"[..]));
    assert_eq!(cut.get("x-b"), None);
    // A count the buffer cannot hold: nothing, and nothing allocated for it.
    let mut huge = whole.clone();
    huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(HeaderPairs::new(huge).get("x-a"), None);
    assert_eq!(HeaderPairs::new(Vec::new()).get("x-a"), None);
    assert_eq!(HeaderPairs::new(vec![1, 0]).get("x-a"), None);
}

#[test]
fn a_map_the_host_did_not_give_may_have_any_header() {
    // The filter removes the client's route and flags headers whenever
    // they may be there: from an unread map, always.
    let unread = HeaderPairs::unread(Vec::new());
    assert_eq!(unread.get("x-dimmer-version"), None);
    assert!(unread.may_have("x-dimmer-version"));
    let read = HeaderPairs::new(serialize(&[(b"x-dimmer-version", b"v2")]));
    assert!(read.may_have("x-dimmer-version"));
    assert!(!read.may_have("x-dimmer-flags"));
    assert!(!HeaderPairs::new(Vec::new()).may_have("x-dimmer-flags"));
}

fn flags_and_rollout() -> (CompiledFlags, dimmer_core::Compiled) {
    let flag = |i: u32| {
        let mut f = json!({
            "key": format!("flag-{i}"),
            "identity": [{"header": "x-user-id"}, {"cookie": "sid"}],
            "default_variant": "off",
            "variants": [{"name": "off", "weight": 10_000 - 900 * i}, {"name": "on", "weight": 900 * i}],
        });
        if i.is_multiple_of(2) {
            f["overrides"] = json!([{"header": "x-beta", "values": ["yes"], "variant": "on"}]);
        }
        f
    };
    let doc = json!({
        "revision": 1,
        "rollouts": [{
            "name": "checkout", "salt": "s", "stable": "v1",
            "identity": [{"header": "x-user-id"}, {"cookie": "sid"}],
            "versions": [{"name": "v1", "weight": 6000}, {"name": "v2", "weight": 4000}],
            "overrides": [{"header": "x-tenant", "values": ["t"], "version": "v2"}],
        }],
        "flags": (1..=10).map(flag).collect::<Vec<_>>(),
    });
    let doc = parse_config_doc(&serde_json::to_vec(&doc).unwrap()).unwrap();
    let compiled = dimmer_core::Compiled::new(0, "x-dimmer-version", &doc.rollouts);
    (CompiledFlags::new(&doc.flags), compiled)
}

proptest! {
    /// Any bytes at all: no panic, and a value found lies inside the map.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let h = HeaderPairs::new(bytes.clone());
        for name in ["x-user-id", "", "a", "cookie"] {
            if let Some(v) = h.get(name) {
                prop_assert!(v.len() <= bytes.len());
            }
        }
    }

    /// The filter reads the map in one call where it read header by header
    /// before: the flags' header and the rollout's route must not change.
    #[test]
    fn one_map_read_answers_as_single_reads_do(
        user in proptest::option::of("[a-z0-9-]{0,12}"),
        cookie in proptest::option::of("[a-z]{1,3}=[a-z0-9]{0,6}(; sid=[a-z0-9]{0,8})?"),
        beta in proptest::option::of(prop_oneof!["yes", "no"]),
        tenant in proptest::option::of(prop_oneof!["t", "u"]),
        upper in any::<bool>(),
    ) {
        let (flags, rollouts) = flags_and_rollout();
        let mut pairs: Vec<(String, String)> = vec![(":path".into(), "/".into())];
        for (k, v) in [("x-user-id", &user), ("cookie", &cookie), ("x-beta", &beta), ("x-tenant", &tenant)] {
            if let Some(v) = v {
                pairs.push((k.into(), v.clone()));
            }
        }
        let map = Map(pairs.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect());
        // Envoy lowercases keys; a host that did not is read alike.
        let keyed: Vec<(Vec<u8>, Vec<u8>)> = pairs
            .iter()
            .map(|(k, v)| (if upper { k.to_ascii_uppercase() } else { k.clone() }.into_bytes(), v.clone().into_bytes()))
            .collect();
        let refs: Vec<(&[u8], &[u8])> = keyed.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let one = HeaderPairs::new(serialize(&refs));

        let by_map = flags.evaluate(&HeaderContext::new(&flags, &map), &mut || 3);
        let by_pairs = flags.evaluate(&HeaderContext::new(&flags, &one), &mut || 3);
        prop_assert_eq!(&by_map, &by_pairs);
        prop_assert_eq!(header_value(&flags, &by_map), header_value(&flags, &by_pairs));
        let d_map = dimmer_core::decide(&rollouts, &map, &mut || 3);
        let d_pairs = dimmer_core::decide(&rollouts, &one, &mut || 3);
        prop_assert_eq!(format!("{d_map:?}"), format!("{d_pairs:?}"));
    }
}
