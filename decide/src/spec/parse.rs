//! A spec read from YAML: a rollout's, or a flag's (`kind: flag`), which
//! becomes the rollout that carries the flag. Limits are checked before the
//! parser runs (`yaml_guard`); an invalid field is named with its line.

use super::error::{invalid, SpecError};
use super::flag::{FlagSpec, Kind};
use super::rollout::RolloutSpec;
use super::{strict, yaml_guard, yaml_lines};

impl RolloutSpec {
    /// Parses and validates a YAML spec: a rollout's, or a flag's
    /// (`kind: flag`), which becomes the rollout that carries the flag.
    pub fn from_yaml(text: &str) -> Result<RolloutSpec, SpecError> {
        yaml_guard::check(text).map_err(|e| SpecError::Yaml(e.to_string()))?;
        one_document(text)?;
        let with_line = |e: SpecError| match e {
            SpecError::Invalid { field, reason, .. } => {
                let line = yaml_lines::line_of(text, &field);
                SpecError::Invalid {
                    field,
                    reason,
                    line,
                }
            }
            other => other,
        };
        let written: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| SpecError::Yaml(e.to_string()))?;
        if kind_of(&written) == Some(Kind::Flag) {
            let flag: FlagSpec =
                serde_norway::from_str(text).map_err(|e| SpecError::Yaml(e.to_string()))?;
            strict::check(&written, &flag).map_err(with_line)?;
            flag.validate().map_err(with_line)?;
            let spec = flag.into_rollout();
            spec.validate().map_err(with_line)?;
            return Ok(spec);
        }
        let mut spec: RolloutSpec =
            serde_norway::from_str(text).map_err(|e| SpecError::Yaml(e.to_string()))?;
        strict::check(&written, &spec).map_err(with_line)?;
        if let Some(bg) = spec.blue_green() {
            if !spec.steps.is_empty() && spec.steps != bg.steps() {
                return Err(with_line(invalid(
                    "steps",
                    "are made by strategy.blue_green (the preview, then the switch): leave them out",
                )));
            }
            spec.steps = bg.steps();
        }
        if spec.flag.is_some() {
            return Err(invalid(
                "flag",
                "is not a field of a rollout spec; a flag spec starts with `kind: flag`",
            ));
        }
        if spec.arm_of.is_some() {
            return Err(invalid(
                "arm_of",
                "is set by the controller on each arm of an A/B/n rollout; list the candidates in `arms`",
            ));
        }
        spec.validate().map_err(with_line)?;
        Ok(spec)
    }
}

impl RolloutSpec {
    /// Every spec of a text of one or more YAML documents (`---` lines
    /// between them), each parsed and checked on its own; an error names
    /// the document (its index and name) and the field, with the line in
    /// the whole text. Empty documents are skipped.
    pub fn from_yaml_documents(text: &str) -> Result<Vec<RolloutSpec>, SpecError> {
        yaml_guard::check(text).map_err(|e| SpecError::Yaml(e.to_string()))?;
        // One document: its errors as a single spec's, without an index.
        if documents(text).len() == 1 {
            return RolloutSpec::from_yaml(text).map(|s| vec![s]);
        }
        let mut specs = Vec::new();
        for (i, (offset, doc)) in documents(text).into_iter().enumerate() {
            let name = serde_norway::from_str::<serde_norway::Value>(doc)
                .ok()
                .and_then(|v| {
                    v.get("name")
                        .or_else(|| v.get("key"))
                        .and_then(serde_norway::Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "(no name)".into());
            let spec = RolloutSpec::from_yaml(doc).map_err(|e| match e {
                SpecError::Invalid {
                    field,
                    reason,
                    line,
                } => SpecError::Invalid {
                    field: format!("document {i} ({name}): {field}"),
                    reason,
                    line: line.map(|l| l + offset),
                },
                SpecError::Yaml(m) => SpecError::Yaml(format!("document {i} ({name}): {m}")),
            })?;
            specs.push(spec);
        }
        if specs.is_empty() {
            return Err(SpecError::Yaml("no spec in the text".into()));
        }
        Ok(specs)
    }
}

/// How many non-empty YAML documents `text` holds (split at `---` lines).
pub fn document_count(text: &str) -> usize {
    documents(text).len()
}

/// The documents of `text`, split at `---` lines, each with the number of
/// lines before it; empty ones left out.
fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut start, mut start_line) = (0, 0);
    let mut at = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_end() == "---" {
            out.push((start_line, &text[start..at]));
            start = at + line.len();
            start_line = n + 1;
        }
        at += line.len();
    }
    out.push((start_line, &text[start..]));
    out.into_iter()
        .filter(|(_, d)| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// A text of several YAML documents (`---` between them) is refused, naming
/// each: applying only the first, or reading a flag document as a rollout,
/// would be worse than a clear no.
fn one_document(text: &str) -> Result<(), SpecError> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for (i, d) in serde_norway::Deserializer::from_str(text).enumerate() {
        let v = serde_norway::Value::deserialize(d).unwrap_or(serde_norway::Value::Null);
        if !v.is_null() {
            let name = v
                .get("name")
                .or_else(|| v.get("key"))
                .and_then(serde_norway::Value::as_str)
                .unwrap_or("(no name)");
            docs.push(format!("document {i} ({name})"));
        }
    }
    if docs.len() > 1 {
        return Err(SpecError::Yaml(format!(
            "holds {} YAML documents: {}; one document a spec (a file each)",
            docs.len(),
            docs.join(", ")
        )));
    }
    Ok(())
}

/// The `kind` a YAML document declares at its top level, if any.
fn kind_of(value: &serde_norway::Value) -> Option<Kind> {
    serde_norway::from_value(value.get("kind")?.clone()).ok()
}
