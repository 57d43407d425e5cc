//! Evidence of safety: an anytime-valid upper bound on the canary's harm
//! for every comparative test, so a step goes up only when the data show
//! the canary is at most a tolerance worse — not merely when no alarm has
//! gone off yet.
//!
//! **Rates** (errors, requests slower than a latency bound, a `ratio`
//! metric's successes of trials): each version's events are Bernoulli with
//! rates `p_c`, `p_b`. "Harm at least `s` tolerances" is a half-plane
//! `H0_s` of `(p_c, p_b)` bounded by the line `p_c = k_s·p_b + c_s`. Its
//! e-value, on the counts of the whole rollout so far, is
//!
//! `e_s = m(canary) · m(baseline) / sup_{H0_s} L(p_c, p_b)`
//!
//! with `m` each version's Beta–Bernoulli marginal likelihood (a mixture
//! over rates, fixed in advance) and the denominator the likelihood's
//! maximum over the null. For every `(p_c, p_b)` in `H0_s`, `m·m / L(p_c,
//! p_b)` is a test martingale and the denominator is at least `L(p_c,
//! p_b)`, so `e_s` reaches `1/α` with probability at most `α` however often
//! it is looked at (Ville; this is Wasserman, Ramdas and Balakrishnan's
//! "universal inference", 2020). The maximum over a half-plane of a concave
//! log-likelihood is the unrestricted one or lies on the line: one
//! dimension, searched by golden section.
//!
//! `e_s` grows with `s` (the null shrinks), so the **bound** — the least `s`
//! whose `e_s ≥ 1/α` — is a confidence sequence by inversion: it is below
//! the canary's true harm with probability at most `α`, at every look. A
//! step goes up only when the bound is within the tolerance (`s ≤ 1`); a
//! canary harmful beyond the tolerance is promoted with probability at most
//! `α` however many tests there are (it must pass *its* test), so `α` is not
//! split among them.
//!
//! **Means** (a `mean` metric): the safe t-test of [`super::mean`] with its
//! sign turned round, on a fixed ladder of tolerance multiples.
//!
//! **Which data.** The whole rollout's, not the step's: each version's rate
//! does not depend on the split, so steps pool without correction, and a
//! step up right after a long step needs no fresh proof. A harm that
//! appears only at a higher share is what each step's pause and the abort
//! tests, which keep running, are for.

use serde::{Deserialize, Serialize};
use statrs::function::beta::ln_beta;

use super::mean::{Contrast, MeanTest};

/// The false-promotion rate: a canary beyond a test's tolerance passes
/// that test with probability at most this.
pub const SAFETY_ALPHA: f64 = 0.05;

/// Bounds beyond this many tolerances are reported as "more than".
pub const MAX_MULTIPLE: f64 = 20.0;

/// The ladder of tolerance multiples a `mean` metric's bound is read from.
pub const MEAN_LEVELS: [f64; 10] = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0];

/// The Beta prior of a version's rate in the marginal likelihood. Errors
/// and slow requests are rare, so their prior leans towards small rates
/// (mean 1%); a `ratio` metric's may be anything (Jeffreys').
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prior {
    pub a: f64,
    pub b: f64,
}

pub const RARE: Prior = Prior { a: 0.5, b: 50.0 };
pub const ANY: Prior = Prior { a: 0.5, b: 0.5 };

/// A harm boundary: harm at `s` tolerances is `dir·(p_c − k(s)·p_b − c(s)) ≥ 0`,
/// with `k(s) = k0 + s·dk` and `c(s) = s·dc`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Boundary {
    /// +1: lower is better (harm is a higher canary rate); −1: higher is better.
    pub dir: f64,
    pub k0: f64,
    pub dk: f64,
    pub dc: f64,
}

impl Boundary {
    /// Errors or slow requests: harm is more than `ratio` times the
    /// baseline's rate plus `s·margin`.
    pub fn excess(ratio: f64, margin: f64) -> Boundary {
        Boundary {
            dir: 1.0,
            k0: ratio,
            dk: 0.0,
            dc: margin,
        }
    }

    /// A team metric's tolerance: relative `r` and absolute `a`, scaled by `s`.
    pub fn of_contrast(higher_is_better: bool, r: f64, a: f64) -> Boundary {
        if higher_is_better {
            Boundary {
                dir: -1.0,
                k0: 1.0,
                dk: -r,
                dc: -a,
            }
        } else {
            Boundary {
                dir: 1.0,
                k0: 1.0,
                dk: r,
                dc: a,
            }
        }
    }

