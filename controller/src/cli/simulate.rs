//! `dimmer simulate` and the estimate of `apply --dry-run --rps`.

use std::time::Duration;

use dimmer_decide::simulate::{simulate, Scenario};
use dimmer_decide::spec::RolloutSpec;

#[derive(clap::Args)]
pub struct SimArgs {
    /// Requests per second, both versions together.
    #[arg(long, default_value_t = 200.0)]
    rps: f64,
    /// The canary's share of traffic (0.10 = 10%).
    #[arg(long, default_value_t = 0.10)]
    split: f64,
    #[arg(long, default_value_t = 0.001)]
    baseline_error: f64,
    #[arg(long, default_value_t = 0.002)]
    canary_error: f64,
    #[arg(long, default_value_t = 2000)]
    runs: usize,
    /// Seconds each synthetic rollout lasts unless aborted.
    #[arg(long, default_value_t = 3600.0)]
    horizon: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bursty canary errors: Gamma shape of a per-scrape multiplier (mean 1).
    #[arg(long)]
    burst_shape: Option<f64>,
    /// Seconds between scrapes.
    #[arg(long, default_value_t = 5.0)]
    interval: f64,
    /// The sequential tests' α.
    #[arg(long, default_value_t = 0.001)]
    alpha: f64,
    /// ρ0: the canary may have up to this many times the baseline's error rate.
    #[arg(long, default_value_t = 1.0)]
    max_rate_ratio: f64,
    /// Reference: canary error rate per minute above which a minute fails.
    #[arg(long, default_value_t = 0.01)]
    argo_threshold: f64,
    /// Reference: failed minutes allowed before it aborts.
    #[arg(long, default_value_t = 3)]
    argo_failure_limit: u32,
    /// One JSON object per detector.
    #[arg(long)]
    json: bool,
    /// Judge the team's own metric or the cohort's mix instead of errors:
    /// conversion (a ratio), order-value (a log-normal mean) or mix.
    #[arg(long, value_enum)]
    signal: Option<SignalArg>,
    /// With --signal: the canary's relative drop (conversion, order value),
    /// or how much rarer one value is among its users (mix; 0.5 = half). 0: A/A.
    #[arg(long, default_value_t = 0.1)]
    effect: f64,
    /// With --signal: the baseline's conversion (orders per checkout).
    #[arg(long, default_value_t = 0.05)]
    conversion: f64,
    /// With --signal order-value: mean order value and σ of its log.
    #[arg(long, default_value_t = 50.0)]
    order_mean: f64,
    #[arg(long, default_value_t = 0.8)]
    sigma: f64,
    /// With --signal mix: the value's share of the baseline's requests.
    #[arg(long, default_value_t = 0.2)]
    value_share: f64,
    /// With --signal: values per batch of the metric's test (min_count).
    #[arg(long, default_value_t = 30)]
    min_count: u64,
    /// With --signal, the reference: a minute fails when the canary is
    /// worse by more than this, relatively.
    #[arg(long, default_value_t = 0.05)]
    reference_threshold: f64,
    /// Instead: how often a canary at or twice beyond its tolerance reaches
    /// 100%, on evidence of safety and on "no alarm", over pauses (10 s to
    /// 10 min) and traffic (10 to 1,000 requests/s), with a healthy
    /// canary's median time to 100%; `--runs` rollouts per cell.
    #[arg(long)]
    promotion: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SignalArg {
    Conversion,
    OrderValue,
    Mix,
}

/// How long each step of `spec` would take to catch a 2× error regression
/// at `rps`, by simulation through the spec's own analysis settings.
pub fn estimate(spec: &RolloutSpec, rps: f64, baseline_error: f64) {
    println!(
        "\nAt {rps} requests/s and {:.2}% baseline errors, a canary with twice the errors would be caught:",
        100.0 * baseline_error
    );
    for s in spec
        .steps
        .iter()
        .filter(|s| s.percent > 0.0 && s.percent < 100.0)
    {
        let scenario = Scenario {
            rps,
            split: s.percent / 100.0,
            baseline_error,
            canary_error: 2.0 * baseline_error,
            runs: 300,
            horizon_s: 3600.0,
            seed: 1,
            burst_shape: None,
            interval_s: spec.analysis.interval.as_secs_f64(),
            analysis: spec.analysis.clone(),
            argo_threshold: 0.01,
            argo_failure_limit: 3,
        };
        let r = &simulate(&scenario)[0];
        match r.median_ttd_s {
            Some(m) => println!(
                "  at {:>5}%: caught in {:.0}% of runs within the hour; median time {}",
                s.percent,
                100.0 * r.detected,
                humantime::format_duration(Duration::from_secs(m as u64)),
            ),
            None => println!(
                "  at {:>5}%: not caught within the hour at this traffic",
                s.percent
            ),
        }
    }
}

/// `NAME=RATE` or `NAME=MEAN:PER_REQUEST`, checked against the spec.
fn parse_expect<'a>(
    spec: &'a RolloutSpec,
    text: &str,
) -> anyhow::Result<(&'a dimmer_decide::spec::metric::MetricCheck, f64, f64)> {
    use dimmer_decide::spec::metric::MetricKind;
    let (name, value) = text.split_once('=').ok_or_else(|| {
        anyhow::anyhow!("--expect {text}: write NAME=RATE or NAME=MEAN:PER_REQUEST")
    })?;
    let m = spec
        .analysis
        .metrics
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| anyhow::anyhow!("--expect {text}: the spec has no metric {name:?}"))?;
    let number = |s: &str| {
        s.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| anyhow::anyhow!("--expect {text}: {s:?} is not a positive number"))
    };
    match (m.kind, value.split_once(':')) {
        (MetricKind::Ratio, None) => {
            let rate = number(value)?;
            if rate >= 1.0 {
                anyhow::bail!("--expect {text}: a ratio is below 1");
            }
            Ok((m, rate, 1.0))
        }
        (MetricKind::Mean, Some((mean, per))) => Ok((m, number(mean)?, number(per)?)),
        (MetricKind::Mean, None) => {
            anyhow::bail!("--expect {text}: a mean needs MEAN:PER_REQUEST (values per request)")
        }
        (MetricKind::Ratio, Some(_)) => anyhow::bail!("--expect {text}: a ratio takes one number"),
        (MetricKind::Gauge, _) => {
            anyhow::bail!("--expect {text}: {name} is a gauge, not a comparison")
        }
    }
}

