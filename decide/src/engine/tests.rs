//! The engine walked through whole rollouts: steps, pauses, gates, aborts,
//! blue/green, shadows, lost metrics and lagging proxies.

use crate::counts::{Snapshot, VersionCounts};
use crate::spec::MetricsLossPolicy;
use crate::spec::RolloutSpec;

use super::advance::{advance, apply, next_step, Decision, Observation, Outcome};
use super::state::{Phase, RolloutState};

fn spec() -> RolloutSpec {
    RolloutSpec::from_yaml(
        "name: checkout\nstable: v1\ncanary: v2\nidentity: [{header: x-user-id}]\n\
         steps:\n- {percent: 1, pause: 10s}\n- {percent: 50, approval: true}\n- {percent: 100}\n\
         analysis: {min_requests: 100, method: threshold, promote_on: no_alarm}\n",
    )
    .unwrap()
}

fn snap(v1: (f64, f64), v2: (f64, f64)) -> Snapshot {
    let c = |(ok, err): (f64, f64)| {
        let mut c = VersionCounts::default();
        c.by_class.insert("2xx".into(), ok);
        c.by_class.insert("5xx".into(), err);
        c
    };
    Snapshot::from_versions([("v1".to_string(), c(v1)), ("v2".to_string(), c(v2))].into())
}

fn counts(s: &RolloutState, snap: &Snapshot, now_ms: u64) -> Outcome {
    advance(s, Observation::Counts(snap), now_ms, None)
}

/// A state whose current step has `baseline` as its baseline.
fn started(baseline: &Snapshot) -> RolloutState {
    let s = RolloutState::new(spec(), 0);
    let o = counts(&s, baseline, 0);
    assert!(
        matches!(o.decision, Decision::Hold { ref reason } if reason.contains("baseline taken"))
    );
    o.next
}

#[test]
fn a_phase_is_named_as_the_api_writes_it() {
    for p in [
        Phase::Progressing,
        Phase::Paused,
        Phase::Completed,
        Phase::Aborted,
    ] {
        assert_eq!(serde_json::to_value(p).unwrap(), p.name());
    }
}

#[test]
fn walks_the_steps_with_pauses_and_a_gate() {
    let zero = snap((0.0, 0.0), (0.0, 0.0));
    let mut s = started(&zero);
    assert_eq!(s.weight_bp, 100);
    let few = snap((5000.0, 0.0), (50.0, 0.0));
    let d = counts(&s, &few, 60_000).decision;
    assert_eq!(
        d,
        Decision::Hold {
            reason: "canary has 50 of 100 requests needed".into()
        }
    );

    let enough = snap((10_000.0, 0.0), (150.0, 0.0));
    let d = counts(&s, &enough, 5_000).decision;
    assert!(
        matches!(d, Decision::Hold { ref reason } if reason.contains("pausing 5s of 10s")),
        "{d:?}"
    );
    let o = counts(&s, &enough, 10_000);
    assert!(
        matches!(
            o.decision,
            Decision::StepUp {
                step: 1,
                weight_bp: 5000,
                ..
            }
        ),
        "{:?}",
        o.decision
    );
    // The step up's record keeps the numbers it was made on; the new
    // step's own evidence starts empty (a person's abort now records it).
    assert_eq!(o.evidence.canary_requests, 150.0);
    assert_eq!(o.next.evidence, Default::default());
    s = o.next;
    assert_eq!(s.weight_bp, 5000);

    // The next step judges only what came after it began.
    let d = counts(&s, &enough, 20_000).decision;
    assert!(
        matches!(d, Decision::Hold { ref reason } if reason.contains("canary has 0 of 100")),
        "{d:?}"
    );
    let more = snap((20_000.0, 0.0), (5000.0, 0.0));
    let d = counts(&s, &more, 20_000).decision;
    assert!(
        matches!(d, Decision::Hold { ref reason } if reason.contains("approval")),
        "{d:?}"
    );
    s.approved = true;
    s = counts(&s, &more, 20_000).next;
    assert_eq!(s.weight_bp, 10_000);
    let all = snap((20_000.0, 0.0), (9000.0, 0.0));
    let o = counts(&s, &all, 30_000);
    assert!(
        matches!(o.decision, Decision::Complete { .. }),
        "{:?}",
        o.decision
    );
    assert_eq!((o.next.phase, o.next.weight_bp), (Phase::Completed, 10_000));
}

