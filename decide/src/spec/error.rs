//! The spec's error, and the checks every section of the spec shares.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// YAML that does not parse or does not fit the schema; the message
    /// names the field, the line and the column.
    #[error("invalid rollout spec: {0}")]
    Yaml(String),
    #[error("invalid rollout spec: {field}: {reason}{}", line.map_or(String::new(), |l| format!(" (line {l})")))]
    Invalid {
        field: String,
        reason: String,
        /// Where the field is in the YAML, when the spec came from text.
        line: Option<usize>,
    },
}

/// The longest pause, hold or keep of any duration in a spec.
pub const MAX_PAUSE: Duration = Duration::from_secs(30 * 24 * 3600);

/// `x` in `[lo, hi]`, written so that NaN is refused too.
pub(crate) fn in_range(x: f64, lo: f64, hi: f64, field: &str, what: &str) -> Result<(), SpecError> {
    if x >= lo && x <= hi {
        Ok(())
    } else {
        Err(invalid(field, format!("must be {what}, not {x}")))
    }
}

/// A rollout's name is a URL path segment and a stats tag: letters, digits,
/// `-`, `_` and `.`, starting with a letter or digit, so that it can never
/// be `.` or `..` or need escaping to mean itself.
pub fn check_name(name: &str) -> Result<(), SpecError> {
    if dimmer_core::validate::is_valid_name(name) {
        Ok(())
    } else {
        Err(invalid(
            "name",
            "must be 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit",
        ))
    }
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
        line: None,
    }
}
