//! Flags: validation of what binds them, and their evaluation against a
//! plain map of headers (the mock host).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::cell::Cell;
use std::collections::HashMap;

use dimmer_core::config::ConfigDoc;
use dimmer_core::flags::{header_value, HeaderContext};
use dimmer_core::validate::MAX_FLAGS;
use dimmer_core::{parse_config_doc, CompiledFlags, FlagReason, Request};
use proptest::prelude::*;
use serde_json::{json, Value};

#[derive(Default)]
struct Headers(HashMap<String, Vec<u8>>);

impl Request for Headers {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.0.get(name).cloned()
    }
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    Headers(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
    )
}

fn flag(key: &str, on_bp: u32) -> Value {
    json!({
        "key": key,
        "identity": [{"header": "x-user-id"}],
        "default_variant": "off",
        "variants": [{"name": "off", "weight": 10000 - on_bp}, {"name": "on", "weight": on_bp}],
    })
}

fn doc(flags: Vec<Value>) -> Result<ConfigDoc, String> {
    let body = serde_json::to_vec(&json!({"revision": 1, "flags": flags})).unwrap();
    parse_config_doc(&body).map_err(|e| e.to_string())
}

fn compiled(flags: Vec<Value>) -> CompiledFlags {
    CompiledFlags::new(&doc(flags).unwrap().flags)
}

fn eval(flags: &CompiledFlags, h: &Headers) -> Vec<Option<(String, FlagReason)>> {
    let ctx = HeaderContext::new(flags, h);
    flags
        .evaluate(&ctx, &mut || 7)
        .into_iter()
        .zip(&flags.flags)
        .map(|(e, f)| e.map(|e| (f.variants[e.variant].clone(), e.reason)))
        .collect()
}

fn variant_of(flags: &CompiledFlags, user: &str, key: &str) -> String {
    let h = headers(&[("x-user-id", user)]);
    let i = flags.index(key).unwrap();
    eval(flags, &h)[i].clone().unwrap().0
}

