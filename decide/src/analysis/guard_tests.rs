//! Every documented guard, under every method: each scenario trips exactly
//! one guard, and each method must name it.

use super::*;
use crate::counts::{VersionCounts, INF_BOUND};
use crate::spec::{Analysis, Method, Slo};

const BOUNDS: [f64; 7] = [10.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, INF_BOUND];

/// One interval of one version: `ok` and `errors` requests, of which `slow`
/// took `slow_ms` and the rest 5 ms.
fn vc(ok: f64, errors: f64, slow: f64, slow_ms: f64) -> VersionCounts {
    let mut c = VersionCounts::default();
    c.by_class.insert("2xx".into(), ok);
    c.by_class.insert("5xx".into(), errors);
    let n = ok + errors;
    c.latency = BOUNDS
        .iter()
        .map(|&le| (le, if le >= slow_ms { n } else { n - slow }))
        .collect();
    c
}

fn add(total: &mut VersionCounts, v: &VersionCounts) {
    for (k, x) in &v.by_class {
        *total.by_class.entry(k.clone()).or_default() += x;
    }
    if total.latency.is_empty() {
        total.latency = v.latency.iter().map(|&(le, _)| (le, 0.0)).collect();
    }
    for (t, (_, x)) in total.latency.iter_mut().zip(&v.latency) {
        t.1 += x;
    }
}

struct Scenario {
    analysis: Analysis,
    slo: Option<Slo>,
    weight: f64,
    canary: VersionCounts,
    baseline: VersionCounts,
    intervals: usize,
}

/// Feeds identical intervals 5 s apart through the method, as the engine
/// does; returns the first failure or the last verdict.
fn run(method: Method, s: &Scenario) -> Verdict {
    let a = Analysis {
        method,
        ..s.analysis.clone()
    };
    let mut state = AnalysisState::for_spec(&a);
    let (mut c_total, mut b_total) = (VersionCounts::default(), VersionCounts::default());
    let mut last = Verdict::Insufficient(String::new(), Evidence::default());
    for i in 1..=s.intervals {
        add(&mut c_total, &s.canary);
        add(&mut b_total, &s.baseline);
        let input = Input {
            analysis: &a,
            slo: s.slo.as_ref(),
            step: Counts {
                canary: &c_total,
                baseline: Some(&b_total),
            },
            interval: Counts {
                canary: &s.canary,
                baseline: Some(&s.baseline),
            },
            weight: s.weight,
            now_ms: 5000 * i as u64,
        };
        state.feed(&input);
        last = analyzer_for(method).judge(&input, &state);
        if matches!(last, Verdict::Fail(..)) {
            break;
        }
    }
    last
}

fn base(weight: f64, canary: VersionCounts, baseline: VersionCounts) -> Scenario {
    Scenario {
        analysis: Analysis {
            min_requests: 100,
            ..Analysis::default()
        },
        slo: None,
        weight,
        canary,
        baseline,
        intervals: 60,
    }
}

fn healthy() -> Scenario {
    base(0.1, vc(100.0, 0.0, 0.0, 0.0), vc(899.0, 1.0, 0.0, 0.0))
}

fn too_little_traffic() -> Scenario {
    Scenario {
        intervals: 3,
        ..base(0.1, vc(10.0, 0.0, 0.0, 0.0), vc(90.0, 0.0, 0.0, 0.0))
    }
}

/// 3% errors against 0.1%: under the 5% ceiling, far above the baseline.
fn worse_errors() -> Scenario {
    base(0.1, vc(97.0, 3.0, 0.0, 0.0), vc(899.0, 1.0, 0.0, 0.0))
}

/// A tenth of the canary's requests take 400 ms; the baseline's none.
fn slower() -> Scenario {
    base(0.1, vc(100.0, 0.0, 10.0, 400.0), vc(900.0, 0.0, 0.0, 0.0))
}

/// Both arms fail 20%: no regression, but far above a 5% ceiling.
fn both_over_error_ceiling() -> Scenario {
    base(0.5, vc(400.0, 100.0, 0.0, 0.0), vc(400.0, 100.0, 0.0, 0.0))
}

/// Both arms have a tenth of requests at 400 ms: no regression, but a p99
/// ceiling of 300 ms is broken.
fn both_over_latency_ceiling() -> Scenario {
    let mut s = base(
        0.5,
        vc(500.0, 0.0, 50.0, 400.0),
        vc(500.0, 0.0, 50.0, 400.0),
    );
    s.analysis.latency.max_ms = Some(300.0);
    s
}

