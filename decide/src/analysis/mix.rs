//! Do the canary's users look like everyone's? For each cohort dimension
//! (`analysis.dimensions`), a sequential test of whether the canary's mix of
//! values matches the baseline's, on the filter's `dimmer_mix` counts.
//!
//! Each interval, for each value `v`, the 2×2 table of (canary, baseline) ×
//! (`v`, every other value). Conditional on its margins, the canary's count
//! of `v` has Fisher's noncentral hypergeometric distribution with odds
//! ratio ψ; the same mix in both arms is ψ = 1, the central hypergeometric,
//! with no unknown left: neither the split nor the traffic need be known,
//! and a proxy on old weights (the sample-ratio test's business) changes
//! nothing here. The likelihood ratio of ψ in [`ODDS_GRID`] against 1 has
//! expectation 1 given the margins, so its product over intervals, averaged
//! over the grid, is a test martingale (capped per interval like every
//! other test). A dimension's e-value is the average over its
//! `max_values + 2` possible values (`_other` and `_none` included), a
//! value not seen yet counting as 1. A mismatch holds the rollout — it is
//! not the canary's fault — and names the value and by how much.
//!
//! (A first version plugged the canary's share of the other values in as a
//! known Binomial share: its A/A stop rate was 10.5% at α = 0.05, the
//! estimate's noise inflating every likelihood ratio; `dimmer simulate`
//! caught it.)

use std::collections::BTreeMap;

use dimmer_core::config::Dimension;
use dimmer_core::mix::OTHER;
use serde::{Deserialize, Serialize};

use super::eprocess::LN_CAP;
use crate::counts::VersionCounts;

/// Odds ratios of the mixture: a value half as frequent, or twice, and between.
pub const ODDS_GRID: [f64; 4] = [0.5, 0.8, 1.25, 2.0];

/// Fisher's exact conditional test of one value, sequential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OddsTest {
    pub ln_products: Vec<f64>,
}

impl Default for OddsTest {
    fn default() -> Self {
        OddsTest {
            ln_products: vec![0.0; ODDS_GRID.len()],
        }
    }
}

impl OddsTest {
    /// One interval's table: `x` of the value's `n` requests were the
    /// canary's, which had `c` of all `total` requests.
    pub fn update(&mut self, x: f64, n: f64, c: f64, total: f64) {
        let (x, n, c, total) = (x.round(), n.round(), c.round(), total.round());
        let usable = [x, n, c, total].iter().all(|v| v.is_finite() && *v >= 0.0)
            && n <= total
            && c <= total
            && x <= n.min(c);
        if !usable {
            return;
        }
        let (lo, hi) = ((c - (total - n)).max(0.0), n.min(c));
        if hi <= lo {
            return; // Only one table has these margins: no information.
        }
        // ln of C(n, k)·C(total − n, c − k), up to a constant, by the ratio
        // of consecutive terms; the support is at most min(n, c) + 1 long.
        let mut lw = Vec::with_capacity((hi - lo) as usize + 1);
        let mut acc = 0.0;
        lw.push(acc);
        let mut k = lo + 1.0;
        while k <= hi {
            acc += ((n - k + 1.0) * (c - k + 1.0)).ln() - (k * (total - n - c + k)).ln();
            lw.push(acc);
            k += 1.0;
        }
        let ln_z = |ln_psi: f64| {
            let terms = lw
                .iter()
                .enumerate()
                .map(|(i, w)| w + (lo + i as f64) * ln_psi);
            let max = terms.clone().fold(f64::NEG_INFINITY, f64::max);
            max + terms.map(|t| (t - max).exp()).sum::<f64>().ln()
        };
        let z1 = ln_z(0.0);
        for (psi, ln_p) in ODDS_GRID.iter().zip(self.ln_products.iter_mut()) {
            let l = psi.ln();
            let ln_lr = x * l - ln_z(l) + z1;
            *ln_p += ln_lr.min(LN_CAP);
        }
    }