    fn at(&self, s: f64) -> (f64, f64) {
        (self.k0 + s * self.dk, s * self.dc)
    }
}

/// Cumulative events and trials of each version: what a rate's bound is
/// computed from, whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RateCounts {
    pub canary_events: f64,
    pub canary_n: f64,
    pub baseline_events: f64,
    pub baseline_n: f64,
}

impl RateCounts {
    /// Adds one interval; events outside `0..=n` or a version without
    /// trials add nothing (a counter reset, a misconfigured metric).
    pub fn add(&mut self, ce: f64, cn: f64, be: f64, bn: f64) {
        let ok =
            |e: f64, n: f64| e.is_finite() && n.is_finite() && n > 0.0 && (0.0..=n).contains(&e);
        if !(ok(ce, cn) && ok(be, bn)) {
            return;
        }
        self.canary_events += ce;
        self.canary_n += cn;
        self.baseline_events += be;
        self.baseline_n += bn;
    }

    fn scaled(&self, f: f64) -> RateCounts {
        RateCounts {
            canary_events: self.canary_events * f,
            canary_n: self.canary_n * f,
            baseline_events: self.baseline_events * f,
            baseline_n: self.baseline_n * f,
        }
    }

    pub fn canary_rate(&self) -> Option<f64> {
        (self.canary_n > 0.0).then(|| self.canary_events / self.canary_n)
    }

    pub fn baseline_rate(&self) -> Option<f64> {
        (self.baseline_n > 0.0).then(|| self.baseline_events / self.baseline_n)
    }
}

fn xlny(x: f64, y: f64) -> f64 {
    if x <= 0.0 {
        0.0
    } else if y <= 0.0 {
        f64::NEG_INFINITY
    } else {
        x * y.ln()
    }
}

fn ln_lik(events: f64, n: f64, p: f64) -> f64 {
    xlny(events, p) + xlny(n - events, 1.0 - p)
}

fn ln_marginal(events: f64, n: f64, prior: Prior) -> f64 {
    ln_beta(prior.a + events, prior.b + n - events) - ln_beta(prior.a, prior.b)
}

/// The log-likelihood's maximum over `H0_s`.
fn ln_sup_null(c: &RateCounts, b: &Boundary, s: f64) -> f64 {
    let (k, off) = b.at(s);
    let ll = |pc: f64, pb: f64| {
        ln_lik(c.canary_events, c.canary_n, pc) + ln_lik(c.baseline_events, c.baseline_n, pb)
    };
    let (pc, pb) = (
        c.canary_events / c.canary_n,
        c.baseline_events / c.baseline_n,
    );
    if b.dir * (pc - k * pb - off) >= 0.0 {
        return ll(pc, pb);
    }
    // On the line p_c = k·p_b + off, both rates within [0, 1].
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    if k > 0.0 {
        lo = lo.max(-off / k);
        hi = hi.min((1.0 - off) / k);
    } else if !(0.0..=1.0).contains(&off) {
        return f64::NEG_INFINITY;
    }
    if lo > hi {
        // No rates are this harmful: the null is empty.
        return f64::NEG_INFINITY;
    }
    let g = |p: f64| ll((k * p + off).clamp(0.0, 1.0), p);
    let phi = 0.618_033_988_749_895;
    for _ in 0..50 {
        let m1 = hi - phi * (hi - lo);
        let m2 = lo + phi * (hi - lo);
        if g(m1) < g(m2) {
            lo = m1;
        } else {
            hi = m2;
        }
    }
    g(lo).max(g(hi)).max(g(0.5 * (lo + hi)))
}

/// `ln e_s`: the evidence against "harm at least `s` tolerances".
pub fn ln_e(c: &RateCounts, b: &Boundary, prior: Prior, s: f64) -> f64 {
    if c.canary_n <= 0.0 || c.baseline_n <= 0.0 {
        return 0.0;
    }
    let num = ln_marginal(c.canary_events, c.canary_n, prior)
        + ln_marginal(c.baseline_events, c.baseline_n, prior);
    let den = ln_sup_null(c, b, s);
    if den == f64::NEG_INFINITY {
        return f64::INFINITY;
    }
    (num - den).max(f64::MIN)
}

