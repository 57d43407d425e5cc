//! The cohort function: published vectors, uniformity, independence of salts
//! and the monotonicity that makes a rollout safe to turn up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use dimmer_core::cohort::{bucket, fmix64, fnv1a64, BUCKETS};
use dimmer_core::compiled::Compiled;
use dimmer_core::config::{Rollout, Version};
use proptest::prelude::*;
use statrs::distribution::{ChiSquared, ContinuousCDF};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn matches_the_published_vectors() {
    let text = include_str!("../testdata/cohort-vectors.json");
    let vectors: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
    assert!(vectors.len() >= 10);
    for v in vectors {
        let salt = v["salt"].as_str().unwrap();
        let id = unhex(v["identity_hex"].as_str().unwrap());
        let mut whole = salt.as_bytes().to_vec();
        whole.push(b':');
        whole.extend_from_slice(&id);
        assert_eq!(format!("{:016x}", fnv1a64(&whole)), v["fnv1a64"], "{v}");
        assert_eq!(
            format!("{:016x}", fmix64(fnv1a64(&whole))),
            v["fmix64"],
            "{v}"
        );
        assert_eq!(
            u64::from(bucket(salt, &id)),
            v["bucket"].as_u64().unwrap(),
            "{v}"
        );
    }
}

/// p-value of a chi-square goodness-of-fit test of `counts` against uniform.
fn uniformity_p(counts: &[u64]) -> f64 {
    let n: u64 = counts.iter().sum();
    let expected = n as f64 / counts.len() as f64;
    let stat: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    let dist = ChiSquared::new((counts.len() - 1) as f64).unwrap();
    1.0 - dist.cdf(stat)
}

fn histogram(ids: impl Iterator<Item = String>, salt: &str, bins: usize) -> Vec<u64> {
    let mut counts = vec![0u64; bins];
    for id in ids {
        let b = bucket(salt, id.as_bytes()) as usize;
        counts[b * bins / BUCKETS as usize] += 1;
    }
    counts
}

#[test]
fn sequential_ids_are_uniform() {
    // 100 bins of 100 buckets each, 200 000 ids; also the finest resolution
    // that matters, 1% of traffic, is checked by the first bin alone below.
    let counts = histogram(
        (1..=200_000).map(|i| format!("user-{i}")),
        "checkout-7",
        100,
    );
    let p = uniformity_p(&counts);
    assert!(p > 0.001, "chi-square p = {p}");
    let all_buckets = histogram((1..=200_000).map(|i| format!("{i}")), "s", 10_000);
    assert!(uniformity_p(&all_buckets) > 0.001);
}

#[test]
fn random_ids_are_uniform() {
    let mut rng = fastrand_like(7);
    let ids = (0..200_000).map(move |_| format!("{:032x}", rng()));
    let p = uniformity_p(&histogram(ids, "checkout-7", 100));
    assert!(p > 0.001, "chi-square p = {p}");
}

/// A tiny deterministic generator, so the test needs no extra crate.
fn fastrand_like(seed: u64) -> impl FnMut() -> u128 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        (u128::from(fmix64(s)) << 64) | u128::from(fmix64(s ^ 0xdead_beef))
    }
}

#[test]
fn different_salts_are_independent() {
    // A 10×10 contingency table of (bucket decile under salt A, under salt B):
    // if the salts were correlated, users would pile up on the diagonal.
    let mut table = [[0f64; 10]; 10];
    let n = 100_000;
    for i in 0..n {
        let id = format!("user-{i}");
        let a = bucket("checkout-7", id.as_bytes()) as usize / 1000;
        let b = bucket("search-2", id.as_bytes()) as usize / 1000;
        table[a][b] += 1.0;
    }
    let rows: Vec<f64> = table.iter().map(|r| r.iter().sum()).collect();
    let cols: Vec<f64> = (0..10).map(|j| table.iter().map(|r| r[j]).sum()).collect();
    let mut stat = 0.0;
    for i in 0..10 {
        for j in 0..10 {
            let e = rows[i] * cols[j] / n as f64;
            stat += (table[i][j] - e).powi(2) / e;
        }
    }
    let p = 1.0 - ChiSquared::new(81.0).unwrap().cdf(stat);
    assert!(p > 0.001, "independence chi-square p = {p}");
}

#[test]
fn the_uniformity_check_can_fail() {
    // A biased hash (identity length only) must be caught by the same test.
    let mut counts = vec![0u64; 100];
    for i in 1..=200_000u32 {
        let len = format!("user-{i}").len();
        counts[len * 7 % 100] += 1;
    }
    assert!(uniformity_p(&counts) < 1e-9);
}

fn rollout(weights: &[u32]) -> Rollout {
    Rollout {
        name: "r".into(),
        matcher: Default::default(),
        identity: vec![],
        anonymous: Default::default(),
        anonymous_cookie: Default::default(),
        salt: "salt".into(),
        stable: "v0".into(),
        shadow: None,
        lanes: false,
        dimensions: vec![],
        versions: weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Version {
                name: format!("v{i}"),
                weight: w,
            })
            .collect(),
        overrides: vec![],
        count: true,
    }
}

fn version_of(weights: &[u32], id: &str) -> usize {
    let c = Compiled::new(0, "x", &[rollout(weights)]);
    c.rollouts[0].version_of_identity(id.as_bytes())
}