/// Both arms fail 2%: under the ceiling, no regression, but a 99.9% SLO's
/// budget burns 20× too fast.
fn burning_the_budget() -> Scenario {
    let mut s = base(0.5, vc(490.0, 10.0, 0.0, 0.0), vc(490.0, 10.0, 0.0, 0.0));
    s.slo = Some(Slo {
        objective_percent: 99.9,
        max_burn_rate: 14.4,
    });
    s
}

/// Configured 10%, observed 2%: a proxy on old weights, say.
fn share_off() -> Scenario {
    base(0.1, vc(20.0, 0.0, 0.0, 0.0), vc(980.0, 0.0, 0.0, 0.0))
}

fn expect_fail(v: Verdict, needle: &str) {
    match v {
        Verdict::Fail(why, _) => assert!(why.contains(needle), "{needle:?} not in {why:?}"),
        other => panic!("expected a failure naming {needle:?}, got {other:?}"),
    }
}

fn expect_hold(v: Verdict, needle: &str) {
    match v {
        Verdict::Insufficient(why, _) => {
            assert!(why.contains(needle), "{needle:?} not in {why:?}")
        }
        other => panic!("expected a hold naming {needle:?}, got {other:?}"),
    }
}

macro_rules! every_guard {
    ($module:ident, $method:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn a_healthy_canary_passes() {
                assert!(matches!(run($method, &healthy()), Verdict::Pass(_)));
            }

            #[test]
            fn min_requests_holds() {
                expect_hold(run($method, &too_little_traffic()), "canary has 30 of 100");
            }

            #[test]
            fn error_rate_against_the_baseline_aborts() {
                expect_fail(run($method, &worse_errors()), "vs baseline");
            }

            #[test]
            fn latency_against_the_baseline_aborts() {
                let v = run($method, &slower());
                expect_fail(v.clone(), "canary");
                if let Verdict::Fail(why, _) = v {
                    assert!(why.contains("slow") || why.contains("latency"), "{why}");
                    assert!(!why.contains("ceiling"), "{why}");
                }
            }

            #[test]
            fn the_error_ceiling_aborts_when_both_fail_alike() {
                expect_fail(
                    run($method, &both_over_error_ceiling()),
                    "above the ceiling of 5%",
                );
            }

            #[test]
            fn the_latency_ceiling_aborts_when_both_are_slow_alike() {
                expect_fail(
                    run($method, &both_over_latency_ceiling()),
                    "above the ceiling of 300 ms",
                );
            }

            #[test]
            fn the_slo_burn_rate_aborts() {
                expect_fail(
                    run($method, &burning_the_budget()),
                    "burns the error budget",
                );
            }

            #[test]
            fn a_sample_ratio_mismatch_holds() {
                expect_hold(run($method, &share_off()), "sample ratio mismatch");
            }
        }
    };
}

every_guard!(sequential, Method::Sequential);
every_guard!(threshold, Method::Threshold);

#[test]
fn one_constructor_builds_every_test_the_spec_asks_for() {
    let mut a = Analysis::default();
    a.latency.max_ms = Some(800.0);
    a.latency.bounds_ms = vec![100.0, 250.0, 1000.0];
    let s = AnalysisState::for_spec(&a);
    assert_eq!(s.latency.len(), 3);
    assert!((s.error_ceiling.p0 - 0.05).abs() < 1e-12);
    assert_eq!(s.latency_ceiling.as_ref().map(|(m, _)| *m), Some(800.0));
    assert!(AnalysisState::for_spec(&Analysis::default())
        .latency_ceiling
        .is_none());
}

#[test]
fn the_burn_history_stays_bounded_and_keeps_its_totals() {
    let a = Analysis::default();
    let mut state = AnalysisState::for_spec(&a);
    let (c, b) = (vc(10.0, 1.0, 0.0, 0.0), vc(10.0, 0.0, 0.0, 0.0));
    for i in 0..(3 * state::MAX_HISTORY) {
        state.feed(&Input {
            analysis: &a,
            slo: None,
            step: Counts {
                canary: &c,
                baseline: Some(&b),
            },
            interval: Counts {
                canary: &c,
                baseline: Some(&b),
            },
            weight: 0.5,
            now_ms: i as u64,
        });
    }
    assert!(state.canary_history.len() <= state::MAX_HISTORY);
    let n: f64 = state.canary_history.iter().map(|x| x.1).sum();
    assert_eq!(n, 11.0 * (3 * state::MAX_HISTORY) as f64);
}
