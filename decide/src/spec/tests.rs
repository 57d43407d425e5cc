//! The spec's strategies, dimensions and metrics, refused naming their field.

use std::time::Duration;

use dimmer_core::config::Rollout;

use super::*;

const BASE: &str = "name: checkout\nstable: blue\ncanary: green\nidentity: [{header: x-user-id}]\n";
const PREVIEW: &str = "overrides: [{header: x-preview, values: [qa], version: green}]\n";

fn refused(yaml: &str) -> String {
    RolloutSpec::from_yaml(yaml).unwrap_err().to_string()
}

#[test]
fn dimensions_and_metrics_are_checked_naming_their_field() {
    let steps = "steps: [{percent: 10}]\n";
    for (extra, want) in [
        ("analysis: {dimensions: [{header: 'x country'}]}\n", "analysis.dimensions[0]: the header or cookie name"),
        ("analysis: {dimensions: [{header: x-country, max_values: 40}]}\n", "analysis.dimensions[0].max_values: must be between 1 and 32"),
        ("analysis: {dimensions: [{user_agent: class}, {user_agent: class}]}\n", "analysis.dimensions[1]: duplicate name"),
        ("analysis: {dimensions: [{user_agent: family}]}\n", "`user_agent` takes one value: class"),
        ("analysis: {metrics: [{name: m, provider: {prometheus: {}}, kind: ratio, successes: 'a{{version}}', trials: 'b{{version}}'}]}\n", "analysis.metrics[0].direction: is required"),
    ] {
        let err = refused(&format!("{BASE}{steps}{extra}"));
        assert!(err.contains(want), "{extra}→ {err}");
    }
    let ok = RolloutSpec::from_yaml(&format!(
        "{BASE}{steps}analysis: {{dimensions: [{{header: x-country}}, {{cookie: plan, max_values: 4}}, {{user_agent: class}}]}}\n"
    ))
    .unwrap();
    let served = ok.rollout_at(1000);
    let names: Vec<String> = served.dimensions.iter().map(|d| d.name()).collect();
    assert_eq!(names, ["x-country", "cookie.plan", "user_agent"]);
    // The filter's config reads back as itself.
    let json = serde_json::to_string(&served).unwrap();
    assert!(
        json.contains(r#"{"cookie":"plan","max_values":4}"#),
        "{json}"
    );
    let back: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(back, served);
}

#[test]
fn blue_green_makes_its_two_steps() {
    let spec = RolloutSpec::from_yaml(&format!(
        "{BASE}{PREVIEW}strategy: {{blue_green: {{keep_previous_for: 5m, preview_for: 1m}}}}\n"
    ))
    .unwrap();
    assert_eq!(spec.steps.len(), 2);
    assert_eq!(
        (
            spec.steps[0].percent,
            spec.steps[0].traffic,
            spec.steps[0].approval
        ),
        (0.0, StepTraffic::Preview, true)
    );
    assert_eq!(spec.steps[0].pause, Duration::from_secs(60));
    assert_eq!(
        (spec.steps[1].percent, spec.steps[1].pause),
        (100.0, Duration::from_secs(300))
    );
    // What the store keeps reads back as itself.
    let json = serde_json::to_string(&spec).unwrap();
    let back: RolloutSpec = serde_json::from_str(&json).unwrap();
    back.validate().unwrap();
    assert_eq!(back, spec);
}

#[test]
fn blue_green_and_zero_percent_steps_are_checked_naming_the_field() {
    let bg = "strategy: {blue_green: {}}\n";
    assert!(
        refused(&format!("{BASE}{bg}")).contains("overrides: blue/green previews \"green\""),
        "{}",
        refused(&format!("{BASE}{bg}"))
    );
    let e = refused(&format!("{BASE}{PREVIEW}{bg}steps: [{{percent: 10}}]\n"));
    assert!(e.contains("steps: are made by strategy.blue_green"), "{e}");
    let e = refused(&format!(
        "{BASE}{PREVIEW}strategy: {{blue_green: {{keep_previous_for: 400d}}}}\n"
    ));
    assert!(e.contains("strategy.blue_green.keep_previous_for"), "{e}");
    let e = refused(&format!(
        "{BASE}{PREVIEW}strategy: {{blue_green: {{keep_previous_for: soon}}}}\n"
    ));
    assert!(e.contains("keep_previous_for: \"soon\""), "{e}");
    let e = refused(&format!("{BASE}steps: [{{percent: 0}}]\n"));
    assert!(e.contains("steps[0].percent: must be from 0.01"), "{e}");
    let e = refused(&format!("{BASE}steps: [{{percent: 5, traffic: shadow}}]\n"));
    assert!(
        e.contains("steps[0].percent: must be 0 in a shadow step"),
        "{e}"
    );
    let e = refused(&format!(
        "{BASE}steps: [{{percent: 0, traffic: preview}}]\n"
    ));
    assert!(e.contains("steps[0].traffic: a preview step judges"), "{e}");
    let e = refused(&format!(
        "{BASE}steps: [{{percent: 0, traffic: mirrored}}]\n"
    ));
    assert!(e.contains("unknown variant `mirrored`"), "{e}");
    // A 0% step cannot follow users: steps never go down.
    let e = refused(&format!(
        "{BASE}steps: [{{percent: 1}}, {{percent: 0, traffic: shadow}}]\n"
    ));
    assert!(
        e.contains("steps[1].percent: steps must not go down"),
        "{e}"
    );
    let shadowed = RolloutSpec::from_yaml(&format!(
        "{BASE}steps: [{{percent: 0, traffic: shadow}}, {{percent: 10}}, {{percent: 100}}]\n"
    ))
    .unwrap();
    // Only a rollout with a shadow step makes the filter read every host.
    assert_eq!(shadowed.rollout_at(1000).shadow.as_deref(), Some("green"));
    let plain = RolloutSpec::from_yaml(&format!("{BASE}steps: [{{percent: 10}}]\n")).unwrap();
    assert_eq!(plain.rollout_at(1000).shadow, None);
}

#[test]
fn documents_of_one_file_are_read_each_and_an_error_names_the_document_and_line() {
    let flag = "kind: flag\nkey: new-cart\nowner: shop\nlifecycle: permanent\n\
                identity: [{header: x-user-id}]\ndefault_variant: \"off\"\nvariant: \"on\"\n\
                steps: [{percent: 10}]\n";
    let two = format!("# two specs\n---\n{BASE}steps: [{{percent: 10}}]\n---\n{flag}\n---\n");
    let specs = RolloutSpec::from_yaml_documents(&two).unwrap();
    let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["checkout", "new-cart"]);
    let bad = two.replace("canary: green", "canary: blue");
    let e = RolloutSpec::from_yaml_documents(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("document 0 (checkout): canary: must differ from stable"),
        "{e}"
    );
    assert!(e.contains("(line 5)"), "the line in the whole file: {e}");
    let e = RolloutSpec::from_yaml_documents(&two.replace("variant: \"on\"", "variant: 3"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("document 1 (new-cart): variant: must be text"),
        "{e}"
    );
    // A single spec still refuses a second document, naming both.
    let e = RolloutSpec::from_yaml(&two).unwrap_err().to_string();
    assert!(e.contains("holds 2 YAML documents"), "{e}");
}

#[test]
fn hooks_are_checked_naming_the_field() {
    let steps = "steps: [{percent: 10}, {percent: 100}]\n";
    let probe = "probe: {url: 'http://envoy:10000/', requests: 5}";
    for (hooks, want) in [
        ("[{name: t, kind: pre-step, url: 'not a url'}]", "hooks[0].url: \"not a url\" is not an http(s) URL"),
        ("[{name: t, kind: pre-step, url: 'http://x/', timeout: 0s}]", "hooks[0].timeout: must be from 100ms to 10m"),
        ("[{name: t, kind: pre-step, url: 'http://x/', timeout: 365d}]", "hooks[0].timeout: must be from 100ms to 10m"),
        ("[{name: t, kind: pre-step, url: 'http://x/', timeout: soon}]", "timeout: \"soon\" is not a duration"),
        ("[{name: t, kind: rollout}]", "hooks[0]: takes `url` (an HTTP hook) or `probe`"),
        ("[{name: t, kind: rollout, url: 'http://x/', probe: {url: 'http://e/', max_latency_ms: 5}}]", "hooks[0]: takes `url` (an HTTP hook) or `probe`"),
        (&format!("[{{name: t, kind: rollout, {probe}}}]"), "hooks[0].probe.max_latency_ms: is required"),
        ("[{name: t, kind: on-abort, probe: {url: 'http://e/', max_latency_ms: 5}}]", "hooks[0].probe: a probe checks the canary"),
        ("[{name: t, kind: pre-step, url: 'http://x/'}, {name: t, kind: rollout, url: 'http://x/'}]", "hooks[1].name: \"t\" is named twice"),
        ("[{name: t, kind: later, url: 'http://x/'}]", "unknown variant `later`"),
        ("[{name: t, kind: pre-step, url: 'http://x/', retries: 50}]", "hooks[0].retries: at most 10"),
    ] {
        let err = refused(&format!("{BASE}{PREVIEW}{steps}hooks: {hooks}\n"));
        assert!(err.contains(want), "{hooks} → {err}");
    }
    // A probe reaches the canary through an override: without one it is refused.
    let err = refused(&format!(
        "{BASE}{steps}hooks: [{{name: t, kind: pre-step, probe: {{url: 'http://e/', max_latency_ms: 5}}}}]\n"
    ));
    assert!(
        err.contains("hooks[0].probe: a probe reaches the canary through an override"),
        "{err}"
    );
    let ok = RolloutSpec::from_yaml(&format!(
        "{BASE}{PREVIEW}{steps}hooks: [{{name: smoke, kind: confirm-promotion, probe: {{url: 'http://e/', max_latency_ms: 500}}}}]\n"
    ))
    .unwrap();
    assert_eq!(
        ok.pin_to_canary().map(|p| p.header),
        Some("x-preview".into())
    );
}