    pub fn e_value(&self) -> f64 {
        let n = self.ln_products.len().max(1) as f64;
        self.ln_products.iter().map(|l| l.exp()).sum::<f64>() / n
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MixTest {
    pub dimension: String,
    /// Each value's test, in the order first seen; a value beyond the
    /// dimension's slots is folded into `_other`.
    pub values: Vec<(String, OddsTest)>,
}

fn slots(d: &Dimension) -> usize {
    usize::from(d.max_values) + 2
}

impl MixTest {
    pub fn new(d: &Dimension) -> MixTest {
        MixTest {
            dimension: d.name(),
            values: Vec::new(),
        }
    }

    fn slot(&mut self, value: &str, slots: usize) -> usize {
        if let Some(i) = self.values.iter().position(|(v, _)| v == value) {
            return i;
        }
        if self.values.len() + 1 >= slots && value != OTHER {
            return self.slot(OTHER, slots + 1);
        }
        self.values.push((value.to_owned(), OddsTest::default()));
        self.values.len() - 1
    }

    /// One interval's requests by value, of the canary and of the baseline.
    pub fn feed(
        &mut self,
        d: &Dimension,
        canary: &BTreeMap<String, f64>,
        baseline: &BTreeMap<String, f64>,
    ) {
        let values: std::collections::BTreeSet<&String> =
            canary.keys().chain(baseline.keys()).collect();
        let get = |m: &BTreeMap<String, f64>, v: &str| m.get(v).copied().unwrap_or(0.0).max(0.0);
        let total_c: f64 = canary.values().map(|x| x.max(0.0)).sum();
        let total: f64 = total_c + baseline.values().map(|x| x.max(0.0)).sum::<f64>();
        for v in values {
            let (x, n) = (get(canary, v), get(canary, v) + get(baseline, v));
            if n <= 0.0 {
                continue;
            }
            let i = self.slot(v, slots(d));
            if let Some((_, test)) = self.values.get_mut(i) {
                test.update(x, n, total_c, total);
            }
        }
    }

    pub fn e_value(&self, d: &Dimension) -> f64 {
        let slots = slots(d).max(self.values.len());
        let seen: f64 = self.values.iter().map(|(_, t)| t.e_value()).sum();
        (seen + (slots - self.values.len()) as f64) / slots as f64
    }

    /// The value whose test has the most evidence.
    pub fn worst(&self) -> Option<&str> {
        self.values
            .iter()
            .max_by(|a, b| a.1.e_value().total_cmp(&b.1.e_value()))
            .map(|(v, _)| v.as_str())
    }
}

/// One value's share of each arm's requests this step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixRow {
    pub dimension: String,
    pub value: String,
    pub canary_percent: f64,
    pub baseline_percent: f64,
}

/// The step's mix side by side, for the evidence, status and history.
pub fn rows(dims: &[Dimension], canary: &VersionCounts, baseline: &VersionCounts) -> Vec<MixRow> {
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    for d in dims {
        let name = d.name();
        let (c, b) = (
            canary.mix.get(&name).unwrap_or(&empty),
            baseline.mix.get(&name).unwrap_or(&empty),
        );
        let (tc, tb) = (c.values().sum::<f64>(), b.values().sum::<f64>());
        let pct = |m: &BTreeMap<String, f64>, v: &str, t: f64| {
            if t > 0.0 {
                100.0 * m.get(v).copied().unwrap_or(0.0) / t
            } else {
                0.0
            }
        };
        let values: std::collections::BTreeSet<&String> = c.keys().chain(b.keys()).collect();
        for v in values {
            out.push(MixRow {
                dimension: name.clone(),
                value: v.clone(),
                canary_percent: pct(c, v, tc),
                baseline_percent: pct(b, v, tb),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn country() -> Dimension {
        serde_json::from_str(r#"{"header": "x-country", "max_values": 4}"#).unwrap()
    }

    fn counts(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn a_value_half_as_frequent_on_the_canary_is_found_and_named() {
        let d = country();
        let (mut skewed, mut same) = (MixTest::new(&d), MixTest::new(&d));
        for _ in 0..40 {
            // 10% split. Baseline: us 60%, fr 20%, de 20%. Canary: fr halved.
            skewed.feed(
                &d,
                &counts(&[("us", 13.3), ("fr", 2.2), ("de", 4.4)]),
                &counts(&[("us", 108.0), ("fr", 36.0), ("de", 36.0)]),
            );
            same.feed(
                &d,
                &counts(&[("us", 12.0), ("fr", 4.0), ("de", 4.0)]),
                &counts(&[("us", 108.0), ("fr", 36.0), ("de", 36.0)]),
            );
        }
        assert!(skewed.e_value(&d) > 1e4, "{}", skewed.e_value(&d));
        assert_eq!(skewed.worst(), Some("fr"));
        assert!(same.e_value(&d) < 1.0, "{}", same.e_value(&d));
    }

    /// The conditional likelihood ratio has expectation 1 under the null:
    /// summed exactly over the hypergeometric distribution of one table.
    #[test]
    fn each_tables_likelihood_ratio_is_fair_under_the_null() {
        use statrs::distribution::{Discrete, Hypergeometric};
        let (total, n, c) = (60u64, 14u64, 9u64);
        let h = Hypergeometric::new(total, n, c).unwrap();
        for (k, psi) in ODDS_GRID.iter().enumerate() {
            let mut mean = 0.0;
            for x in 0..=n.min(c) {
                let mut t = OddsTest::default();
                t.update(x as f64, n as f64, c as f64, total as f64);
                mean += h.pmf(x) * t.ln_products[k].exp();
            }
            // The cap only lowers it.
            assert!((mean - 1.0).abs() < 1e-9 || mean < 1.0, "ψ {psi}: {mean}");
            assert!(mean > 0.99, "ψ {psi}: {mean}");
        }
    }

    #[test]
    fn values_beyond_the_slots_fold_into_other() {
        let d = country();
        let mut t = MixTest::new(&d);
        let many: Vec<(String, f64)> = (0..20).map(|i| (format!("v{i}"), 5.0)).collect();
        let many: BTreeMap<String, f64> = many.into_iter().collect();
        t.feed(&d, &many, &many);
        assert_eq!(t.values.len(), 6, "{:?}", t.values);
        assert_eq!(t.values.last().map(|v| v.0.as_str()), Some(OTHER));
    }

    #[test]
    fn rows_show_the_steps_mix_side_by_side() {
        let d = country();
        let mut c = VersionCounts::default();
        c.add_mix("x-country", "fr", 10.0);
        c.add_mix("x-country", "us", 30.0);
        let mut b = VersionCounts::default();
        b.add_mix("x-country", "us", 100.0);
        let r = rows(&[d], &c, &b);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (
                r[0].value.as_str(),
                r[0].canary_percent,
                r[0].baseline_percent
            ),
            ("fr", 25.0, 0.0)
        );
    }
}
