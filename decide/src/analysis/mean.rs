//! An anytime-valid test on a difference of means with unknown variance:
//! the safe t-test (Grünwald, de Heide and Koolen, "Safe testing", 2024;
//! Pérez-Ortiz et al., "E-statistics, group invariance and anytime-valid
//! testing", 2024).
//!
//! The metric's cumulative sum and count per version are cut into batches
//! of at least `batch` values in each version (by counts only, so the cut
//! says nothing about the values). Each batch gives the canary's and the
//! baseline's mean, and one standardized difference
//!
//! `z = (m_c − k·m_b + shift) / sqrt(1/n_c + k²/n_b)`
//!
//! signed so that harm is `E[z] < 0`, with `k` and `shift` placing the null
//! on the tolerance's boundary (`k = 1 − r` for a relative tolerance `r` when
//! higher is better; `shift = a` for an absolute one). On the boundary, with
//! Gaussian batch means of a common per-value variance σ², the `z` are
//! i.i.d. N(0, σ²) with σ unknown: the one-sample t setting.
//!
//! The e-value is the Bayes factor of δ = E[z]/σ ~ N(0, g) against δ = 0
//! with the right-Haar prior 1/σ on the scale, averaged over a grid of `g`:
//!
//! `BF(g) = (1+ng)^(-1/2) · [(1 + t²/ν) / (1 + t²/(ν(1+ng)))]^((ν+1)/2)`
//!
//! with `t` the t statistic of the `n` batches and `ν = n − 1`. With the
//! Haar prior it is a test martingale in the filtration of the scale-free
//! statistics, so Ville's inequality holds under optional stopping: it
//! reaches 1/α with probability at most α, looked at after every batch. The
//! rollout aborts only when, in addition, the batches' mean is on the
//! harmful side: shifting every `z` up (a canary better than the boundary)
//! raises `t` and leaves the spread alone, so that only lowers the chance.
//! The variance is estimated from the batches, not assumed; `dimmer
//! simulate` measures the false-alarm rate on skewed (log-normal) values.

use serde::{Deserialize, Serialize};

/// Prior variances of the standardized effect per batch, mixed equally:
/// batches of ~30 values see effects of 0.05 to 1 σ.
pub const G_GRID: [f64; 4] = [0.01, 0.04, 0.16, 0.64];

/// How a batch's two means make the difference tested, harm below 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contrast {
    /// +1 when higher is better, −1 when lower is.
    pub sign: f64,
    /// The baseline mean's weight: 1 − r (higher) or 1 + r (lower) for a
    /// relative tolerance r, 1 otherwise.
    pub k: f64,
    /// An absolute tolerance, in the metric's units.
    pub shift: f64,
}