fn blue_green() -> RolloutSpec {
    RolloutSpec::from_yaml(
        "name: checkout\nstable: v1\ncanary: v2\nidentity: [{header: x-user-id}]\n\
         overrides: [{header: x-preview, values: [qa], version: v2}]\n\
         strategy: {blue_green: {keep_previous_for: 10m}}\n\
         analysis: {min_requests: 100, method: threshold, promote_on: no_alarm}\n",
    )
    .unwrap()
}

#[test]
fn blue_green_previews_then_switches_once_and_keeps_blue_ready() {
    let zero = snap((0.0, 0.0), (0.0, 0.0));
    let s = RolloutState::new(blue_green(), 0);
    assert_eq!(s.weight_bp, 0, "green gets no users before the switch");
    assert!(s.label().contains("previewing v2"), "{}", s.label());
    let s = counts(&s, &zero, 0).next;
    // Only the preview's requests reach green: it is judged on them.
    let few = snap((10_000.0, 0.0), (40.0, 0.0));
    let d = counts(&s, &few, 10_000).decision;
    assert!(
        matches!(d, Decision::Hold { ref reason } if reason.contains("canary has 40 of 100")),
        "{d:?}"
    );
    let enough = snap((10_000.0, 0.0), (150.0, 0.0));
    let o = counts(&s, &enough, 20_000);
    assert!(
        matches!(o.decision, Decision::Hold { ref reason } if reason.contains("approval")),
        "no sample-ratio hold at 0%, and the switch is gated: {:?}",
        o.decision
    );
    let mut s = o.next;
    s.approved = true;
    let o = counts(&s, &enough, 20_000);
    assert!(
        matches!(
            o.decision,
            Decision::StepUp {
                step: 1,
                weight_bp: 10_000,
                ..
            }
        ),
        "one step to 100%: {:?}",
        o.decision
    );
    let s = o.next;
    assert!(s.label().contains("v1 kept ready"), "{}", s.label());
    let later = snap((10_000.0, 0.0), (5000.0, 0.0));
    let d = counts(&s, &later, 80_000).decision;
    assert!(
        matches!(d, Decision::Hold { ref reason } if reason.contains("instant switch back")),
        "{d:?}"
    );
    // A bad green within the window switches back to blue at once.
    let bad = snap((10_000.0, 0.0), (5000.0, 900.0));
    let o = counts(&s, &bad, 80_000);
    assert!(
        matches!(o.decision, Decision::Abort { .. }),
        "{:?}",
        o.decision
    );
    assert_eq!(o.next.weight_bp, 0);
    assert!(o.next.label().contains("switched back to v1"));
    // A good one is done once the window is over.
    let o = counts(&s, &later, 20_000 + 600_000);
    assert!(
        matches!(o.decision, Decision::Complete { .. }),
        "{:?}",
        o.decision
    );
    assert!(o.next.label().contains("switched to v2"));
}

#[test]
fn a_shadow_step_judges_the_mirrored_requests_only() {
    let spec = RolloutSpec::from_yaml(
        "name: checkout\nstable: v1\ncanary: v2\nidentity: [{header: x-user-id}]\n\
         steps: [{percent: 0, traffic: shadow}, {percent: 10}]\n\
         analysis: {min_requests: 100, method: threshold, promote_on: no_alarm}\n",
    )
    .unwrap();
    let with_shadow = |users: (f64, f64), shadow: (f64, f64)| {
        let stable = if shadow.0 > 0.0 { 20_000.0 } else { 10_000.0 };
        let mut s = snap((stable, 0.0), users);
        let c = s.counts_mut("", &crate::counts::shadow_key("v2"));
        c.by_class.insert("2xx".into(), shadow.0);
        c.by_class.insert("5xx".into(), shadow.1);
        s
    };
    let s = RolloutState::new(spec, 0);
    assert!(s.label().contains("mirrors to v2"), "{}", s.label());
    let s = counts(&s, &with_shadow((0.0, 0.0), (0.0, 0.0)), 0).next;
    // Users' requests on v2 (a stray override, say) do not count...
    let d = counts(&s, &with_shadow((500.0, 0.0), (20.0, 0.0)), 5000).decision;
    assert!(
        matches!(d, Decision::Hold { ref reason } if reason.contains("canary has 20 of 100")),
        "{d:?}"
    );
    // ...the shadow's errors do.
    let o = counts(&s, &with_shadow((500.0, 0.0), (300.0, 100.0)), 10_000);
    assert!(
        matches!(o.decision, Decision::Abort { .. }),
        "{:?}",
        o.decision
    );
    let o = counts(&s, &with_shadow((0.0, 0.0), (300.0, 0.0)), 10_000);
    assert!(
        matches!(
            o.decision,
            Decision::StepUp {
                step: 1,
                weight_bp: 1000,
                ..
            }
        ),
        "{:?}",
        o.decision
    );
}

