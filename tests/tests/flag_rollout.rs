//! Flags through the real controller and a real Envoy: the proxy's header
//! and the controller's OFREP answer agree for every identity at every
//! weight, a real OpenFeature client gets the same, and a flag whose
//! variant breaks the app is aborted like a canary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dimmer_e2e::controller::{Controller, ENVOY_TOKEN};
use dimmer_e2e::fixtures::Stack;
use dimmer_e2e::load::Load;
use dimmer_e2e::Client;
use serde_json::{json, Value};

/// A flag spec stepping through `steps` (percent, approval gate).
fn flag_yaml(key: &str, steps: &[(f64, bool)], extra: &str) -> String {
    let steps: String = steps
        .iter()
        .map(|(p, gate)| format!("  - {{percent: {p}, approval: {gate}}}\n"))
        .collect();
    format!(
        "kind: flag\nkey: {key}\nowner: team-test\nlifecycle: permanent\n\
         identity:\n  - header: x-user-id\ndefault_variant: \"off\"\nvariant: \"on\"\n\
         steps:\n{steps}analysis:\n  promote_on: no_alarm\n  interval: 1s\n  min_requests: 20\n{extra}"
    )
}

/// `key=variant;…` as a map.
fn parse_header(h: &str) -> BTreeMap<String, String> {
    h.split(';')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn ofrep_bulk(c: &Controller, http: &reqwest::Client, id: &str) -> anyhow::Result<Value> {
    let resp = http
        .post(format!("{}/ofrep/v1/evaluate/flags", c.url()))
        .bearer_auth(ENVOY_TOKEN)
        .json(&json!({"context": {"targetingKey": id}}))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "bulk: {}", resp.status());
    Ok(resp.json().await?)
}

