//! Anytime-valid tests on counts: mixture likelihood-ratio e-processes.
//!
//! Each interval, condition on the interval's total events `t` (errors, or
//! requests slower than a bound) across both arms. If the canary's event rate
//! is ρ times the baseline's and the canary had a share π of the requests,
//! the canary's events are Binomial(t, θ(ρ)) with θ(ρ) = ρπ / (ρπ + 1 − π).
//! Under H0 (ρ ≤ ρ0) the product over intervals of LR(ρk : ρ0) is a
//! nonnegative supermartingale for every ρk > ρ0, and so is their average;
//! by Ville's inequality it exceeds 1/α with probability at most α, however
//! often it is looked at. Conditioning on `t` and π copes with the split
//! changing between steps and with load rising and falling in both arms.
//!
//! Each interval's likelihood ratio is capped (`min(LR, c)`): that keeps the
//! supermartingale property (the capped ratio is never larger) and stops one
//! burst of errors in one arm — which breaks the Binomial model — from
//! deciding alone. `dimmer simulate` measures what the cap costs and buys.

use serde::{Deserialize, Serialize};

/// Rate ratios of the mixture, as multiples of ρ0.
pub const GRID: [f64; 8] = [1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0];

/// Per-interval cap on each likelihood ratio, as a natural log: 100, chosen
/// by `dimmer simulate` (bench/RESULTS.md) between speed and burst tolerance.
pub const LN_CAP: f64 = 4.605_170_185_988_092; // ln 100

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateRatioTest {
    /// The allowed increase: H0 is "canary rate ≤ ρ0 × baseline rate".
    pub rho0: f64,
    /// log of the running product, per grid point.
    pub ln_products: Vec<f64>,
    /// Events seen in each arm so far, for the evidence.
    pub canary_events: f64,
    pub total_events: f64,
    pub intervals: u64,
}

fn theta(rho: f64, pi: f64) -> f64 {
    rho * pi / (rho * pi + 1.0 - pi)
}

impl RateRatioTest {
    pub fn new(rho0: f64) -> Self {
        RateRatioTest {
            rho0: rho0.max(1.0),
            ln_products: vec![0.0; GRID.len()],
            canary_events: 0.0,
            total_events: 0.0,
            intervals: 0,
        }
    }

    /// One interval: `x` canary events out of `t` in both arms, the canary
    /// having had share `pi` of the requests. Intervals without events, or
    /// where one arm had no requests, carry no information and change nothing.
    pub fn update(&mut self, x: f64, t: f64, pi: f64) {
        let usable = t > 0.0 && pi > 0.0 && pi < 1.0 && x.is_finite() && t.is_finite();
        if !usable {
            return;
        }
        let x = x.clamp(0.0, t);
        let th0 = theta(self.rho0, pi);
        for (k, ln_p) in GRID.iter().zip(self.ln_products.iter_mut()) {
            let th = theta(self.rho0 * k, pi);
            let ln_lr = x * (th / th0).ln() + (t - x) * ((1.0 - th) / (1.0 - th0)).ln();
            *ln_p += ln_lr.min(LN_CAP);
        }
        self.canary_events += x;
        self.total_events += t;
        self.intervals += 1;
    }

    /// The mixture e-value: the average over the grid of the running products.
    pub fn e_value(&self) -> f64 {
        let n = self.ln_products.len().max(1) as f64;
        self.ln_products.iter().map(|l| l.exp()).sum::<f64>() / n
    }
}

/// An absolute ceiling on the canary's own error rate: H0 "rate ≤ p0"
/// against rates `p0·r` for `r` in [`CEILING_GRID`], on the canary's
/// requests per interval, capped like [`RateRatioTest`]. Noise in a small
/// sample cannot trip it the way a fixed threshold on a ratio would.
pub const CEILING_GRID: [f64; 3] = [1.5, 2.0, 3.0];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CeilingTest {
    pub p0: f64,
    pub ln_products: Vec<f64>,
}

impl CeilingTest {
    pub fn new(p0: f64) -> Self {
        CeilingTest {
            p0: p0.clamp(1e-9, 1.0 - 1e-9),
            ln_products: vec![0.0; CEILING_GRID.len()],
        }
    }

    /// `x` failed of the canary's `n` requests in an interval.
    pub fn update(&mut self, x: f64, n: f64) {
        let usable = n > 0.0 && x.is_finite() && n.is_finite();
        if !usable {
            return;
        }
        let x = x.clamp(0.0, n);
        for (r, ln_p) in CEILING_GRID.iter().zip(self.ln_products.iter_mut()) {
            let q = (self.p0 * r).min(1.0 - 1e-9);
            let ln_lr = x * (q / self.p0).ln() + (n - x) * ((1.0 - q) / (1.0 - self.p0)).ln();
            *ln_p += ln_lr.min(LN_CAP);
        }
    }

    pub fn e_value(&self) -> f64 {
        let n = self.ln_products.len().max(1) as f64;
        self.ln_products.iter().map(|l| l.exp()).sum::<f64>() / n
    }
}

/// Sample ratio mismatch: is the canary's share of requests what its weight
/// says? A two-sided mixture over shares `w·r` for `r` in [`SRM_GRID`], on
/// requests per interval, capped like [`RateRatioTest`].
pub const SRM_GRID: [f64; 4] = [0.5, 0.8, 1.25, 2.0];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareTest {
    pub ln_products: Vec<f64>,
    pub canary: f64,
    pub total: f64,
}

