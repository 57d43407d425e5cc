//! The controller's API on its own: roles, the audit chain, spec errors,
//! webhooks. No Envoy needed here but the one the stack brings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::{Arc, Mutex};

use axum::routing::post;
use axum::Router;
use dimmer_e2e::controller::{ADMIN_TOKEN, ENVOY_TOKEN, OPERATOR_TOKEN, VIEWER_TOKEN};
use dimmer_e2e::fixtures::{spec_yaml, Stack};
use reqwest::{Method, StatusCode};

/// Every endpoint, with the least role that may call it.
fn endpoints() -> Vec<(Method, &'static str, Option<&'static str>, &'static str)> {
    vec![
        (Method::GET, "/v1/config", None, "proxy"),
        (Method::GET, "/v1/rollouts", None, "viewer"),
        (Method::GET, "/v1/rollouts/checkout", None, "viewer"),
        (Method::GET, "/v1/rollouts/checkout/history", None, "viewer"),
        (Method::GET, "/v1/proxies", None, "viewer"),
        (Method::GET, "/v1/webhooks", None, "viewer"),
        (Method::GET, "/v1/audit/head", None, "viewer"),
        (Method::GET, "/v1/health", None, "viewer"),
        (Method::GET, "/metrics", None, "viewer"),
        (Method::GET, "/v1/whoami", None, "proxy"),
        (Method::GET, "/v1/overview", None, "viewer"),
        (Method::GET, "/v1/rollouts/checkout/series", None, "viewer"),
        (
            Method::POST,
            "/v1/rollouts?dry_run=true",
            Some("spec"),
            "operator",
        ),
        (Method::POST, "/v1/rollouts", Some("spec"), "operator"),
        (
            Method::POST,
            "/v1/rollouts/checkout/pause",
            Some("{\"reason\":\"t\"}"),
            "operator",
        ),
        (
            Method::POST,
            "/v1/rollouts/checkout/resume",
            Some("{\"reason\":\"t\"}"),
            "operator",
        ),
        (
            Method::POST,
            "/v1/rollouts/checkout/promote",
            Some("{\"reason\":\"t\"}"),
            "operator",
        ),
        (
            Method::POST,
            "/v1/rollouts/checkout/abort",
            Some("{\"reason\":\"t\"}"),
            "operator",
        ),
        (
            Method::POST,
            "/ofrep/v1/evaluate/flags/gate",
            Some("{\"context\":{\"targetingKey\":\"u\"}}"),
            "proxy",
        ),
        (
            Method::POST,
            "/ofrep/v1/evaluate/flags",
            Some("{\"context\":{\"targetingKey\":\"u\"}}"),
            "proxy",
        ),
        (Method::GET, "/v1/flags", None, "viewer"),
        (
            Method::POST,
            "/v1/flags/gate/off",
            Some("{\"reason\":\"t\"}"),
            "operator",
        ),
        (
            Method::POST,
            "/v1/flags/gate/on",
            Some("{\"reason\":\"t\"}"),
            "operator",
        ),
        (Method::GET, "/v1/audit/verify", None, "admin"),
        (
            Method::DELETE,
            "/v1/rollouts/checkout",
            Some("{\"reason\":\"t\"}"),
            "admin",
        ),
        (
            Method::POST,
            "/v1/sync?dry_run=true",
            Some("{\"files\":[]}"),
            "operator",
        ),
        // Pruning deletes (here, everything): the last call of all.
        (
            Method::POST,
            "/v1/sync?prune=true",
            Some("{\"files\":[]}"),
            "admin",
        ),
    ]
}