/// Weights summing to 10000 for `n` versions, from arbitrary cut points.
fn weights(n: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..=10_000, n - 1).prop_map(|mut cuts| {
        cuts.sort_unstable();
        let mut prev = 0;
        let mut w: Vec<u32> = cuts
            .iter()
            .map(|&c| {
                let x = c - prev;
                prev = c;
                x
            })
            .collect();
        w.push(10_000 - prev);
        w
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn buckets_are_in_range_and_deterministic(salt in ".{0,40}", id in prop::collection::vec(any::<u8>(), 0..300)) {
        let b = bucket(&salt, &id);
        prop_assert!(b < BUCKETS);
        prop_assert_eq!(b, bucket(&salt, &id));
    }

    /// Growing the last version's weight (taking from any others) never moves
    /// a user out of it.
    #[test]
    fn growing_the_last_version_never_moves_a_user_out(
        before in weights(3),
        take in prop::collection::vec(0u32..=10_000, 2),
        id in "[a-z0-9-]{1,24}",
    ) {
        let mut after = before.clone();
        for (i, t) in take.iter().enumerate() {
            let moved = (*t).min(after[i]);
            after[i] -= moved;
            after[2] += moved;
        }
        if version_of(&before, &id) == 2 {
            prop_assert_eq!(version_of(&after, &id), 2);
        }
    }

    /// A rollback (canary to 0) sends everyone to stable, and a weight of
    /// 10000 sends everyone to the canary.
    #[test]
    fn the_ends_of_the_dial(id in prop::collection::vec(any::<u8>(), 0..64)) {
        let id = String::from_utf8_lossy(&id).into_owned();
        prop_assert_eq!(version_of(&[10_000, 0], &id), 0);
        prop_assert_eq!(version_of(&[0, 10_000], &id), 1);
    }

    #[test]
    fn a_version_owns_exactly_its_weight_in_buckets(w in weights(4)) {
        let c = Compiled::new(0, "x", &[rollout(&w)]);
        let r = &c.rollouts[0];
        let mut owned = [0u32; 4];
        for b in 0..BUCKETS {
            owned[r.version_of_bucket(b)] += 1;
        }
        prop_assert_eq!(owned.to_vec(), w);
    }
}

/// `stable` v0 and `arms.len()` candidates in lanes, at these weights.
fn lanes(arms: &[u32]) -> Compiled {
    let stable = 10_000 - arms.iter().sum::<u32>();
    let mut weights = vec![stable];
    weights.extend_from_slice(arms);
    let mut r = rollout(&weights);
    r.lanes = true;
    dimmer_core::validate::validate_rollouts(core::slice::from_ref(&r), "rollouts").unwrap();
    Compiled::new(0, "x", &[r])
}

/// Each candidate's weights, as steps that go up and down independently
/// (an arm aborted to 0 while another grows), each within its lane.
fn arm_weights(arms: usize) -> impl Strategy<Value = Vec<Vec<u32>>> {
    let width = 10_000 / arms as u32;
    prop::collection::vec(prop::collection::vec(0..=width, arms), 2..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A/B/n: whatever one arm's weight does, users move only between that
    /// arm and stable; nobody moves from one candidate to another, and an
    /// arm that does not change keeps every one of its users.
    #[test]
    fn lanes_keep_every_arm_monotone(seq in (2usize..5).prop_flat_map(arm_weights)) {
        let ids: Vec<String> = (0..3000).map(|i| format!("user-{i}")).collect();
        let mut before: Option<(Vec<u32>, Vec<usize>)> = None;
        for w in seq {
            let c = lanes(&w);
            let now: Vec<usize> = ids.iter().map(|id| c.rollouts[0].version_of_identity(id.as_bytes())).collect();
            // Shares follow the weights.
            for (a, &wa) in w.iter().enumerate() {
                let share = now.iter().filter(|&&v| v == a + 1).count() as f64 / ids.len() as f64;
                prop_assert!((share - f64::from(wa) / 10_000.0).abs() < 0.04, "arm {a}: {share} for {wa}");
            }
            if let Some((wb, vb)) = &before {
                for (x, y) in vb.iter().zip(&now) {
                    if x != y {
                        prop_assert!(*x == 0 || *y == 0, "moved from v{x} to v{y}");
                        let arm = x.max(y) - 1;
                        prop_assert!(wb[arm] != w[arm], "v{} did not change yet moved a user", arm + 1);
                        // Up moves in, down moves out: never the other way.
                        prop_assert_eq!(*y != 0, w[arm] > wb[arm]);
                    }
                }
            }
            before = Some((w, now));
        }
    }
}

#[test]
fn lanes_are_refused_when_a_weight_is_wider_than_its_lane() {
    let mut r = rollout(&[0, 6000, 4000]);
    r.lanes = true;
    let err = dimmer_core::validate::validate_rollouts(&[r], "rollouts").unwrap_err();
    assert!(
        err.to_string()
            .contains("rollouts[0].versions[1].weight: exceeds its lane of 5000"),
        "{err}"
    );
    let mut r = rollout(&[10_000, 0, 0]);
    r.lanes = true;
    let c = Compiled::new(0, "x", &[r]);
    assert!((0..BUCKETS).all(|b| c.rollouts[0].version_of_bucket(b) == 0));
    // Lane i of n starts at i * 10000 / n: the second arm's users sit at 5000.
    let c = lanes(&[1, 1]);
    assert_eq!(c.rollouts[0].version_of_bucket(0), 1);
    assert_eq!(c.rollouts[0].version_of_bucket(1), 0);
    assert_eq!(c.rollouts[0].version_of_bucket(5000), 2);
    assert_eq!(c.rollouts[0].version_of_bucket(5001), 0);
}