/// The least multiple of the tolerance the data rule out, if any within
/// [`MAX_MULTIPLE`]: the canary is at most `bound` tolerances worse.
pub fn rate_bound(c: &RateCounts, b: &Boundary, prior: Prior, alpha: f64) -> Option<f64> {
    let need = (1.0 / alpha).ln();
    if ln_e(c, b, prior, MAX_MULTIPLE) < need {
        return None;
    }
    if ln_e(c, b, prior, 0.0) >= need {
        return Some(0.0);
    }
    let (mut lo, mut hi) = (0.0, MAX_MULTIPLE);
    // 2⁻²⁵ of twenty tolerances: finer than any bound is shown.
    for _ in 0..25 {
        let mid = 0.5 * (lo + hi);
        if ln_e(c, b, prior, mid) >= need {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// If the rates stay where they are, how many more canary trials until the
/// bound is within the tolerance; `None` when the estimate itself is
/// beyond it (no amount of such data will do).
pub fn more_needed(c: &RateCounts, b: &Boundary, prior: Prior, alpha: f64) -> Option<f64> {
    let need = (1.0 / alpha).ln();
    if ln_e(c, b, prior, 1.0) >= need {
        return Some(0.0);
    }
    if c.canary_n <= 0.0 || c.baseline_n <= 0.0 {
        return None;
    }
    let (pc, pb) = (
        c.canary_events / c.canary_n,
        c.baseline_events / c.baseline_n,
    );
    let (k, off) = b.at(1.0);
    if b.dir * (pc - k * pb - off) >= 0.0 {
        return None;
    }
    let mut hi = 2.0;
    while ln_e(&c.scaled(hi), b, prior, 1.0) < need {
        hi *= 2.0;
        if hi > 1e9 {
            return None;
        }
    }
    let mut lo = hi / 2.0;
    for _ in 0..16 {
        let mid = 0.5 * (lo + hi);
        if ln_e(&c.scaled(mid), b, prior, 1.0) >= need {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(c.canary_n * (hi - 1.0))
}

/// A `mean` metric's safety: one safe t-test per rung of [`MEAN_LEVELS`],
/// each against harm at that many tolerances.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanLadder {
    pub tests: Vec<MeanTest>,
}

impl MeanLadder {
    pub fn contrast_at(higher_is_better: bool, r: f64, a: f64, s: f64) -> Contrast {
        let sign = if higher_is_better { 1.0 } else { -1.0 };
        Contrast {
            sign,
            k: if higher_is_better {
                1.0 - s * r
            } else {
                1.0 + s * r
            },
            shift: s * a,
        }
    }

    pub fn add(&mut self, delta: [f64; 4], batch: f64, higher_is_better: bool, r: f64, a: f64) {
        if self.tests.len() != MEAN_LEVELS.len() {
            self.tests = vec![MeanTest::default(); MEAN_LEVELS.len()];
        }
        for (t, s) in self.tests.iter_mut().zip(MEAN_LEVELS) {
            t.add(delta, batch, &Self::contrast_at(higher_is_better, r, a, s));
        }
    }

    /// The evidence that harm is below a rung: the t-test's Bayes factor,
    /// counted only when the batches lean to the safe side and vary at all.
    fn e_safe(t: &MeanTest) -> f64 {
        if t.n >= 2 && t.mean > 0.0 && t.m2 > 0.0 {
            t.e_value()
        } else {
            1.0
        }
    }

    /// The least rung ruled out with every rung above it.
    pub fn bound(&self, alpha: f64) -> Option<f64> {
        let mut bound = None;
        for (t, s) in self.tests.iter().zip(MEAN_LEVELS).rev() {
            if Self::e_safe(t) >= 1.0 / alpha {
                bound = Some(s);
            } else {
                break;
            }
        }
        bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use rand_distr::{Binomial, Distribution};

    fn counts(ce: f64, cn: f64, be: f64, bn: f64) -> RateCounts {
        let mut c = RateCounts::default();
        c.add(ce, cn, be, bn);
        c
    }

    #[test]
    fn no_errors_in_either_version_proves_a_margin_in_time() {
        let b = Boundary::excess(1.0, 0.005);
        let few = counts(0.0, 200.0, 0.0, 1800.0);
        assert_eq!(
            rate_bound(&few, &b, RARE, SAFETY_ALPHA).map(|s| s <= 1.0),
            Some(false)
        );
        let many = counts(0.0, 2000.0, 0.0, 18000.0);
        let s = rate_bound(&many, &b, RARE, SAFETY_ALPHA).unwrap_or(f64::MAX);
        assert!(s <= 1.0, "{s}");
        let more = more_needed(&few, &b, RARE, SAFETY_ALPHA).unwrap_or(f64::MAX);
        assert!((800.0..2000.0).contains(&more), "{more}");
    }

    #[test]
    fn a_canary_beyond_the_tolerance_is_never_proven_safe_and_needs_no_count() {
        // Conversion 3% against 5%, 10% relative tolerance, higher is better.
        let b = Boundary::of_contrast(true, 0.10, 0.0);
        let c = counts(3000.0, 100_000.0, 45_000.0, 900_000.0);
        let s = rate_bound(&c, &b, ANY, SAFETY_ALPHA).unwrap_or(f64::MAX);
        assert!(s > 3.5, "bound {s} tolerances: the canary is 40% worse");
        assert_eq!(more_needed(&c, &b, ANY, SAFETY_ALPHA), None);
    }

    #[test]
    fn the_bound_grows_with_the_multiple_and_an_empty_null_is_ruled_out() {
        let b = Boundary::of_contrast(true, 0.10, 0.0);
        let c = counts(500.0, 10_000.0, 4_500.0, 90_000.0);
        let mut last = f64::NEG_INFINITY;
        for s in [0.0, 0.5, 1.0, 2.0, 5.0, 9.0] {
            let e = ln_e(&c, &b, ANY, s);
            assert!(e >= last - 1e-9, "{s}: {e} < {last}");
            last = e;
        }
        // Harm of 10 tolerances of 10% is a canary converting at most 0%
        // less nothing: "at most −0" is empty past 10.
        assert_eq!(ln_e(&c, &b, ANY, 12.0), f64::INFINITY);
    }

    /// The guarantee, by simulation: a canary exactly at the tolerance,
    /// looked at every interval for a long while, is declared within it in
    /// at most about α of runs.
    #[test]
    fn at_the_tolerance_the_bound_is_wrong_at_most_alpha_of_the_time() {
        let mut rng = StdRng::seed_from_u64(7);
        let b = Boundary::excess(1.0, 0.005);
        let (pb, pc) = (0.01, 0.015);
        let runs = 400;
        let mut wrong = 0;
        for _ in 0..runs {
            let mut c = RateCounts::default();
            for _ in 0..200 {
                let ce = Binomial::new(50, pc).map_or(0, |d| d.sample(&mut rng)) as f64;
                let be = Binomial::new(450, pb).map_or(0, |d| d.sample(&mut rng)) as f64;
                c.add(ce, 50.0, be, 450.0);
                if ln_e(&c, &b, RARE, 1.0) >= (1.0 / SAFETY_ALPHA).ln() {
                    wrong += 1;
                    break;
                }
            }
        }
        assert!(
            (wrong as f64) <= SAFETY_ALPHA * runs as f64 * 1.5,
            "{wrong} of {runs}"
        );
    }

    #[test]
    fn a_mean_ladder_bounds_a_healthy_canary_and_not_a_harmful_one() {
        let mut rng = StdRng::seed_from_u64(3);
        let normal = rand_distr::Normal::new(100.0, 20.0).unwrap();
        let (mut ok, mut bad) = (MeanLadder::default(), MeanLadder::default());
        for _ in 0..60 {
            let mut sums = [0.0; 4];
            for i in 0..100 {
                let x: f64 = normal.sample(&mut rng);
                sums[if i < 50 { 0 } else { 2 }] += x;
            }
            ok.add([sums[0], 50.0, sums[2], 50.0], 30.0, true, 0.05, 0.0);
            // 20% lower, higher is better, tolerance 5%.
            bad.add([sums[0] * 0.8, 50.0, sums[2], 50.0], 30.0, true, 0.05, 0.0);
        }
        let within = ok.bound(SAFETY_ALPHA).unwrap_or(f64::MAX);
        assert!(within <= 1.0, "{within}");
        assert!(bad.bound(SAFETY_ALPHA).unwrap_or(f64::MAX) > 1.0);
    }
}
