//! Reading the filter's series out of Envoy's `/stats/prometheus`.

/// The sum of the samples of `metric` whose labels include every
/// `label="value"` pair given; 0 if there is none.
pub fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text, metric, labels)
        .into_iter()
        .sum::<f64>()
        .max(0.0)
}

/// Every sample of `metric` whose labels include those given.
pub fn samples(text: &str, metric: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (name_labels, value) = line.rsplit_once(' ')?;
            let (name, rest) = match name_labels.split_once('{') {
                Some((n, r)) => (n, r.trim_end_matches('}')),
                None => (name_labels, ""),
            };
            if name != metric {
                return None;
            }
            let has_all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            has_all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .collect()
}