/// How long each step of `spec` would take to catch `harm` (relative) in
/// each metric named by `expects`, by simulation through the same test:
/// ratios as Bernoulli trials, means as log-normal values (σ of the log 0.8).
pub fn estimate_metrics(
    spec: &RolloutSpec,
    rps: f64,
    expects: &[String],
    harm: f64,
) -> anyhow::Result<()> {
    use dimmer_decide::simulate::{simulate_signal, Signal, SignalScenario};
    use dimmer_decide::spec::metric::MetricKind;
    for text in expects {
        let (m, value, per_request) = parse_expect(spec, text)?;
        println!(
            "\nAt {rps} requests/s, a canary {:.0}% worse in {} would be caught:",
            100.0 * harm,
            m.name
        );
        for s in spec
            .steps
            .iter()
            .filter(|s| s.percent > 0.0 && s.percent < 100.0)
        {
            let ratio = m.kind == MetricKind::Ratio;
            let scenario = SignalScenario {
                signal: if ratio {
                    Signal::Conversion
                } else {
                    Signal::OrderValue
                },
                rps,
                split: s.percent / 100.0,
                conversion: if ratio { value } else { per_request.min(1.0) },
                value_share: 0.2,
                order_mean: value,
                sigma: 0.8,
                effect: harm,
                runs: 200,
                horizon_s: 3600.0,
                interval_s: spec.analysis.interval.as_secs_f64(),
                seed: 1,
                alpha: spec.analysis.alpha,
                min_count: m.min_count,
                reference_threshold: 0.3,
                reference_failure_limit: 3,
                tolerance: m.tolerance,
            };
            let r = &simulate_signal(&scenario)[0];
            match r.median_ttd_s {
                Some(t) => println!(
                    "  at {:>5}%: caught in {:.0}% of runs within the hour; median time {}",
                    s.percent,
                    100.0 * r.detected,
                    humantime::format_duration(Duration::from_secs(t as u64)),
                ),
                None => println!(
                    "  at {:>5}%: not caught within the hour at this traffic",
                    s.percent
                ),
            }
        }
    }
    Ok(())
}