#[test]
fn aborts_to_zero_with_evidence() {
    let s = started(&snap((0.0, 0.0), (0.0, 0.0)));
    let bad = snap((10_000.0, 5.0), (900.0, 100.0));
    let o = counts(&s, &bad, 1000);
    assert!(
        matches!(o.decision, Decision::Abort { .. }),
        "{:?}",
        o.decision
    );
    assert_eq!(o.evidence.canary_errors, 100.0);
    assert_eq!((o.next.phase, o.next.weight_bp), (Phase::Aborted, 0));
}

#[test]
fn never_promotes_on_no_data() {
    let s = RolloutState::new(spec(), 0);
    for t in [0, 60_000, 3_600_000] {
        let o = counts(&s, &Snapshot::default(), t);
        assert!(
            matches!(o.decision, Decision::Hold { ref reason } if reason.contains("no counts reported")),
            "{:?}",
            o.decision
        );
        assert!(o.next.step_baseline.is_none());
    }
    let s = started(&snap((0.0, 0.0), (0.0, 0.0)));
    for t in [0, 60_000, 3_600_000] {
        let d = counts(&s, &Snapshot::default(), t).decision;
        assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
        let d = advance(&s, Observation::Lost("refused"), t, None).decision;
        assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
    }
}

#[test]
fn the_first_look_after_apply_ignores_what_envoy_counted_before() {
    // An earlier rollout of the same name left bad counts in Envoy.
    let old = snap((10_000.0, 5.0), (900.0, 100.0));
    let s = RolloutState::new(spec(), 0);
    let o = counts(&s, &old, 1000);
    assert!(
        matches!(o.decision, Decision::Hold { .. }),
        "{:?}",
        o.decision
    );
    assert_eq!(o.next.phase, Phase::Progressing);
    // Healthy traffic from then on is judged on its own.
    let later = snap((20_000.0, 5.0), (1100.0, 100.0));
    let o = counts(&o.next, &later, 20_000);
    assert!(
        matches!(o.decision, Decision::StepUp { .. }),
        "{:?}",
        o.decision
    );
}

#[test]
fn a_step_entered_without_counts_is_not_left_on_old_data() {
    // A person promotes to the last step while metrics are down.
    let s = started(&snap((0.0, 0.0), (0.0, 0.0)));
    let mut s = advance(&s, Observation::Lost("refused"), 1000, None).next;
    let d = next_step(&s, "promoted by alice: ok").unwrap();
    apply(&mut s, &d, None, 2000);
    let d = next_step(&s, "promoted by alice: ok").unwrap();
    apply(&mut s, &d, None, 2000);
    assert_eq!((s.step, s.weight_bp), (2, 10_000));
    // Metrics come back with everything Envoy ever counted: a baseline,
    // not the last step's data.
    let back = snap((50_000.0, 0.0), (5000.0, 0.0));
    let o = counts(&s, &back, 60_000);
    assert!(
        matches!(o.decision, Decision::Hold { ref reason } if reason.contains("baseline")),
        "{:?}",
        o.decision
    );
    let d = counts(&o.next, &back, 70_000).decision;
    assert!(
        matches!(d, Decision::Hold { ref reason } if reason.contains("canary has 0")),
        "{d:?}"
    );
    let done = snap((50_000.0, 0.0), (5200.0, 0.0));
    let d = counts(&o.next, &done, 80_000).decision;
    assert!(matches!(d, Decision::Complete { .. }), "{d:?}");
}

