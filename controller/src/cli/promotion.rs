//! `dimmer simulate --promotion` (how often a canary beyond its tolerance
//! reaches 100%, on evidence and on "no alarm", over pauses and traffic) and
//! the time-to-evidence estimate of `apply --dry-run --rps`.

use std::time::Duration;

use dimmer_decide::analysis::safety::{self, Boundary, RateCounts, RARE, SAFETY_ALPHA};
use dimmer_decide::simulate::{simulate_evidence, EvidenceScenario, EvidenceSignal};
use dimmer_decide::spec::{PromoteOn, RolloutSpec};

/// The signals of the table, each with its healthy canary, one at the
/// tolerance and one twice beyond it.
fn signals() -> Vec<(&'static str, [EvidenceSignal; 3])> {
    // 1% baseline errors, tolerance +0.5 pp (the default).
    let e = |c: f64| EvidenceSignal::Errors {
        baseline: 0.01,
        canary: c,
    };
    // 5% of requests slower than 250 ms, tolerance +1 pp (the default).
    let l = |c: f64| EvidenceSignal::Slow {
        baseline: 0.05,
        canary: c,
    };
    // 5% conversion, tolerance 10% relative.
    let c = |c: f64| EvidenceSignal::Conversion {
        baseline: 0.05,
        canary: c,
        tolerance_percent: 10.0,
    };
    // Order value (log-normal, mean 50 on 5% of requests), tolerance 10%.
    let m = |c: f64| EvidenceSignal::OrderValue {
        baseline: 50.0,
        canary: c,
        tolerance_percent: 10.0,
    };
    vec![
        ("errors", [e(0.01), e(0.015), e(0.02)]),
        ("latency", [l(0.05), l(0.06), l(0.07)]),
        ("conversion", [c(0.05), c(0.045), c(0.04)]),
        ("order val.", [m(50.0), m(45.0), m(40.0)]),
    ]
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn time(t: Option<f64>) -> String {
    t.map_or("–".into(), |s| {
        humantime::format_duration(Duration::from_secs(s as u64)).to_string()
    })
}

/// Prints, per signal (errors, the share slower than 250 ms, a ratio
/// and a mean metric), pause and traffic: P(reached 100%) for a canary
/// twice the tolerance and at it, and a healthy canary's median time to
/// 100%, on evidence beside no_alarm, each over `runs` rollouts of steps
/// 10% → 50% → 100% within `horizon_s`.
pub fn table(runs: usize, horizon_s: u64, seed: u64) -> anyhow::Result<()> {
    println!(
        "steps 10% → 50% → 100%, looks every 5 s, {runs} rollouts per cell, horizon {}",
        time(Some(horizon_s as f64))
    );
    println!(
        "{:<10} {:>6} {:>6} | {:>17} | {:>17} | {:>23}",
        "signal", "pause", "req/s", "P(100%) 2x tol", "P(100%) at tol", "healthy: median to 100%"
    );
    println!(
        "{:<10} {:>6} {:>6} | {:>8} {:>8} | {:>8} {:>8} | {:>11} {:>11}",
        "", "", "", "evidence", "no_alarm", "evidence", "no_alarm", "evidence", "no_alarm"
    );
    for (name, canaries) in signals() {
        for pause_s in [10u64, 60, 600] {
            for rps in [10.0, 100.0, 1000.0] {
                let mut cells = Vec::new();
                for signal in canaries {
                    for promote_on in ["evidence", "no_alarm"] {
                        let r = simulate_evidence(&EvidenceScenario {
                            rps,
                            pause_s,
                            steps: vec![10.0, 50.0, 100.0],
                            signal,
                            interval_s: 5,
                            horizon_s,
                            runs,
                            seed,
                            promote_on,
                        })?;
                        cells.push(r);
                    }
                }
                println!(
                    "{:<10} {:>6} {:>6} | {:>8} {:>8} | {:>8} {:>8} | {:>11} {:>11}",
                    name,
                    time(Some(pause_s as f64)),
                    rps,
                    pct(cells[4].reached_100),
                    pct(cells[5].reached_100),
                    pct(cells[2].reached_100),
                    pct(cells[3].reached_100),
                    format!(
                        "{} ({})",
                        time(cells[0].median_to_100_s),
                        pct(cells[0].reached_100)
                    ),
                    time(cells[1].median_to_100_s),
                );
            }
        }
    }
    Ok(())
}

/// Per step, about when a healthy canary (both versions at
/// `baseline_error`, nothing slow) shows its error rate within the
/// tolerance at `rps`, counting the steps before it; and a warning when a
/// step's `max_duration` is shorter.
pub fn estimate(spec: &RolloutSpec, rps: f64, baseline_error: f64) {
    let a = &spec.analysis;
    if a.promote_on != PromoteOn::Evidence {
        return;
    }
    println!(
        "\nAt {rps} requests/s and {:.2}% errors in both versions, evidence that the canary's errors are within +{} pp of the baseline's:",
        100.0 * baseline_error,
        a.max_rate_increase_pp
    );
    let boundary = Boundary::excess(a.max_rate_ratio, a.max_rate_increase_pp / 100.0);
    let mut counts = RateCounts::default();
    let need = (1.0 / SAFETY_ALPHA).ln();
    for s in spec.steps.iter().filter(|s| s.percent < 100.0) {
        let w = s.percent / 100.0;
        let add = |c: &mut RateCounts, secs: f64| {
            let (nc, nb) = (rps * w * secs, rps * (1.0 - w) * secs);
            c.add(nc * baseline_error, nc, nb * baseline_error, nb);
        };
        let ok = |c: &RateCounts| safety::ln_e(c, &boundary, RARE, 1.0) >= need;
        let pause = s.pause.as_secs_f64().max(a.interval.as_secs_f64());
        let mut at = counts;
        add(&mut at, pause);
        let took = if ok(&at) || w <= 0.0 {
            Some(pause)
        } else {
            // Doubling, then halving, on the time spent in this step.
            let mut hi = pause * 2.0;
            let reached = loop {
                let mut c = counts;
                add(&mut c, hi);
                if ok(&c) {
                    break true;
                }
                hi *= 2.0;
                if hi > 3.0e7 {
                    break false;
                }
            };
            reached.then(|| {
                let mut lo = hi / 2.0;
                for _ in 0..30 {
                    let mid = 0.5 * (lo + hi);
                    let mut c = counts;
                    add(&mut c, mid);
                    if ok(&c) {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                hi
            })
        };
        let max = s.max_duration.or(a.max_duration);
        match took {
            Some(t) => {
                add(&mut counts, t);
                let short = max.filter(|m| m.as_secs_f64() < t);
                println!(
                    "  at {:>5}%: about {} in the step{}",
                    s.percent,
                    time(Some(t.ceil())),
                    short.map_or(String::new(), |m| format!(
                        " — warning: its max_duration ({}) is shorter: it would end inconclusive",
                        humantime::format_duration(m)
                    )),
                );
            }
            None => {
                println!("  at {:>5}%: not within a year at this traffic", s.percent);
                return;
            }
        }
    }
}
