//! Hostile input never panics the filter: a panic would kill the VM of a
//! worker, failing every later request on it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use dimmer_core::cohort::bucket;
use dimmer_e2e::fixtures::{rollout, static_config, Lab};
use dimmer_e2e::Client;
use serde_json::json;

/// Headers to send, as raw bytes.
type Headers<'a> = Vec<(&'a str, &'a [u8])>;

fn expected(id: &[u8]) -> &'static str {
    if bucket("checkout-7", id) < 5000 {
        "v1"
    } else {
        "v2"
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_leave_every_worker_serving() -> anyhow::Result<()> {
    let mut r = rollout(5000);
    r["anonymous"] = json!("cookie");
    let lab = Lab::start_with(static_config(vec![r]), |o| o.concurrency = 4).await?;
    let fresh = Client::fresh_connections(lab.envoy.url(""));

    let long_id = vec![b'x'; 30 * 1024];
    let non_utf8: &[u8] = &[0xff, 0xfe, b'a', 0xc3, 0x28, 0x80];
    let many_cookies: String = (0..300)
        .map(|i| format!("c{i}=v{i}"))
        .collect::<Vec<_>>()
        .join("; ")
        + "; session_id=deep-in-the-jar";
    let bad_cookies: &[u8] = b";;; =; session_id; ==x; session_id=\"; \xff\xfe=\xff";
    let cases: Vec<(Headers, Option<&str>)> = vec![
        (vec![("x-user-id", &long_id)], Some(expected(&long_id))),
        (vec![("x-user-id", non_utf8)], Some(expected(non_utf8))),
        (
            vec![("cookie", many_cookies.as_bytes())],
            Some(expected(b"deep-in-the-jar")),
        ),
        (vec![("cookie", bad_cookies)], None),
        (vec![("x-user-id", b"")], None),
        (
            vec![("x-tenant-id", non_utf8), ("x-user-id", b"z")],
            Some(expected(b"z")),
        ),
        (vec![("x-dimmer-version", non_utf8)], None),
        (vec![("x-user-id", b"\t \t")], None),
    ];
    for _round in 0..8 {
        for (headers, want) in &cases {
            let reply = fresh.get("/", headers).await?;
            assert_eq!(reply.status, 200, "{headers:?}");
            if let Some(want) = want {
                assert_eq!(reply.version, *want);
            }
        }
    }

    // Afterwards every worker still routes by the cohort function.
    for i in 0..200 {
        let id = format!("after-{i}");
        let reply = fresh.get("/", &[("x-user-id", id.as_bytes())]).await?;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.version, expected(id.as_bytes()), "{id}");
    }
    let log = lab.envoy.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(lab.envoy.prometheus().await?.contains("dimmer_requests"));
    Ok(())
}