#[test]
fn losing_metrics_holds_or_aborts_as_the_spec_says() {
    let s = started(&snap((0.0, 0.0), (0.0, 0.0)));
    let o = advance(&s, Observation::Lost("timed out"), 10_000, None);
    let o = advance(&o.next, Observation::Lost("timed out"), 3_600_000, None);
    assert!(
        matches!(o.decision, Decision::Hold { ref reason } if reason.contains("metrics_loss: hold")),
        "{:?}",
        o.decision
    );
    let mut spec = spec();
    spec.analysis.metrics_loss = crate::spec::MetricsLoss {
        policy: MetricsLossPolicy::Abort,
        after: std::time::Duration::from_secs(60),
    };
    let s = RolloutState::new(spec, 0);
    let o = advance(&s, Observation::Lost("timed out"), 10_000, None);
    assert!(
        matches!(o.decision, Decision::Hold { ref reason } if reason.contains("abort after 1m")),
        "{:?}",
        o.decision
    );
    let o = advance(&o.next, Observation::Lost("timed out"), 69_000, None);
    assert!(
        matches!(o.decision, Decision::Hold { .. }),
        "{:?}",
        o.decision
    );
    let o = advance(&o.next, Observation::Lost("timed out"), 70_000, None);
    assert!(
        matches!(o.decision, Decision::Abort { .. }),
        "{:?}",
        o.decision
    );
    assert_eq!(o.next.weight_bp, 0);
    // Counts that come back in time reset the clock.
    let s = RolloutState::new(o.next.spec.clone(), 0);
    let o = advance(&s, Observation::Lost("x"), 10_000, None);
    let o = counts(&o.next, &snap((0.0, 0.0), (0.0, 0.0)), 20_000);
    let o = advance(&o.next, Observation::Lost("x"), 75_000, None);
    assert!(
        matches!(o.decision, Decision::Hold { .. }),
        "{:?}",
        o.decision
    );
}

#[test]
fn a_step_up_waits_for_lagging_proxies_but_an_abort_does_not() {
    let s = started(&snap((0.0, 0.0), (0.0, 0.0)));
    let ok = snap((10_000.0, 0.0), (150.0, 0.0));
    let o = advance(
        &s,
        Observation::Counts(&ok),
        20_000,
        Some("waiting for edge-2".into()),
    );
    assert!(
        matches!(o.decision, Decision::Hold { ref reason } if reason.contains("edge-2")),
        "{:?}",
        o.decision
    );
    let bad = snap((10_000.0, 5.0), (900.0, 100.0));
    let o = advance(
        &s,
        Observation::Counts(&bad),
        20_000,
        Some("waiting for edge-2".into()),
    );
    assert!(
        matches!(o.decision, Decision::Abort { .. }),
        "{:?}",
        o.decision
    );
}

fn evidence_spec(extra: &str) -> RolloutSpec {
    RolloutSpec::from_yaml(&format!(
        "name: checkout\nstable: v1\ncanary: v2\nidentity: [{{header: x-user-id}}]\n\
         steps:\n- {{percent: 10, pause: 10s}}\n- {{percent: 100}}\n\
         analysis: {{min_requests: 100, interval: 1s{extra}}}\n"
    ))
    .unwrap()
}

/// Feeds `looks` looks of `per_look` canary requests (and nine times as
/// many on the baseline), none failing, one a second from `from_ms`;
/// stops at the first decision that is not a hold. Counts are cumulative
/// from `base` canary requests.
fn feed_healthy(mut s: RolloutState, looks: u64, per_look: f64, from_ms: u64) -> Outcome {
    let base = s
        .analysed_at
        .as_ref()
        .map_or(0.0, |a| a.version("v2").requests());
    let mut o = None;
    for i in 1..=looks {
        let n = base + per_look * i as f64;
        let out = counts(&s, &snap((9.0 * n, 0.0), (n, 0.0)), from_ms + 1000 * i);
        s = out.next.clone();
        let done = !matches!(out.decision, Decision::Hold { .. });
        o = Some(out);
        if done {
            break;
        }
    }
    o.unwrap()
}