/// Every identity's flags, from Envoy's header and from OFREP, 32 at a time.
async fn both_views(
    stack: &Stack,
    ids: &[String],
) -> anyhow::Result<Vec<(BTreeMap<String, String>, BTreeMap<String, String>)>> {
    let http = reqwest::Client::new();
    let client = Client::new(stack.lab.envoy.url(""));
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(32) {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, id) in chunk.iter().enumerate() {
            let (client, http, id) = (client.clone(), http.clone(), id.clone());
            let url = stack.controller.url();
            tasks.spawn(async move {
                let r = client.get("/", &[("x-user-id", id.as_bytes())]).await?;
                let resp = http
                    .post(format!("{url}/ofrep/v1/evaluate/flags"))
                    .bearer_auth(ENVOY_TOKEN)
                    .json(&json!({"context": {"targetingKey": id}}))
                    .send()
                    .await?;
                let bulk: Value = resp.json().await?;
                let from_ofrep: BTreeMap<String, String> = bulk["flags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| {
                        (
                            f["key"].as_str().unwrap_or_default().to_owned(),
                            f["variant"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                anyhow::Ok((i, parse_header(&r.saw_flags), from_ofrep))
            });
        }
        let mut got: Vec<_> = tasks
            .join_all()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        got.sort_by_key(|g| g.0);
        out.extend(got.into_iter().map(|(_, a, b)| (a, b)));
    }
    Ok(out)
}

/// Waits until `key` serves `weight_bp` and every live proxy has applied it.
async fn applied_at(c: &Controller, key: &str, weight_bp: u64) -> anyhow::Result<()> {
    c.wait_for(key, Duration::from_secs(30), "applied", |v| {
        v["weight_bp"] == weight_bp
            && v["proxies_live"].as_u64().unwrap_or(0) >= 1
            && v["proxies_applied"] == v["proxies_live"]
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_header_and_ofrep_agree_for_10000_identities_and_growth_moves_no_one_back(
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let c = &stack.controller;
    stack.apply(&flag_yaml(
        "search-v2",
        &[(10.0, true), (40.0, true), (100.0, false)],
        "",
    ))?;
    stack.apply(&flag_yaml("dark-mode", &[(25.0, true), (100.0, false)], ""))?;
    applied_at(c, "dark-mode", 2500).await?;
    let ids: Vec<String> = (0..10_000).map(|i| format!("member-{i}")).collect();
    let mut was_on = vec![false; ids.len()];
    for (weight, next) in [(1000, true), (4000, true), (10_000, false)] {
        applied_at(c, "search-v2", weight).await?;
        let views = both_views(&stack, &ids).await?;
        let mut on = 0usize;
        for (i, (envoy, ofrep)) in views.iter().enumerate() {
            assert_eq!(envoy, ofrep, "{} at {weight} bp", ids[i]);
            assert_eq!(envoy.len(), 2, "{envoy:?}");
            let is_on = envoy["search-v2"] == "on";
            assert!(
                !was_on[i] || is_on,
                "{} left the variant at {weight}",
                ids[i]
            );
            was_on[i] = is_on;
            on += usize::from(is_on);
        }
        let share = on as f64 / ids.len() as f64;
        assert!(
            (share - weight as f64 / 10_000.0).abs() < 0.02,
            "{share} at {weight} bp"
        );
        if next {
            c.ok(&["promote", "search-v2", "--reason", "next weight"])?;
        }
    }

    // The kill switch: off serves everyone the default, at the proxy and over OFREP.
    let out = c.ok(&["flag", "off", "search-v2", "--reason", "test"])?;
    assert!(out.contains("turned OFF"), "{out}");
    let v = c.rollout("search-v2").await?;
    let rev = v["revision"].as_u64().unwrap_or(0);
    c.wait_for("search-v2", Duration::from_secs(10), "applied", |v| {
        v["revision"].as_u64() == Some(rev) && v["proxies_applied"] == v["proxies_live"]
    })
    .await?;
    let http = reqwest::Client::new();
    for id in ids.iter().take(200) {
        let r = stack
            .lab
            .client
            .get("/", &[("x-user-id", id.as_bytes())])
            .await?;
        assert_eq!(parse_header(&r.saw_flags)["search-v2"], "off");
        let bulk = ofrep_bulk(c, &http, id).await?;
        let f = bulk["flags"]
            .as_array()
            .and_then(|a| a.iter().find(|f| f["key"] == "search-v2"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (f["variant"].as_str(), f["reason"].as_str()),
            (Some("off"), Some("DISABLED"))
        );
    }
    let list = c.ok(&["flags"])?;
    assert!(list.contains("search-v2: OFF"), "{list}");
    assert!(list.contains("toggles in the last 7 days: 1"), "{list}");
    assert!(list.contains("owner team-test"), "{list}");
    let history = c.ok(&["history", "search-v2"])?;
    assert!(history.contains("flag-off"), "{history}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_openfeature_client_gets_what_the_proxy_sends() -> anyhow::Result<()> {
    use open_feature::{EvaluationContext, OpenFeature};
    use open_feature_ofrep::{OfrepOptions, OfrepProvider};

    let stack = Stack::start().await?;
    let c = &stack.controller;
    stack.apply(&flag_yaml(
        "new-cart",
        &[(30.0, true), (100.0, false)],
        "values: {\"off\": false, \"on\": true}\n",
    ))?;
    stack.apply(&flag_yaml("theme", &[(60.0, true), (100.0, false)], ""))?;
    applied_at(c, "new-cart", 3000).await?;
    applied_at(c, "theme", 6000).await?;

    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ENVOY_TOKEN}").parse()?,
    );
    let provider = OfrepProvider::new(OfrepOptions {
        base_url: c.url(),
        headers,
        ..OfrepOptions::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut api = OpenFeature::singleton_mut().await;
    api.set_provider(provider).await;
    let client = Arc::new(api.create_client());
    drop(api);

    let (mut on, mut blue) = (0, 0);
    for i in 0..300 {
        let id = format!("shopper-{i}");
        let ctx = EvaluationContext::default().with_targeting_key(id.clone());
        let cart = client
            .get_bool_value("new-cart", Some(&ctx), None)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let theme = client
            .get_string_value("theme", Some(&ctx), None)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let r = stack
            .lab
            .client
            .get("/", &[("x-user-id", id.as_bytes())])
            .await?;
        let header = parse_header(&r.saw_flags);
        assert_eq!(cart, header["new-cart"] == "on", "{id}: {header:?}");
        assert_eq!(theme, header["theme"], "{id}");
        on += usize::from(cart);
        blue += usize::from(theme == "on");
    }
    assert!(
        (40..140).contains(&on) && (130..230).contains(&blue),
        "{on} {blue}"
    );

    // Protocol errors as OFREP names them.
    let http = reqwest::Client::new();
    let post = |path: &str, body: &'static str| {
        http.post(format!("{}{path}", c.url()))
            .bearer_auth(ENVOY_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post(
        "/ofrep/v1/evaluate/flags/nope",
        "{\"context\": {\"targetingKey\": \"u\"}}",
    )
    .await?;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await?["errorCode"], "FLAG_NOT_FOUND");
    let r = post("/ofrep/v1/evaluate/flags/theme", "{\"context\": {}}").await?;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await?["errorCode"],
        "TARGETING_KEY_MISSING"
    );
    let r = post("/ofrep/v1/evaluate/flags/theme", "{\"context\": ").await?;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await?["errorCode"], "PARSE_ERROR");
    let r = post("/ofrep/v1/evaluate/flags/theme", "{\"context\": 7}").await?;
    assert_eq!(r.json::<Value>().await?["errorCode"], "INVALID_CONTEXT");
    let r = http
        .post(format!("{}/ofrep/v1/evaluate/flags/theme", c.url()))
        .json(&json!({"context": {"targetingKey": "u"}}))
        .send()
        .await?;
    assert_eq!(r.status(), 401, "evaluation needs a token");

    // Bulk answers carry an ETag; the same context at the same revision is a 304.
    let first = http
        .post(format!("{}/ofrep/v1/evaluate/flags", c.url()))
        .bearer_auth(ENVOY_TOKEN)
        .json(&json!({"context": {"targetingKey": "u"}}))
        .send()
        .await?;
    let etag = first.headers()["etag"].to_str()?.to_owned();
    let again = http
        .post(format!("{}/ofrep/v1/evaluate/flags", c.url()))
        .bearer_auth(ENVOY_TOKEN)
        .header("if-none-match", &etag)
        .json(&json!({"context": {"targetingKey": "u"}}))
        .send()
        .await?;
    assert_eq!(again.status(), 304);
    let other = http
        .post(format!("{}/ofrep/v1/evaluate/flags", c.url()))
        .bearer_auth(ENVOY_TOKEN)
        .header("if-none-match", &etag)
        .json(&json!({"context": {"targetingKey": "someone-else"}}))
        .send()
        .await?;
    assert_eq!(other.status(), 200, "another context is another answer");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flag_whose_variant_breaks_the_app_is_aborted_and_killed_within_2s() -> anyhow::Result<()>
{
    let stack = Stack::start().await?;
    // The app fails only where the flag is on: the feature is broken.
    *stack.lab.v1.fault.fail_flag.lock().unwrap() = Some("checkout-v3=on".into());
    *stack.lab.v2.fault.fail_flag.lock().unwrap() = Some("checkout-v3=on".into());
    let load = Load::start(stack.lab.client.clone(), 3000, 300);
    stack.apply(&flag_yaml(
        "checkout-v3",
        &[(20.0, false), (50.0, false), (100.0, false)],
        "",
    ))?;
    let aborted = stack
        .controller
        .wait_decided("checkout-v3", Duration::from_secs(60))
        .await?;
    assert_eq!(aborted["phase"], "aborted", "{aborted}");
    assert_eq!(aborted["weight_bp"], 0);
    let abort = stack
        .controller
        .first_record("checkout-v3", "abort")
        .await?;
    assert_eq!(abort["actor"], "controller");
    let decided_ms = abort["at_ms"].as_u64().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let served = load.served();
    let after: Vec<_> = served
        .iter()
        .filter(|s| s.at_ms > decided_ms + 2000)
        .collect();
    assert!(
        after.len() > 100,
        "too little traffic after the abort: {}",
        after.len()
    );
    let still_on = after
        .iter()
        .filter(|s| s.flags.contains("checkout-v3=on"))
        .count();
    assert_eq!(
        still_on, 0,
        "{still_on} requests still had the flag on 2 s after the abort"
    );
    assert!(after.iter().all(|s| s.status == 200));
    let before = served
        .iter()
        .filter(|s| s.at_ms < decided_ms && s.flags.contains("checkout-v3=on"))
        .count();
    assert!(before > 0, "the flag was never on before the abort");
    Ok(())
}
