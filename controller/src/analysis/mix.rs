//! Do the canary's users look like everyone's? For each cohort dimension
//! (`analysis.dimensions`), a sequential test of whether the canary's mix of
//! values matches the baseline's, on the filter's `dimmer_mix` counts.
//!
//! Each interval, for each value `v` seen by `n_v` requests of which `c_v`
//! went to the canary: if the mix is the same in both arms, `c_v` is
//! Binomial(n_v, π) with π the canary's share of the requests — estimated
//! from the other values of the interval, so that `v`'s own count does not
//! pull the null towards itself. The sample-ratio test's two-sided mixture
//! ([`ShareTest`]) runs per value; a dimension's e-value is the average over
//! its `max_values + 2` possible values (`_other` and `_none` included), a
//! value not seen yet counting as 1. A mismatch holds the rollout — it is
//! not the canary's fault — and names the value and by how much.

use std::collections::BTreeMap;

use dimmer_core::config::Dimension;
use dimmer_core::mix::OTHER;
use serde::{Deserialize, Serialize};

use super::eprocess::ShareTest;
use crate::metrics::VersionCounts;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MixTest {
    pub dimension: String,
    /// Each value's test, in the order first seen; a value beyond the
    /// dimension's slots is folded into `_other`.
    pub values: Vec<(String, ShareTest)>,
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
        self.values.push((value.to_owned(), ShareTest::default()));
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
            let (c, n) = (get(canary, v), get(canary, v) + get(baseline, v));
            let (rest_c, rest) = (total_c - c, total - n);
            if n <= 0.0 || rest <= 0.0 {
                continue;
            }
            let pi = rest_c / rest;
            let i = self.slot(v, slots(d));
            if let Some((_, test)) = self.values.get_mut(i) {
                test.update(c, n, pi);
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