fn started_with(spec: RolloutSpec) -> RolloutState {
    let s = RolloutState::new(spec, 0);
    counts(&s, &snap((0.0, 0.0), (0.0, 0.0)), 0).next
}

#[test]
fn a_step_goes_up_on_evidence_of_safety_not_when_its_pause_is_over() {
    let s = started_with(evidence_spec(""));
    // 30 s at 20 canary requests a second: 600, past min_requests and the
    // pause, no error anywhere — yet too few to show the canary's error
    // rate is within 0.5 pp of the baseline's.
    let o = feed_healthy(s, 30, 20.0, 0);
    let Decision::Hold { reason } = &o.decision else {
        panic!("{:?}", o.decision)
    };
    assert!(
        reason.starts_with("waiting for evidence of safety: errors: canary at most +")
            && reason.contains(" pp over the baseline (bound)")
            && reason.contains("(bound), tolerance +0.50 pp — about ")
            && reason.contains("more canary requests, ~"),
        "{reason}"
    );
    let row = &o.evidence.safety[0];
    assert!(!row.within && row.bound.is_some_and(|b| b > 1.0), "{row:?}");
    // Enough traffic: the bound comes within, and the step up says so.
    let o = feed_healthy(o.next, 60, 40.0, 30_000);
    match &o.decision {
        Decision::StepUp { reason, .. } => {
            assert!(
                reason.starts_with("evidence of safety (errors +"),
                "{reason}"
            )
        }
        other => panic!("{other:?}: {:?}", o.evidence.safety),
    }
    assert!(o.evidence.safety.iter().all(|r| r.within));
}

#[test]
fn no_alarm_promotes_when_the_pause_is_over() {
    let s = started_with(evidence_spec(", promote_on: no_alarm"));
    let o = feed_healthy(s, 12, 20.0, 0);
    assert!(
        matches!(&o.decision, Decision::StepUp { reason, .. } if reason.starts_with("no alarm (promote_on: no_alarm)")),
        "{:?}",
        o.decision
    );
    // The bound is still shown, not within.
    assert!(!o.evidence.safety[0].within);
}

#[test]
fn an_inconclusive_step_holds_or_aborts_and_never_promotes() {
    let s = started_with(evidence_spec(", max_duration: 20s"));
    let o = feed_healthy(s, 25, 5.0, 0);
    let Decision::Hold { reason } = &o.decision else {
        panic!("{:?}", o.decision)
    };
    assert!(
        reason.starts_with("inconclusive at 10% after 20s (max_duration): waiting for evidence"),
        "{reason}"
    );
    assert!(super::advance::is_inconclusive(&o.next));
    let s = started_with(evidence_spec(", max_duration: 20s, on_inconclusive: abort"));
    let o = feed_healthy(s, 25, 5.0, 0);
    assert!(
        matches!(&o.decision, Decision::Abort { reason } if reason.starts_with("inconclusive at 10% after 20s (max_duration; on_inconclusive: abort)")),
        "{:?}",
        o.decision
    );
}

#[test]
fn gates_are_the_pre_step_hooks_and_confirm_promotion_before_everyone() {
    let spec = RolloutSpec::from_yaml(
        "name: checkout\nstable: v1\ncanary: v2\nidentity: [{header: x-user-id}]\n\
         overrides: [{header: x-qa, values: [yes], version: v2}]\n\
         steps:\n- {percent: 10}\n- {percent: 50}\n- {percent: 100}\n\
         hooks:\n- {name: it, kind: pre-step, url: 'http://x/'}\n- {name: ok, kind: confirm-promotion, url: 'http://x/'}\n\
         - {name: chk, kind: rollout, url: 'http://x/'}\n- {name: tell, kind: on-abort, url: 'http://x/'}\n",
    )
    .unwrap();
    let names = |s: &RolloutState| -> Vec<String> {
        super::gates::gates(s)
            .iter()
            .map(|h| h.name.clone())
            .collect()
    };
    let mut s = RolloutState::new(spec, 0);
    assert_eq!(names(&s), ["it"]);
    s.step = 1;
    assert_eq!(names(&s), ["it", "ok"]);
    s.step = 2;
    s.weight_bp = 10_000;
    assert!(names(&s).is_empty());
    let checks: Vec<&str> = super::gates::checks(&s)
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(checks, ["chk"]);
}