impl Default for ShareTest {
    fn default() -> Self {
        ShareTest {
            ln_products: vec![0.0; SRM_GRID.len()],
            canary: 0.0,
            total: 0.0,
        }
    }
}

impl ShareTest {
    /// `n_c` canary requests of `n`, with the canary configured at share `w`.
    pub fn update(&mut self, n_c: f64, n: f64, w: f64) {
        let usable = n > 0.0 && w > 0.0 && w < 1.0 && n_c.is_finite();
        if !usable {
            return;
        }
        let x = n_c.clamp(0.0, n);
        for (r, ln_p) in SRM_GRID.iter().zip(self.ln_products.iter_mut()) {
            let q = (w * r).clamp(1e-9, 1.0 - 1e-9);
            let ln_lr = x * (q / w).ln() + (n - x) * ((1.0 - q) / (1.0 - w)).ln();
            *ln_p += ln_lr.min(LN_CAP);
        }
        self.canary += x;
        self.total += n;
    }

    pub fn e_value(&self) -> f64 {
        let n = self.ln_products.len().max(1) as f64;
        self.ln_products.iter().map(|l| l.exp()).sum::<f64>() / n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statrs::distribution::{Binomial, Discrete};

    /// The e-value, checked against Binomial probabilities from statrs: for
    /// each grid point, the product over intervals of
    /// P(x | t, θ(ρk)) / P(x | t, θ(ρ0)), averaged over the grid. Counts are
    /// small enough that the per-interval cap never binds.
    #[test]
    fn e_value_matches_binomial_likelihoods_computed_independently() {
        let rho0 = 1.0;
        let intervals = [(1u64, 3u64, 0.1), (0, 2, 0.1), (2, 4, 0.2), (1, 1, 0.05)];
        let mut test = RateRatioTest::new(rho0);
        for (x, t, pi) in intervals {
            test.update(x as f64, t as f64, pi);
        }
        let share = |rho: f64, pi: f64| rho * pi / (rho * pi + 1.0 - pi);
        let expected = GRID
            .iter()
            .map(|k| {
                intervals
                    .iter()
                    .map(|&(x, t, pi)| {
                        let alt = Binomial::new(share(rho0 * k, pi), t).unwrap().ln_pmf(x);
                        let null = Binomial::new(share(rho0, pi), t).unwrap().ln_pmf(x);
                        alt - null
                    })
                    .sum::<f64>()
                    .exp()
            })
            .sum::<f64>()
            / GRID.len() as f64;
        assert!(
            (test.e_value() / expected - 1.0).abs() < 1e-9,
            "{} vs {expected}",
            test.e_value()
        );
        assert_eq!(test.intervals, 4);
        assert_eq!((test.canary_events, test.total_events), (4.0, 10.0));
    }

    #[test]
    fn evidence_grows_for_a_worse_canary_and_shrinks_for_an_equal_one() {
        let mut bad = RateRatioTest::new(1.0);
        let mut same = RateRatioTest::new(1.0);
        for _ in 0..50 {
            // 10% split; canary 5× the baseline's rate: θ = 0.357 of events.
            bad.update(4.0, 11.0, 0.1);
            // Equal rates: θ = 0.1.
            same.update(1.0, 10.0, 0.1);
        }
        assert!(bad.e_value() > 1e6, "{}", bad.e_value());
        assert!(same.e_value() < 1.0, "{}", same.e_value());
    }

    #[test]
    fn empty_or_one_armed_intervals_change_nothing() {
        let mut t = RateRatioTest::new(1.0);
        t.update(0.0, 0.0, 0.1);
        t.update(3.0, 3.0, 1.0);
        t.update(3.0, 3.0, 0.0);
        t.update(f64::NAN, 3.0, 0.1);
        assert_eq!(t.e_value(), 1.0);
        assert_eq!(t.intervals, 0);
    }

    #[test]
    fn one_burst_is_capped() {
        let mut t = RateRatioTest::new(1.0);
        t.update(500.0, 500.0, 0.1);
        assert!(t.e_value() <= LN_CAP.exp() + 1e-9);
    }

    #[test]
    fn the_ceiling_needs_evidence_not_one_unlucky_sample() {
        // 4 errors in 60 requests is 6.7%, above a 5% ceiling, by chance.
        let mut t = CeilingTest::new(0.05);
        t.update(4.0, 60.0);
        assert!(t.e_value() < 10.0, "{}", t.e_value());
        // A canary truly at 20% crosses it quickly.
        let mut bad = CeilingTest::new(0.05);
        for _ in 0..5 {
            bad.update(12.0, 60.0);
        }
        assert!(bad.e_value() > 1000.0, "{}", bad.e_value());
    }

    #[test]
    fn share_test_flags_a_missing_canary() {
        let mut s = ShareTest::default();
        for _ in 0..20 {
            s.update(20.0, 1000.0, 0.1); // 2% observed vs 10% configured
        }
        assert!(s.e_value() > 1000.0);
        let mut ok = ShareTest::default();
        for _ in 0..20 {
            ok.update(100.0, 1000.0, 0.1);
        }
        assert!(ok.e_value() < 1.0);
    }
}