fn simulate_signal_cmd(a: &SimArgs, signal: SignalArg) -> anyhow::Result<()> {
    use dimmer_decide::simulate::{simulate_signal, Signal, SignalScenario};
    let signal = match signal {
        SignalArg::Conversion => Signal::Conversion,
        SignalArg::OrderValue => Signal::OrderValue,
        SignalArg::Mix => Signal::Mix,
    };
    let s = SignalScenario {
        signal,
        rps: a.rps,
        split: a.split,
        conversion: a.conversion,
        value_share: a.value_share,
        order_mean: a.order_mean,
        sigma: a.sigma,
        effect: a.effect,
        runs: a.runs,
        horizon_s: a.horizon,
        interval_s: a.interval,
        seed: a.seed,
        alpha: a.alpha,
        min_count: a.min_count,
        reference_threshold: a.reference_threshold,
        reference_failure_limit: a.argo_failure_limit,
        tolerance: Default::default(),
    };
    let results = simulate_signal(&s);
    if a.json {
        for r in &results {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "{} runs, {} rps, canary {}% of traffic, {:?} effect {}, {} s horizon, seed {}",
        a.runs,
        a.rps,
        100.0 * a.split,
        signal,
        a.effect,
        a.horizon,
        a.seed
    );
    let opt = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.0} s"));
    for r in &results {
        println!(
            "  {:<52} stopped {:>6.2}%{}  median {:>7}  p90 {:>7}",
            r.detector,
            100.0 * r.detected,
            r.false_alarms_per_hour.map_or(String::new(), |f| format!(
                " ({:.3}% per rollout-hour)",
                100.0 * f
            )),
            opt(r.median_ttd_s),
            opt(r.p90_ttd_s),
        );
    }
    Ok(())
}

pub fn simulate_cmd(a: SimArgs) -> anyhow::Result<()> {
    if a.promotion {
        return super::promotion::table(a.runs, a.horizon as u64, a.seed);
    }
    if let Some(signal) = a.signal {
        return simulate_signal_cmd(&a, signal);
    }
    let analysis = dimmer_decide::spec::Analysis {
        alpha: a.alpha,
        max_rate_ratio: a.max_rate_ratio,
        interval: Duration::from_secs_f64(a.interval),
        ..Default::default()
    };
    let scenario = Scenario {
        rps: a.rps,
        split: a.split,
        baseline_error: a.baseline_error,
        canary_error: a.canary_error,
        runs: a.runs,
        horizon_s: a.horizon,
        seed: a.seed,
        burst_shape: a.burst_shape,
        interval_s: a.interval,
        analysis,
        argo_threshold: a.argo_threshold,
        argo_failure_limit: a.argo_failure_limit,
    };
    let results = simulate(&scenario);
    if a.json {
        for r in &results {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "{} runs, {} rps, canary {}% of traffic, errors {}% baseline vs {}% canary{}, {} s horizon, seed {}",
        a.runs,
        a.rps,
        100.0 * a.split,
        100.0 * a.baseline_error,
        100.0 * a.canary_error,
        a.burst_shape.map_or(String::new(), |k| format!(", bursty canary errors (shape {k})")),
        a.horizon,
        a.seed
    );
    let opt = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.0} s"));
    for r in &results {
        println!(
            "  {:<44} detected {:>6.2}%{}  median {:>7}  p90 {:>7}  bad requests served {:.1}",
            r.detector,
            100.0 * r.detected,
            r.fpr.map_or(String::new(), |f| format!(
                " (false alarms {:.2}%)",
                100.0 * f
            )),
            opt(r.median_ttd_s),
            opt(r.p90_ttd_s),
            r.bad_requests_served
        );
    }
    Ok(())
}
