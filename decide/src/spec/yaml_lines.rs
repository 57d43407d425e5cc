//! Where in a YAML text a field is, for error messages: `steps[1].percent`
//! → line 9. Serde reports lines for syntax errors only; validation errors
//! come after parsing and know the field's path, not its line.

/// The 1-based line of `path` (`a.b[2].c`) in `yaml`, following block and
/// flow style; `None` if it cannot be found (the message then has no line).
pub fn line_of(yaml: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut from = 0;
    let mut indent: Option<usize> = None;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let at = (from..lines.len()).find(|&i| {
            let l = lines[i];
            let ind = l.len() - l.trim_start().len();
            let inside = indent.is_none_or(|p| ind > p || l.trim_start().starts_with("- "));
            let t = l.trim_start().trim_start_matches("- ");
            inside
                && (t.starts_with(&format!("{key}:"))
                    || l.contains(&format!("{{{key}:"))
                    || l.contains(&format!(", {key}:")))
        })?;
        from = at;
        let key_line = lines[at];
        indent = Some(key_line.len() - key_line.trim_start().len());
        if let Some(n) = index {
            // The n-th list item below the key (block style).
            let base = indent.unwrap_or(0);
            let items: Vec<usize> = (at + 1..lines.len())
                .take_while(|&i| {
                    let l = lines[i];
                    l.trim().is_empty()
                        || l.len() - l.trim_start().len() > base
                        || l.trim_start().starts_with("- ")
                })
                .filter(|&i| lines[i].trim_start().starts_with("- "))
                .collect();
            let item = *items.get(n)?;
            from = item;
            let l = lines[item];
            indent = Some(l.len() - l.trim_start().len());
        }
    }
    Some(from + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "name: checkout
identity:
  - header: x-user-id
stable: v1
canary: v2
steps:
  - {percent: 1, pause: 1m}
  - {percent: 0.5, pause: 1m}
  - percent: 100
    pause: 1m
analysis:
  interval: 1s
  min_requests: 0
";

    #[test]
    fn finds_fields_in_block_and_flow_style() {
        assert_eq!(line_of(SPEC, "canary"), Some(5));
        assert_eq!(line_of(SPEC, "steps[1].percent"), Some(8));
        assert_eq!(line_of(SPEC, "steps[2].pause"), Some(10));
        assert_eq!(line_of(SPEC, "analysis.min_requests"), Some(13));
        assert_eq!(line_of(SPEC, "identity[0].header"), Some(3));
        assert_eq!(line_of(SPEC, "steps[7].percent"), None);
        assert_eq!(line_of(SPEC, "nowhere"), None);
    }
}
