//! Roles scoped to teams, with the real controller: a token created with
//! `--team` may change only its teams' rollouts and flags, on every
//! mutating route; the matrix of roles × scopes × routes is exact.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Command;
use std::time::Duration;

use dimmer_e2e::controller::{
    dimmer_binary, Controller, MetricsFrom, ADMIN_TOKEN, OPERATOR_TOKEN, VIEWER_TOKEN,
};

fn create(file: &str, name: &str, role: &str, teams: &[&str]) -> String {
    let mut args = vec!["token", "create", name, "--role", role, "--file", file];
    for t in teams {
        args.extend(["--team", t]);
    }
    let out = Command::new(dimmer_binary().unwrap())
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn rollout(name: &str, team: Option<&str>) -> String {
    format!(
        "name: {name}\n{}identity: [{{header: x-user-id}}]\nstable: v1\ncanary: v2\n\
         steps: [{{percent: 10, pause: 1h}}, {{percent: 100}}]\nanalysis: {{min_requests: 10}}\n",
        team.map_or(String::new(), |t| format!("team: {t}\n"))
    )
}

const FLAG: &str = "kind: flag\nkey: new-cart\nowner: payments\nlifecycle: permanent\n\
    identity: [{header: x-user-id}]\ndefault_variant: 'off'\nvariant: 'on'\n\
    steps: [{percent: 10, pause: 1h}, {percent: 100}]\nanalysis: {min_requests: 10}\n";

struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: String,
    ) -> (u16, String) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    async fn post(&self, path: &str, token: &str, body: &str) -> (u16, String) {
        self.send(reqwest::Method::POST, path, token, body.to_owned())
            .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_team_scoped_token_changes_only_its_teams_on_every_route() {
    let c = Controller::start(MetricsFrom::Prometheus("http://127.0.0.1:9".into()), &[])
        .await
        .unwrap();
    let file = c.dir().join("tokens.yaml");
    let f = file.to_str().unwrap();
    let pay_op = create(f, "pay-op", "operator", &["payments"]);
    let search_op = create(f, "search-op", "operator", &["search"]);
    let both_op = create(f, "both-op", "operator", &["payments", "search"]);
    let pay_admin = create(f, "pay-admin", "admin", &["payments"]);
    let pay_viewer = create(f, "pay-viewer", "viewer", &["payments"]);
    let api = Api {
        url: c.url(),
        http: reqwest::Client::new(),
    };
    // The controller reads the file again within a second: wait for the
    // last token made.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while api
        .send(
            reqwest::Method::GET,
            "/v1/rollouts",
            &pay_viewer,
            String::new(),
        )
        .await
        .0
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the new tokens never took effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Made by an unscoped operator: one rollout per team, one of none, a flag.
    let specs = [
        ("checkout", Some("payments")),
        ("search", Some("search")),
        ("legacy", None),
    ];
    for (name, team) in specs {
        let (s, b) = api
            .post("/v1/rollouts", OPERATOR_TOKEN, &rollout(name, team))
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = api.post("/v1/rollouts", OPERATOR_TOKEN, FLAG).await;
    assert_eq!(s, 200, "{b}");

    // Who may change what: scope covers the target's team, or is unscoped.
    let tokens: [(&str, &str, &[&str]); 6] = [
        ("pay-op", &pay_op, &["checkout", "new-cart"]),
        ("search-op", &search_op, &["search"]),
        ("both-op", &both_op, &["checkout", "search", "new-cart"]),
        ("pay-admin", &pay_admin, &["checkout", "new-cart"]),
        (
            "deploy-bot",
            OPERATOR_TOKEN,
            &["checkout", "search", "legacy", "new-cart"],
        ),
        (
            "alice",
            ADMIN_TOKEN,
            &["checkout", "search", "legacy", "new-cart"],
        ),
    ];
    let mut seen = Vec::new();
    for (who, token, allowed) in tokens {
        for target in ["checkout", "search", "legacy", "new-cart"] {
            let may = allowed.contains(&target);
            // pause, then resume (each reversible): the same answer for
            // both, from a running rollout (a flag switched off pauses it).
            let _ = api
                .post(
                    &format!("/v1/rollouts/{target}/resume"),
                    OPERATOR_TOKEN,
                    "{}",
                )
                .await;
            for action in ["pause", "resume"] {
                let (s, body) = api
                    .post(
                        &format!("/v1/rollouts/{target}/{action}"),
                        token,
                        "{\"reason\": \"matrix\"}",
                    )
                    .await;
                let ok = s == 200;
                seen.push(format!("{who} {action} {target} {s}"));
                assert_eq!(ok, may, "{who} {action} {target}: {s} {body}");
                if !ok {
                    assert_eq!(s, 403, "{body}");
                    assert!(
                        body.contains(&format!("{who} may change the rollouts and flags of")),
                        "{body}"
                    );
                }
            }
            // Re-applying the same spec: unchanged, but still a change a
            // scope must cover.
            let spec = match target {
                "new-cart" => FLAG.to_owned(),
                name => rollout(name, specs.iter().find(|s| s.0 == name).and_then(|s| s.1)),
            };
            let (s, body) = api.post("/v1/rollouts", token, &spec).await;
            assert_eq!(s == 200, may, "{who} apply {target}: {s} {body}");
        }
        // The flag's switch.
        let (s, body) = api
            .post("/v1/flags/new-cart/off", token, "{\"reason\": \"matrix\"}")
            .await;
        let may = allowed.contains(&"new-cart");
        assert_eq!(s == 200, may, "{who} flag off: {s} {body}");
        if may {
            let (s, _) = api
                .post("/v1/flags/new-cart/on", token, "{\"reason\": \"matrix\"}")
                .await;
            assert_eq!(s, 200);
        }
        // A sync converges on every team in a directory: unscoped only.
        let (s, body) = api
            .post("/v1/sync?dry_run=true", token, "{\"files\": []}")
            .await;
        let unscoped = who == "deploy-bot" || who == "alice";
        assert_eq!(s == 200, unscoped, "{who} sync: {s} {body}");
    }
    // A viewer stays a viewer whatever its teams.
    let (s, _) = api
        .post("/v1/rollouts/checkout/pause", &pay_viewer, "{}")
        .await;
    assert_eq!(s, 403);
    assert_eq!(
        api.send(
            reqwest::Method::GET,
            "/v1/rollouts/search",
            &pay_viewer,
            String::new()
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.send(
            reqwest::Method::GET,
            "/v1/rollouts",
            VIEWER_TOKEN,
            String::new()
        )
        .await
        .0,
        200
    );

    // Moving a rollout to another team needs both teams.
    let (s, body) = api
        .post(
            "/v1/rollouts",
            &pay_op,
            &rollout("checkout", Some("search")),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("belongs to team search"), "{body}");
    let (s, body) = api
        .post(
            "/v1/rollouts",
            &search_op,
            &rollout("checkout", Some("search")),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("belongs to team payments"), "{body}");
    // A new rollout of another team, or of none.
    let (s, _) = api
        .post("/v1/rollouts", &pay_op, &rollout("ads", Some("ads")))
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .post("/v1/rollouts", &pay_op, &rollout("ads", None))
        .await;
    assert_eq!(s, 403);
    // Several documents: one out of scope refuses them all.
    let both = format!(
        "{}---\n{}",
        rollout("checkout", Some("payments")),
        rollout("search", Some("search"))
    );
    let (s, _) = api.post("/v1/rollouts", &pay_op, &both).await;
    assert_eq!(s, 403);
    let (s, body) = api.post("/v1/rollouts", &both_op, &both).await;
    assert_eq!(s, 200, "{body}");
    // Promote and abort, then delete: the destructive routes last.
    let (s, _) = api.post("/v1/rollouts/search/promote", &pay_op, "{}").await;
    assert_eq!(s, 403);
    let (s, _) = api
        .post("/v1/rollouts/checkout/promote", &pay_op, "{}")
        .await;
    assert_eq!(s, 200);
    let (s, _) = api.post("/v1/rollouts/search/abort", &pay_op, "{}").await;
    assert_eq!(s, 403);
    let (s, _) = api.post("/v1/rollouts/checkout/abort", &pay_op, "{}").await;
    assert_eq!(s, 200);
    let (s, _) = api
        .send(
            reqwest::Method::DELETE,
            "/v1/rollouts/search",
            &pay_admin,
            "{}".into(),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .send(
            reqwest::Method::DELETE,
            "/v1/rollouts/checkout",
            &pay_op,
            "{}".into(),
        )
        .await;
    assert_eq!(s, 403, "an operator does not delete, whatever its team");
    let (s, _) = api
        .send(
            reqwest::Method::DELETE,
            "/v1/rollouts/checkout",
            &pay_admin,
            "{}".into(),
        )
        .await;
    assert_eq!(s, 204);
    // The audit names who did what.
    let history = c.ok(&["history", "search"]).unwrap();
    assert!(history.contains("both-op"), "{history}");
    assert_eq!(seen.len(), 6 * 4 * 2);
}

#[test]
fn a_token_with_a_bad_team_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.yaml");
    let out = Command::new(dimmer_binary().unwrap())
        .args([
            "token",
            "create",
            "x",
            "--role",
            "operator",
            "--team",
            "no spaces please",
            "--file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tokens[0].teams[0]: \"no spaces please\" is not a team name"),
        "{err}"
    );
    assert!(!file.exists(), "nothing written");
}