impl Contrast {
    /// The difference for these means: below 0 is harm beyond the tolerance.
    pub fn margin(&self, canary: f64, baseline: f64) -> f64 {
        self.sign * (canary - self.k * baseline) + self.shift
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanTest {
    /// Batches compared.
    pub n: u64,
    /// Welford's running mean and sum of squared deviations of the `z`.
    pub mean: f64,
    pub m2: f64,
    /// The batch being filled: canary sum and count, baseline sum and count.
    pub pending: [f64; 4],
}

impl MeanTest {
    /// Adds an interval's sums and counts; closes a batch once both
    /// versions have at least `batch` values in it.
    pub fn add(&mut self, delta: [f64; 4], batch: f64, c: &Contrast) {
        // A counter that went down was reset: that interval says nothing.
        if delta.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return;
        }
        for (p, d) in self.pending.iter_mut().zip(delta) {
            *p += d;
        }
        let [cs, cn, bs, bn] = self.pending;
        if cn < batch.max(1.0) || bn < batch.max(1.0) {
            return;
        }
        self.pending = [0.0; 4];
        let z = c.margin(cs / cn, bs / bn) / (1.0 / cn + c.k * c.k / bn).sqrt();
        if !z.is_finite() {
            return;
        }
        self.n += 1;
        let d = z - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (z - self.mean);
    }

    /// The t statistic of the batches, from two on.
    pub fn t(&self) -> Option<f64> {
        if self.n < 2 {
            return None;
        }
        let n = self.n as f64;
        let var = self.m2 / (n - 1.0);
        if var <= 0.0 {
            return Some(if self.mean == 0.0 {
                0.0
            } else {
                self.mean.signum() * 1e100
            });
        }
        Some(self.mean / (var / n).sqrt())
    }

    pub fn e_value(&self) -> f64 {
        let Some(t) = self.t() else {
            return 1.0;
        };
        let n = self.n as f64;
        let nu = n - 1.0;
        let t2 = (t * t).min(1e200);
        let ln = |g: f64| {
            let r = 1.0 + n * g;
            -0.5 * r.ln() + (nu + 1.0) / 2.0 * ((t2 / nu).ln_1p() - (t2 / (nu * r)).ln_1p())
        };
        G_GRID.iter().map(|&g| ln(g).exp()).sum::<f64>() / G_GRID.len() as f64
    }

    /// Whether the batches lean towards harm.
    pub fn harmful(&self) -> bool {
        self.n >= 2 && self.mean < 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    const PLAIN: Contrast = Contrast {
        sign: 1.0,
        k: 1.0,
        shift: 0.0,
    };

    /// The closed form, against the Bayes factor integrated numerically:
    /// ∫ N-likelihood(δ) N(δ; 0, g) dδ / likelihood(0), with σ integrated out
    /// under 1/σ, which for the t statistic is the ratio of the noncentral
    /// t density to the central one, averaged over δ ~ N(0, g).
    #[test]
    fn the_bayes_factor_matches_numerical_integration() {
        let z = [0.3, -0.2, 0.9, 0.4, 0.1, 0.7];
        let mut test = MeanTest::default();
        for &x in &z {
            test.n += 1;
            let d = x - test.mean;
            test.mean += d / test.n as f64;
            test.m2 += d * (x - test.mean);
        }
        let t = test.t().unwrap();
        let n = z.len() as f64;
        let nu = n - 1.0;
        // The noncentral t density at t, up to a constant that cancels:
        // ∫ u^ν e^{-u²/2} φ(t·u/√ν − ncp) du, by a Riemann sum.
        let density = |ncp: f64| {
            let mut s = 0.0;
            let du = 1e-3;
            let mut u = du / 2.0;
            while u < 40.0 {
                let x = t * u / nu.sqrt();
                s += u.powf(nu) * (-(u * u) / 2.0).exp() * (-(x - ncp).powi(2) / 2.0).exp() * du;
                u += du;
            }
            s
        };
        let central = density(0.0);
        for &g in &G_GRID {
            // δ on the per-observation scale: the t's noncentrality is δ√n.
            let mut num = 0.0;
            let dd = 1e-2;
            let sd = g.sqrt();
            let mut d = -8.0 * sd;
            while d < 8.0 * sd {
                let prior = (-(d * d) / (2.0 * g)).exp() / (2.0 * std::f64::consts::PI * g).sqrt();
                num += prior * density(d * n.sqrt()) * dd;
                d += dd;
            }
            let r = 1.0 + n * g;
            let closed = (-0.5 * r.ln()
                + (nu + 1.0) / 2.0 * ((t * t / nu).ln_1p() - (t * t / (nu * r)).ln_1p()))
            .exp();
            let numeric = num / central;
            assert!(
                (closed / numeric - 1.0).abs() < 2e-2,
                "g {g}: closed {closed} vs numeric {numeric}"
            );
        }
    }

    #[test]
    fn grows_for_a_worse_canary_and_not_for_an_equal_one() {
        let mut rng = StdRng::seed_from_u64(7);
        let noise = Normal::new(0.0, 1.0).unwrap();
        let (mut bad, mut same) = (MeanTest::default(), MeanTest::default());
        for _ in 0..400 {
            // 30 values a batch in each version, σ = 1 each: the mean of a
            // batch has sd 1/√30.
            let m = |mu: f64, rng: &mut StdRng| mu * 30.0 + noise.sample(rng) * 30f64.sqrt();
            bad.add(
                [m(0.8, &mut rng), 30.0, m(1.0, &mut rng), 30.0],
                30.0,
                &PLAIN,
            );
            same.add(
                [m(1.0, &mut rng), 30.0, m(1.0, &mut rng), 30.0],
                30.0,
                &PLAIN,
            );
        }
        assert!(bad.harmful() && bad.e_value() > 1e4, "{}", bad.e_value());
        assert!(same.e_value() < 10.0, "{}", same.e_value());
    }

    #[test]
    fn batches_wait_for_enough_values_in_both_versions() {
        let mut t = MeanTest::default();
        t.add([10.0, 10.0, 300.0, 300.0], 30.0, &PLAIN);
        assert_eq!(t.n, 0, "the canary has 10 of 30");
        t.add([20.0, 20.0, 0.0, 0.0], 30.0, &PLAIN);
        assert_eq!(t.n, 1);
        assert_eq!(t.pending, [0.0; 4]);
        t.add([f64::NAN, 1.0, 1.0, 1.0], 1.0, &PLAIN);
        assert_eq!(t.e_value(), 1.0, "one batch is no evidence");
    }

    #[test]
    fn the_tolerance_moves_the_boundary() {
        // Canary 3% below the baseline: harm with no tolerance, none with 5%.
        let strict = Contrast {
            sign: 1.0,
            k: 1.0,
            shift: 0.0,
        };
        let lenient = Contrast {
            sign: 1.0,
            k: 0.95,
            shift: 0.0,
        };
        assert!(strict.margin(97.0, 100.0) < 0.0);
        assert!(lenient.margin(97.0, 100.0) > 0.0);
        // Lower is better: 3% above with 5% allowed is fine; 3 above with 2 absolute is not.
        let lower = Contrast {
            sign: -1.0,
            k: 1.05,
            shift: 0.0,
        };
        assert!(lower.margin(103.0, 100.0) > 0.0);
        let absolute = Contrast {
            sign: -1.0,
            k: 1.0,
            shift: 2.0,
        };
        assert!(absolute.margin(103.0, 100.0) < 0.0);
    }
}