fn rank(role: &str) -> u8 {
    match role {
        "proxy" => 1,
        "viewer" => 2,
        "operator" => 3,
        "admin" => 4,
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_times_every_role_and_no_token() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let spec = spec_yaml(&[(1.0, "1h"), (100.0, "1h")], 10);
    stack.apply(
        "kind: flag\nkey: gate\nowner: t\nlifecycle: permanent\nidentity: [{header: x-user-id}]\n\
         default_variant: \"off\"\nvariant: \"on\"\nsteps: [{percent: 50, approval: true}]\n",
    )?;
    let http = reqwest::Client::new();
    let roles = [
        ("none", None),
        ("bad", Some("not-a-token-at-all-000")),
        ("proxy", Some(ENVOY_TOKEN)),
        ("viewer", Some(VIEWER_TOKEN)),
        ("operator", Some(OPERATOR_TOKEN)),
        ("admin", Some(ADMIN_TOKEN)),
    ];
    for (method, path, body, needed) in endpoints() {
        for (role, token) in roles {
            // Each call starts from a fresh rollout (paused, for resume), so
            // state never decides the answer.
            let reset = http
                .delete(format!("{}/v1/rollouts/checkout", stack.controller.url()))
                .bearer_auth(ADMIN_TOKEN)
                .json(&serde_json::json!({"reason": "test reset"}))
                .send()
                .await?;
            assert!(reset.status().is_success() || reset.status() == StatusCode::NOT_FOUND);
            stack.apply(&spec)?;
            if path.ends_with("/resume") {
                stack
                    .controller
                    .ok(&["pause", "checkout", "--reason", "so it can resume"])?;
            }
            let mut req = http.request(method.clone(), format!("{}{path}", stack.controller.url()));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req = match body {
                Some("spec") => req.body(spec.clone()),
                Some(json) => req.header("content-type", "application/json").body(json),
                None => req,
            };
            let status = req.send().await?.status();
            let want_ok = rank(role) >= rank(needed);
            let expected = match (role, want_ok) {
                ("none" | "bad", _) => Some(StatusCode::UNAUTHORIZED),
                (_, false) => Some(StatusCode::FORBIDDEN),
                (_, true) => None,
            };
            match expected {
                Some(code) => assert_eq!(status, code, "{method} {path} as {role}"),
                None => assert!(status.is_success(), "{method} {path} as {role}: {status}"),
            }
        }
    }
    // Only /healthz and /livez are open.
    for path in ["/healthz", "/livez"] {
        let health = http
            .get(format!("{}{path}", stack.controller.url()))
            .send()
            .await?;
        assert_eq!(health.status(), StatusCode::OK, "{path}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_chain_verifies_and_catches_a_changed_record() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.apply(&spec_yaml(&[(1.0, "1h"), (100.0, "1h")], 10))?;
    stack
        .controller
        .ok(&["pause", "checkout", "--reason", "lunch"])?;
    stack
        .controller
        .ok(&["abort", "checkout", "--reason", "rollback drill"])?;
    let out = stack
        .controller
        .cli(Some(ADMIN_TOKEN), &["audit", "verify"])?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("audit chain intact: 3 records"),
        "{out:?}"
    );

    stack.controller.kill();
    let db = stack.controller.db_path();
    let conn = rusqlite::Connection::open(&db)?;
    conn.execute(
        "UPDATE audit SET reason = 'nothing happened' WHERE seq = 2",
        [],
    )?;
    drop(conn);
    let out = stack.controller.cli(
        None,
        &["audit", "verify", "--db", &db.display().to_string()],
    )?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("audit record 2") && err.contains("changed"),
        "{err}"
    );

    // A deleted record breaks the chain too, and so does the API's check.
    let conn = rusqlite::Connection::open(&db)?;
    conn.execute("UPDATE audit SET reason = 'lunch' WHERE seq = 2", [])?;
    conn.execute("DELETE FROM audit WHERE seq = 2", [])?;
    drop(conn);
    stack.controller.restart().await?;
    let out = stack
        .controller
        .cli(Some(ADMIN_TOKEN), &["audit", "verify"])?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit record 3"),
        "{out:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_specs_are_refused_naming_the_field() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let good = spec_yaml(&[(1.0, "1m"), (10.0, "1m"), (100.0, "1m")], 10);
    let cases = [
        (
            good.replace("  min_requests: 10", "  min_requets: 10"),
            "unknown field `min_requets`",
        ),
        (
            good.replace("  min_requests: 10", "  min_requets: 10"),
            "line 14",
        ),
        (
            good.replace("canary: v2", "canary: v1"),
            "canary: must differ from stable (line 6)",
        ),
        (
            good.replace("percent: 10,", "percent: 0.5,"),
            "steps[1].percent: steps must not go down",
        ),
        (good.replace("percent: 10,", "percent: 0.5,"), "(line 9)"),
        (
            good.replace("percent: 100,", "percent: 150,"),
            "steps[2].percent",
        ),
        (
            good.replace("pause: 1m}", "pause: soon}"),
            "steps[0]: pause: \"soon\" is not a duration",
        ),
        (
            good.replace("header: x-user-id", "header: X User"),
            "identity[0].header",
        ),
        (
            good.replace("salt: checkout-7", "salt: ''"),
            "salt: must not be empty",
        ),
        (
            good.replace("min_requests: 10", "min_requests: 0"),
            "analysis.min_requests",
        ),
        (
            good.replace("name: checkout", "name: 'check out'"),
            "name: must be 1 to 63",
        ),
    ];
    for (yaml, expected) in cases {
        let path = stack.controller.dir().join("bad.yaml");
        std::fs::write(&path, &yaml)?;
        let out = stack.controller.cli(
            Some(OPERATOR_TOKEN),
            &["apply", "-f", &path.display().to_string()],
        )?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{yaml}");
        assert!(err.contains(expected), "expected {expected:?} in: {err}");
        // The API refuses it on its own too (no CLI in between).
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/rollouts", stack.controller.url()))
            .bearer_auth(OPERATOR_TOKEN)
            .body(yaml.clone())
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
    let status = stack.controller.ok(&["status"])?;
    assert_eq!(status.trim(), "no rollouts");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_hear_every_state_change() -> anyhow::Result<()> {
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let sink = Arc::clone(&got);
    let app = Router::new().route(
        "/hook",
        post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // One receiver for every rollout, one named by the spec: both hear
    // everything, the delete included.
    let stack = Stack::start_with(&["--webhook", &url]).await?;
    let spec_url = url.replace("/hook", "/hook?from=spec");
    stack.apply(&format!(
        "{}webhooks: ['{spec_url}']\n",
        spec_yaml(&[(1.0, "1h"), (100.0, "1h")], 10)
    ))?;
    stack
        .controller
        .ok(&["promote", "checkout", "--reason", "ship it"])?;
    stack
        .controller
        .ok(&["abort", "checkout", "--reason", "changed my mind"])?;
    stack.controller.cli(
        Some(ADMIN_TOKEN),
        &["delete", "checkout", "--reason", "cleaning up"],
    )?;
    for _ in 0..50 {
        if got.lock().unwrap_or_else(|e| e.into_inner()).len() >= 8 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let got = got.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut actions: Vec<&str> = got.iter().filter_map(|v| v["action"].as_str()).collect();
    actions.sort();
    assert_eq!(
        actions,
        ["abort", "abort", "apply", "apply", "delete", "delete", "promote", "promote"]
    );
    let abort = got.iter().find(|v| v["action"] == "abort").unwrap();
    assert_eq!(abort["reason"], "changed my mind");
    assert_eq!(abort["actor"], "deploy-bot");
    assert_eq!(abort["rollout"], "checkout");
    assert!(
        abort["audit_head"]["seq"].as_i64().unwrap_or(0) >= 3,
        "{abort}"
    );
    Ok(())
}

/// The web UI's live stream: a viewer's token opens it and gets an update
/// at once; no token, or the proxy's, gets nothing. The page's assets need
/// no token and say where they may load from.
#[tokio::test(flavor = "multi_thread")]
async fn the_live_stream_needs_a_viewer_and_the_page_loads_only_itself() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.apply(&spec_yaml(&[(10.0, "1h")], 10))?;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events?rollout=checkout", stack.controller.url());
    for token in [None, Some(ENVOY_TOKEN)] {
        let mut req = http.get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let status = req.send().await?.status();
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
            "{token:?}: {status}"
        );
    }
    let mut resp = http.get(&url).bearer_auth(VIEWER_TOKEN).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(std::time::Duration::from_secs(3), resp.chunk())
        .await??
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&first);
    let data = text
        .strip_prefix("event: update\ndata: ")
        .unwrap_or_default()
        .trim();
    let update: serde_json::Value = serde_json::from_str(data)?;
    assert_eq!(update["status"]["name"], "checkout", "{update}");
    assert!(
        update["audit"].as_array().is_some_and(|a| !a.is_empty()),
        "{update}"
    );
    drop(resp);
    for path in [
        "/ui/",
        "/ui/app.js",
        "/ui/style.css",
        "/ui/favicon.svg",
        "/favicon.ico",
    ] {
        let resp = http
            .get(format!("{}{path}", stack.controller.url()))
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let csp = resp.headers()["content-security-policy"]
            .to_str()?
            .to_owned();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        // SVG's namespace is a name, not a fetch.
        let body = resp.text().await?.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} names another origin"
        );
    }
    Ok(())
}

