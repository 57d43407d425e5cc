//! `dimmer simulate` and the estimate of `apply --dry-run --rps`.

use std::time::Duration;

use dimmer::simulate::{simulate, Scenario};
use dimmer::spec::RolloutSpec;

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

pub fn simulate_cmd(a: SimArgs) -> anyhow::Result<()> {
    let analysis = dimmer::spec::Analysis {
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
