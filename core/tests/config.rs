//! Validation names the field at fault; the parsers take any bytes without
//! panicking.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use dimmer_core::validate::{parse_config_doc, parse_plugin_config};
use dimmer_core::ConfigError;
use proptest::prelude::*;
use serde_json::{json, Value};

fn good() -> Value {
    json!({
        "route_header": "x-dimmer-version",
        "controller": {"cluster": "dimmer-controller", "poll_interval_ms": 1000},
        "rollouts": [{
            "name": "checkout",
            "match": {"host": "checkout.example.com", "path_prefix": "/"},
            "identity": [{"header": "x-user-id"}, {"cookie": "session_id"}],
            "anonymous": "cookie",
            "salt": "checkout-7",
            "stable": "v1",
            "versions": [{"name": "v1", "weight": 9000}, {"name": "v2", "weight": 1000}],
            "overrides": [{"header": "x-tenant-id", "values": ["acme-internal"], "version": "v2"}]
        }]
    })
}

type Mutation = Box<dyn FnOnce(&mut Value)>;

fn error_of(mutate: impl FnOnce(&mut Value)) -> ConfigError {
    let mut cfg = good();
    mutate(&mut cfg);
    parse_plugin_config(cfg.to_string().as_bytes()).expect_err("should be refused")
}

#[test]
fn the_example_from_the_design_is_valid() {
    let cfg = parse_plugin_config(good().to_string().as_bytes()).unwrap();
    assert_eq!(cfg.rollouts[0].versions[1].weight, 1000);
    assert!(parse_plugin_config(b"").unwrap().rollouts.is_empty());
    assert!(parse_plugin_config(b"  {} ").unwrap().controller.is_none());
}

#[test]
fn each_invalid_field_is_named() {
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "route_header",
            Box::new(|c| c["route_header"] = json!("X Version")),
        ),
        (
            "route_header",
            Box::new(|c| c["route_header"] = json!("host")),
        ),
        (
            "controller.cluster",
            Box::new(|c| c["controller"]["cluster"] = json!("")),
        ),
        (
            "controller.path",
            Box::new(|c| c["controller"]["path"] = json!("v1/config")),
        ),
        (
            "controller.poll_interval_ms",
            Box::new(|c| c["controller"]["poll_interval_ms"] = json!(5)),
        ),
        (
            "controller.timeout_ms",
            Box::new(|c| c["controller"]["timeout_ms"] = json!(0)),
        ),
        (
            "rollouts[0].name",
            Box::new(|c| c["rollouts"][0]["name"] = json!("has space")),
        ),
        (
            "rollouts[0].name",
            Box::new(|c| c["rollouts"][0]["name"] = json!("semi;colon")),
        ),
        (
            "rollouts[0].salt",
            Box::new(|c| c["rollouts"][0]["salt"] = json!("")),
        ),
        (
            "rollouts[0].stable",
            Box::new(|c| c["rollouts"][0]["stable"] = json!("v3")),
        ),
        (
            "rollouts[0].versions",
            Box::new(|c| c["rollouts"][0]["versions"] = json!([])),
        ),
        (
            "rollouts[0].versions",
            Box::new(|c| c["rollouts"][0]["versions"][0]["weight"] = json!(8999)),
        ),
        (
            "rollouts[0].versions[1].weight",
            Box::new(|c| c["rollouts"][0]["versions"][1]["weight"] = json!(20000)),
        ),
        (
            "rollouts[0].versions[1].name",
            Box::new(|c| c["rollouts"][0]["versions"][1]["name"] = json!("v1")),
        ),
        (
            "rollouts[0].match.path_prefix",
            Box::new(|c| c["rollouts"][0]["match"]["path_prefix"] = json!("api")),
        ),
        (
            "rollouts[0].match.host",
            Box::new(|c| c["rollouts"][0]["match"]["host"] = json!("")),
        ),
        (
            "rollouts[0].identity[1].cookie",
            Box::new(|c| c["rollouts"][0]["identity"][1]["cookie"] = json!("a=b")),
        ),
        (
            "rollouts[0].identity[0].header",
            Box::new(|c| c["rollouts"][0]["identity"][0]["header"] = json!("X-User")),
        ),
        (
            "rollouts[0].anonymous_cookie.name",
            Box::new(|c| c["rollouts"][0]["anonymous_cookie"] = json!({"name": "a;b"})),
        ),
        (
            "rollouts[0].overrides[0].version",
            Box::new(|c| c["rollouts"][0]["overrides"][0]["version"] = json!("v9")),
        ),
        (
            "rollouts[0].overrides[0].values",
            Box::new(|c| c["rollouts"][0]["overrides"][0]["values"] = json!([])),
        ),
        (
            "rollouts[0].overrides[0].header",
            Box::new(|c| c["rollouts"][0]["overrides"][0]["header"] = json!("")),
        ),
        (
            "rollouts[1].name",
            Box::new(|c| {
                let dup = c["rollouts"][0].clone();
                c["rollouts"].as_array_mut().unwrap().push(dup);
            }),
        ),
    ];
    for (field, mutate) in cases {
        let err = error_of(mutate);
        assert_eq!(err.field(), Some(field), "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn syntax_errors_name_the_field_and_position() {
    let err = error_of(|c| c["rollouts"][0]["versions"][0]["wieght"] = json!(1));
    assert!(err.to_string().contains("unknown field `wieght`"), "{err}");
    let err = error_of(|c| c["rollouts"][0]["anonymous"] = json!("sometimes"));
    assert!(
        err.to_string().contains("unknown variant `sometimes`"),
        "{err}"
    );
    let err = error_of(|c| c["rollouts"][0]["versions"][0]["weight"] = json!(-1));
    assert!(err.to_string().contains("line 1 column"), "{err}");
    let err = parse_config_doc(b"{\"rollouts\": []}").unwrap_err();
    assert!(
        err.to_string().contains("missing field `revision`"),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_plugin_config(&bytes);
        let _ = parse_config_doc(&bytes);
    }

    /// Valid JSON cut or corrupted anywhere is refused or accepted, never a panic.
    #[test]
    fn corrupted_configs_never_panic(cut in 0usize..600, at in 0usize..600, byte in any::<u8>()) {
        let mut text = json!({"revision": 3, "rollouts": good()["rollouts"]}).to_string().into_bytes();
        if at < text.len() {
            text[at] = byte;
        }
        text.truncate(cut.min(text.len()));
        let _ = parse_config_doc(&text);
    }
}
