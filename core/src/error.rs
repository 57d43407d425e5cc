//! Config errors. Each names the field it is about, as a path such as
//! `rollouts[0].versions[1].weight`, so an operator can find it at once.

use alloc::string::String;
use core::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The document is not JSON of the expected shape; serde's message names
    /// the field and the line and column.
    #[error("invalid config: {0}")]
    Syntax(String),
    #[error("invalid config: {field}: {problem}")]
    Invalid { field: String, problem: Problem },
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, problem: Problem) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            problem,
        }
    }

    /// The field path of a validation error (`None` for syntax errors).
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Syntax(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Empty,
    /// Names go into stat tags and headers: `[A-Za-z0-9._-]`, 1 to 63 bytes.
    BadName,
    BadHeaderName,
    BadCookieName,
    Duplicate(String),
    WeightsSum(u64),
    WeightTooLarge(u32),
    UnknownVersion(String),
    MustStartWithSlash,
    OutOfRange {
        min: u64,
        max: u64,
    },
    Reserved,
    /// More entries than the filter takes.
    TooMany {
        limit: usize,
    },
    /// A document larger than the filter parses.
    TooLarge {
        limit: usize,
    },
    UnknownVariant(String),
    UnknownFlag(String),
    /// Prerequisites that lead back to the flag itself.
    Cycle(String),
    /// Two experiments of one exclusion group share buckets.
    Overlaps(String),
    /// A requirement that no request can meet.
    Impossible(String),
    /// A flag key that is also a rollout's name: they share stats.
    NameTaken(String),
    /// A version's weight wider than its lane.
    WiderThanLane {
        width: u32,
    },
    /// A cohort dimension whose name cannot be a stats tag.
    BadDimension,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => f.write_str("must not be empty"),
            Problem::BadName => {
                f.write_str("must be 1 to 63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")
            }
            Problem::BadHeaderName => {
                f.write_str("must be a lowercase HTTP header name (letters, digits, '-', '_')")
            }
            Problem::BadCookieName => f.write_str(
                "must be a cookie name: visible ASCII without spaces, '=', ';', ',' or quotes",
            ),
            Problem::Duplicate(name) => write!(f, "duplicate name {name:?}"),
            Problem::WeightsSum(sum) => {
                write!(f, "weights add up to {sum}, expected 10000 (basis points)")
            }
            Problem::WeightTooLarge(w) => write!(f, "weight {w} exceeds 10000"),
            Problem::UnknownVersion(name) => {
                write!(f, "{name:?} is not one of this rollout's versions")
            }
            Problem::MustStartWithSlash => f.write_str("must start with '/'"),
            Problem::OutOfRange { min, max } => write!(f, "must be between {min} and {max}"),
            Problem::Reserved => f.write_str("is reserved and cannot be used here"),
            Problem::TooMany { limit } => write!(f, "at most {limit} entries"),
            Problem::TooLarge { limit } => write!(f, "document larger than {limit} bytes"),
            Problem::UnknownVariant(name) => {
                write!(f, "{name:?} is not one of this flag's variants")
            }
            Problem::UnknownFlag(key) => write!(f, "no flag {key:?} in this config"),
            Problem::Cycle(path) => write!(f, "prerequisites form a cycle: {path}"),
            Problem::Overlaps(other) => {
                write!(f, "overlaps flag {other:?} of the same exclusion group")
            }
            Problem::Impossible(why) => write!(f, "can never be met: {why}"),
            Problem::NameTaken(name) => {
                write!(f, "{name:?} is already a rollout's name (flags and rollouts share stats)")
            }
            Problem::WiderThanLane { width } => {
                write!(f, "exceeds its lane of {width} basis points")
            }
            Problem::BadDimension => f.write_str(
                "the header or cookie name must be 1 to 32 letters, digits, '.', '_' or '-' (it becomes a stats tag)",
            ),
        }
    }
}
