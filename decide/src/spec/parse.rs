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
