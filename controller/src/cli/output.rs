//! Read commands' output for scripts (`-o json`, `-o yaml`): every answer in
//! one versioned envelope, `{"apiVersion": "dimmer.dev/v1", "kind": …}`,
//! a list's entries under `items` (docs/pipeline.md lists each kind).

use clap::ValueEnum;
use serde::Serialize;

/// The version of the envelope and of every kind in it. Fields may be added
/// within a version; none is removed or changes meaning.
pub const API_VERSION: &str = "dimmer.dev/v1";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    #[default]
    Text,
    Json,
    Yaml,
}

#[derive(Serialize)]
struct List<'a, T: Serialize> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'a str,
    items: &'a [T],
}

#[derive(Serialize)]
struct One<'a, T: Serialize> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'a str,
    #[serde(flatten)]
    value: &'a T,
}

fn emit(format: Output, value: &impl Serialize) -> anyhow::Result<()> {
    match format {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_norway::to_string(value)?),
        Output::Text => {}
    }
    Ok(())
}

/// Prints `items` as a list of `kind` (`RolloutStatusList`, …). Returns
/// false for text, which the caller renders itself.
pub fn list<T: Serialize>(format: Output, kind: &str, items: &[T]) -> anyhow::Result<bool> {
    if format == Output::Text {
        return Ok(false);
    }
    emit(
        format,
        &List {
            api_version: API_VERSION,
            kind,
            items,
        },
    )?;
    Ok(true)
}

/// Prints one object of `kind`, its fields beside `apiVersion` and `kind`.
pub fn one<T: Serialize>(format: Output, kind: &str, value: &T) -> anyhow::Result<bool> {
    if format == Output::Text {
        return Ok(false);
    }
    emit(
        format,
        &One {
            api_version: API_VERSION,
            kind,
            value,
        },
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_is_enveloped_and_versioned() {
        let v = serde_json::to_value(List {
            api_version: API_VERSION,
            kind: "AuditRecordList",
            items: &[1, 2],
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "dimmer.dev/v1", "kind": "AuditRecordList", "items": [1, 2]})
        );
        let v = serde_json::to_value(One {
            api_version: API_VERSION,
            kind: "Which",
            value: &serde_json::json!({"version": "v2"}),
        })
        .unwrap();
        assert_eq!(v["kind"], "Which");
        assert_eq!(v["version"], "v2");
    }
}
