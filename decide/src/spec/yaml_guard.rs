//! Limits a spec's YAML must meet before the parser sees it, checked in one
//! linear pass: the parser's cost grows faster than linearly with nesting,
//! and it runs on the server's threads.

/// Largest spec accepted, in bytes.
pub const MAX_BYTES: usize = 64 * 1024;
/// Deepest nesting accepted: block indentation, compact `- - -` items and
/// flow `[ {` together.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the spec is {0} bytes: at most {MAX_BYTES}")]
    TooLarge(usize),
    #[error("line {line}: nested {depth} levels deep: at most {MAX_DEPTH}")]
    TooDeep { line: usize, depth: usize },
}

pub fn check(text: &str) -> Result<(), LimitError> {
    if text.len() > MAX_BYTES {
        return Err(LimitError::TooLarge(text.len()));
    }
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (i, line) in text.lines().enumerate() {
        let deep = |depth: usize| LimitError::TooDeep { line: i + 1, depth };
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let mut depth = 0;
        if flow == 0 {
            let indent = line.len() - body.len();
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
            let mut rest = body;
            while let Some(r) = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("-\t")) {
                depth += 1;
                rest = r.trim_start();
            }
        }
        depth += indents.len();
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for c in body.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') if matches!(prev, ' ' | '[' | '{' | ',' | ':') => {
                    quote = Some(c)
                }
                (None, '#') if prev == ' ' => break,
                (None, '[' | '{') => {
                    flow += 1;
                    if depth + flow > MAX_DEPTH {
                        return Err(deep(depth + flow));
                    }
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
            prev = c;
        }
        if depth + flow > MAX_DEPTH {
            return Err(deep(depth + flow));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_specs_pass() {
        let spec = "name: a\nsteps:\n  - {percent: 1, pause: 1m}\n  - percent: 50\n    approval: true\nidentity: [{header: x-user-id}]\nreason: 'a [b {c'  # [[[\n";
        assert_eq!(check(spec), Ok(()));
    }

    #[test]
    fn deep_nesting_of_every_kind_is_refused_before_parsing() {
        let flow = format!("name: {}{}", "[".repeat(40), "]".repeat(40));
        assert!(matches!(
            check(&flow),
            Err(LimitError::TooDeep { line: 1, .. })
        ));
        let block: String = (0..40)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(matches!(check(&block), Err(LimitError::TooDeep { .. })));
        let compact = format!("steps:\n{}x\n", "- ".repeat(40));
        assert!(matches!(
            check(&compact),
            Err(LimitError::TooDeep { line: 2, .. })
        ));
        let big = "#".repeat(MAX_BYTES + 1);
        assert_eq!(check(&big), Err(LimitError::TooLarge(MAX_BYTES + 1)));
    }
}