#[test]
fn a_config_names_the_field_of_each_flag_problem() {
    let cases: Vec<(Vec<Value>, &str)> = vec![
        (
            vec![{
                let mut f = flag("a", 10);
                f["variants"][1]["weight"] = json!(11);
                f
            }],
            "flags[0].variants: weights add up to 10001",
        ),
        (
            vec![{
                let mut f = flag("a", 10);
                f["default_variant"] = json!("maybe");
                f
            }],
            "flags[0].default_variant: \"maybe\" is not one of this flag's variants",
        ),
        (
            vec![flag("a", 1), flag("a", 2)],
            "flags[1].key: duplicate name",
        ),
        (
            vec![{
                let mut f = flag("a", 10);
                f["requires"] = json!([{"flag": "ghost", "variants": ["on"]}]);
                f
            }],
            "flags[0].requires[0].flag: no flag \"ghost\"",
        ),
        (
            vec![
                {
                    let mut f = flag("a", 10);
                    f["requires"] = json!([{"flag": "b", "variants": ["on"]}]);
                    f
                },
                {
                    let mut f = flag("b", 10);
                    f["requires"] = json!([{"flag": "c", "variants": ["on"]}]);
                    f
                },
                {
                    let mut f = flag("c", 10);
                    f["requires"] = json!([{"flag": "a", "variants": ["off"]}]);
                    f
                },
            ],
            "prerequisites form a cycle: a -> b -> c -> a",
        ),
        (
            vec![{
                let mut f = flag("a", 10);
                f["requires"] = json!([{"flag": "a", "variants": ["on"]}]);
                f
            }],
            "flags[0].requires[0].flag: prerequisites form a cycle: a -> a",
        ),
        (
            vec![
                {
                    let mut f = flag("a", 10);
                    f["exclusion"] = json!({"group": "g", "from_bp": 0, "to_bp": 5000});
                    f
                },
                {
                    let mut f = flag("b", 10);
                    f["exclusion"] = json!({"group": "g", "from_bp": 4999, "to_bp": 10000});
                    f
                },
            ],
            "flags[1].exclusion: overlaps flag \"a\"",
        ),
        (
            vec![
                {
                    let mut f = flag("a", 10);
                    f["exclusion"] = json!({"group": "g", "from_bp": 0, "to_bp": 5000});
                    f
                },
                {
                    let mut f = flag("b", 10);
                    f["exclusion"] = json!({"group": "g", "from_bp": 5000, "to_bp": 10000});
                    f["requires"] = json!([{"flag": "a", "variants": ["on"]}]);
                    f
                },
            ],
            "flags[1].requires[0]: can never be met",
        ),
        (
            vec![{
                let mut f = flag("a", 10);
                f["exclusion"] = json!({"group": "g", "from_bp": 5000, "to_bp": 5000});
                f
            }],
            "flags[0].exclusion.from_bp",
        ),
        (
            vec![{
                let mut f = flag("a", 10);
                f["overrides"] = json!([{"header": "X-Beta", "values": ["1"], "variant": "on"}]);
                f
            }],
            "flags[0].overrides[0].header",
        ),
        (
            (0..=MAX_FLAGS).map(|i| flag(&format!("f{i}"), 1)).collect(),
            "flags: at most 128 entries",
        ),
    ];
    for (flags, want) in cases {
        let err = doc(flags).unwrap_err();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}

#[test]
fn a_flag_key_may_not_be_a_rollouts_name() {
    let body = json!({"revision": 1,
        "rollouts": [{"name": "a", "salt": "a", "stable": "v1", "versions": [{"name": "v1", "weight": 10000}]}],
        "flags": [flag("a", 1)]});
    let err = parse_config_doc(&serde_json::to_vec(&body).unwrap()).unwrap_err();
    assert!(err.to_string().contains("flags[0].key"), "{err}");
}

#[test]
fn documents_over_the_size_limit_are_refused_before_parsing() {
    let huge = vec![b' '; dimmer_core::validate::MAX_DOC_BYTES + 1];
    let err = parse_config_doc(&huge).unwrap_err().to_string();
    assert!(err.contains("larger than 1048576 bytes"), "{err}");
}

#[test]
fn a_disabled_flag_serves_its_default_to_everyone() {
    let mut f = flag("a", 10000);
    f["state"] = json!("disabled");
    let flags = compiled(vec![f]);
    for u in ["u1", "u2", "u3"] {
        let got = eval(&flags, &headers(&[("x-user-id", u)]));
        assert_eq!(got[0], Some(("off".into(), FlagReason::Disabled)));
    }
}

#[test]
fn overrides_come_before_the_hash_and_anonymous_users_get_the_default() {
    let mut f = flag("a", 0);
    f["overrides"] = json!([{"header": "x-beta", "values": ["yes"], "variant": "on"}]);
    let flags = compiled(vec![f]);
    let got = eval(&flags, &headers(&[("x-user-id", "u1"), ("x-beta", "yes")]));
    assert_eq!(got[0], Some(("on".into(), FlagReason::TargetingMatch)));
    let got = eval(&flags, &headers(&[("x-user-id", "u1")]));
    assert_eq!(got[0], Some(("off".into(), FlagReason::Split)));
    let got = eval(&flags, &headers(&[]));
    assert_eq!(got[0], Some(("off".into(), FlagReason::AnonymousDefault)));
}

#[test]
fn a_flag_that_does_not_match_is_left_out_of_the_header() {
    let mut a = flag("a", 10000);
    a["match"] = json!({"host": "shop.example.com", "path_prefix": "/cart"});
    let flags = compiled(vec![a, flag("b", 10000)]);
    let h = headers(&[
        ("x-user-id", "u"),
        (":authority", "SHOP.example.com:8443"),
        (":path", "/cart/1"),
    ]);
    assert_eq!(header_value(&flags, &eval_raw(&flags, &h)), "a=on;b=on");
    let h = headers(&[
        ("x-user-id", "u"),
        (":authority", "other"),
        (":path", "/cart/1"),
    ]);
    assert_eq!(header_value(&flags, &eval_raw(&flags, &h)), "b=on");
    assert_eq!(header_value(&compiled(vec![]), &[]), "");
}

fn eval_raw(flags: &CompiledFlags, h: &Headers) -> Vec<Option<dimmer_core::Evaluation>> {
    flags.evaluate(&HeaderContext::new(flags, h), &mut || 0)
}

#[test]
fn growing_a_variant_moves_no_one_off_it() {
    let users: Vec<String> = (0..5000).map(|i| format!("user-{i}")).collect();
    let mut on_before: Vec<bool> = vec![false; users.len()];
    for bp in [0, 100, 1000, 2500, 5000, 9000, 10000] {
        let flags = compiled(vec![flag("a", bp)]);
        let mut on = 0;
        for (i, u) in users.iter().enumerate() {
            let is_on = variant_of(&flags, u, "a") == "on";
            assert!(!on_before[i] || is_on, "{u} left `on` when it grew to {bp}");
            on_before[i] = is_on;
            on += usize::from(is_on);
        }
        let share = on as f64 / users.len() as f64;
        assert!((share - bp as f64 / 10000.0).abs() < 0.02, "{bp}: {share}");
    }
}

#[test]
fn no_identity_is_in_two_experiments_of_a_group() {
    let exp = |key: &str, from: u32, to: u32| {
        let mut f = flag(key, 5000);
        f["exclusion"] = json!({"group": "checkout", "from_bp": from, "to_bp": to});
        f
    };
    let flags = compiled(vec![
        exp("a", 0, 3000),
        exp("b", 3000, 6000),
        exp("c", 6000, 10000),
    ]);
    let mut seen = [0usize; 3];
    for i in 0..10_000 {
        let h = headers(&[("x-user-id", &format!("id-{i}"))]);
        let got = eval(&flags, &h);
        let inside: Vec<usize> = (0..3)
            .filter(|&k| got[k].as_ref().unwrap().1 != FlagReason::Excluded)
            .collect();
        assert_eq!(inside.len(), 1, "id-{i} is in {inside:?}");
        seen[inside[0]] += 1;
        let on: Vec<usize> = (0..3)
            .filter(|&k| got[k].as_ref().unwrap().0 == "on")
            .collect();
        assert!(on.len() <= 1);
    }
    // Each slice holds about its share of the identities.
    for (k, want) in [(0, 3000.0), (1, 3000.0), (2, 4000.0)] {
        assert!((seen[k] as f64 - want).abs() < 300.0, "{seen:?}");
    }
}

#[test]
fn a_prerequisite_off_turns_the_dependent_flag_to_its_default() {
    let mut child = flag("child", 10000);
    child["requires"] = json!([{"flag": "parent", "variants": ["on"]}]);
    // The child is listed first: evaluation order follows the prerequisites.
    let flags = compiled(vec![child.clone(), flag("parent", 5000)]);
    let (mut on, mut off) = (0, 0);
    for i in 0..2000 {
        let u = format!("p-{i}");
        let parent = variant_of(&flags, &u, "parent");
        let got = eval(&flags, &headers(&[("x-user-id", &u)]))[0]
            .clone()
            .unwrap();
        if parent == "on" {
            assert_eq!(got, ("on".into(), FlagReason::Split));
            on += 1;
        } else {
            assert_eq!(got, ("off".into(), FlagReason::Prerequisite));
            off += 1;
        }
    }
    assert!(on > 800 && off > 800, "{on} {off}");
    let mut parent = flag("parent", 10000);
    parent["state"] = json!("disabled");
    let flags = compiled(vec![child, parent]);
    let got = eval(&flags, &headers(&[("x-user-id", "u")]))[0]
        .clone()
        .unwrap();
    assert_eq!(got, ("off".into(), FlagReason::Prerequisite));
}

#[test]
fn ten_flags_read_the_identity_and_an_override_header_once_each() {
    struct Counting(Headers, Cell<usize>);
    impl Request for Counting {
        fn header(&self, name: &str) -> Option<Vec<u8>> {
            self.1.set(self.1.get() + 1);
            self.0.header(name)
        }
    }
    let flags = compiled(
        (0..10)
            .map(|i| {
                let mut f = flag(&format!("f{i}"), 5000);
                f["overrides"] = json!([{"header": "x-beta", "values": ["yes"], "variant": "on"}]);
                f
            })
            .collect(),
    );
    let raw = Counting(headers(&[("x-user-id", "u")]), Cell::new(0));
    let results = flags.evaluate(&HeaderContext::new(&flags, &raw), &mut || 0);
    assert_eq!(results.iter().flatten().count(), 10);
    assert_eq!(raw.1.get(), 2, "x-beta once, x-user-id once");
}

#[test]
fn flags_with_different_identities_each_hash_their_own() {
    // The context keeps one identity per chain of sources: a flag by
    // organisation must not be handed the user id a flag before it read.
    let by_user = flag("by-user", 5000);
    let mut by_org = flag("by-org", 5000);
    by_org["identity"] = json!([{"header": "x-org-id"}]);
    let mut by_org_then_user = flag("by-org-then-user", 5000);
    by_org_then_user["identity"] = json!([{"header": "x-org-id"}, {"header": "x-user-id"}]);
    let flags = compiled(vec![by_user, by_org, by_org_then_user]);
    let mut differed = 0;
    for i in 0..200 {
        let (user, org) = (format!("user-{i}"), format!("org-{}", i * 7 + 3));
        let got = eval(
            &flags,
            &headers(&[("x-user-id", &user), ("x-org-id", &org)]),
        );
        let want = |f: usize, id: &str| {
            flags.flags[f].variants[flags.flags[f].variant_of_identity(id.as_bytes())].clone()
        };
        assert_eq!(got[0].as_ref().unwrap().0, want(0, &user));
        assert_eq!(got[1].as_ref().unwrap().0, want(1, &org));
        assert_eq!(got[2].as_ref().unwrap().0, want(2, &org));
        differed += usize::from(want(0, &user) != want(1, &org));
        // Without an org id, the third flag falls back to the user's.
        let got = eval(&flags, &headers(&[("x-user-id", &user)]));
        assert_eq!(got[2].as_ref().unwrap().0, want(2, &user));
    }
    assert!(
        differed > 50,
        "the two identities must often disagree for this to test anything"
    );
}

proptest! {
    #[test]
    fn arbitrary_headers_never_panic_and_give_a_variant_in_range(
        id in proptest::collection::vec(any::<u8>(), 0..64),
        beta in proptest::collection::vec(any::<u8>(), 0..8),
        random in any::<u64>(),
    ) {
        let mut a = flag("a", 3000);
        a["anonymous"] = json!("random");
        a["overrides"] = json!([{"header": "x-beta", "values": ["1"], "variant": "on"}]);
        a["exclusion"] = json!({"group": "g", "from_bp": 0, "to_bp": 7000});
        let mut b = flag("b", 6000);
        b["requires"] = json!([{"flag": "a", "variants": ["on"]}]);
        let flags = compiled(vec![a, b]);
        let mut h = Headers::default();
        h.0.insert("x-user-id".into(), id);
        h.0.insert("x-beta".into(), beta);
        let ctx = HeaderContext::new(&flags, &h);
        let once = flags.evaluate(&ctx, &mut || random);
        let twice = flags.evaluate(&ctx, &mut || random);
        prop_assert_eq!(&once, &twice);
        for (f, e) in flags.flags.iter().zip(&once) {
            let e = e.unwrap();
            prop_assert!(e.variant < f.variants.len());
        }
    }
}

#[test]
fn rollouts_and_flags_share_the_same_bounds() {
    let sources: Vec<Value> = (0..=dimmer_core::validate::MAX_IDENTITY)
        .map(|i| json!({"header": format!("x-id-{i}")}))
        .collect();
    let rollout = json!({"revision": 1, "rollouts": [{
        "name": "r", "salt": "r", "stable": "v1", "identity": sources,
        "versions": [{"name": "v1", "weight": 10000}],
        "overrides": [{"header": "x-t", "values": vec!["a"; 257], "version": "v1"}]
    }]});
    let err = parse_config_doc(&serde_json::to_vec(&rollout).unwrap()).unwrap_err();
    assert!(
        err.to_string().contains("rollouts[0].identity: at most 8"),
        "{err}"
    );
    let mut f = flag("a", 10);
    f["identity"] = json!(sources);
    assert!(doc(vec![f])
        .unwrap_err()
        .contains("flags[0].identity: at most 8"));
    let mut one = rollout.clone();
    one["rollouts"][0]["identity"] = json!([]);
    let err = parse_config_doc(&serde_json::to_vec(&one).unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .contains("rollouts[0].overrides[0].values: at most 256"),
        "{err}"
    );
}