/// Every answer — JSON, metrics, the page, a redirect, a refusal, a 404 —
/// carries the headers that keep it from being framed, sniffed, cached or
/// leaking a referrer; the page's assets keep their own strict policy.
#[tokio::test(flavor = "multi_thread")]
async fn every_response_carries_the_security_headers() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let url = stack.controller.url();
    let cases: [(&str, Option<&str>, u16); 9] = [
        ("/healthz", None, 200),
        ("/livez", None, 200),
        ("/v1/rollouts", Some(VIEWER_TOKEN), 200),
        ("/v1/rollouts", None, 401),
        ("/v1/rollouts/nope", Some(VIEWER_TOKEN), 404),
        ("/v1/config", Some(ENVOY_TOKEN), 200),
        ("/metrics", Some(VIEWER_TOKEN), 200),
        ("/", None, 303),
        ("/ui/", None, 200),
    ];
    for (path, token, status) in cases {
        let mut req = http.get(format!("{url}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await?;
        assert_eq!(r.status().as_u16(), status, "{path}");
        let h = r.headers();
        let get = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(get("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(get("x-frame-options"), "DENY", "{path}");
        assert_eq!(get("referrer-policy"), "no-referrer", "{path}");
        let csp = get("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        if path == "/ui/" {
            assert!(csp.contains("script-src 'self'"), "{csp}");
        } else {
            assert_eq!(get("cache-control"), "no-store", "{path}");
        }
    }
    Ok(())
}
