//! Durations written the human way: `30s`, `2m`, `1h30m`. One module per
//! field, so that a bad value names its field (YAML's error path stops at
//! the enclosing map).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

fn parse<'de, D: Deserializer<'de>>(field: &str, d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{field}: {text:?} is not a duration like 30s, 2m or 1h ({e})"
        ))
    })
}

fn write<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

macro_rules! field {
    ($name:ident) => {
        pub mod $name {
            use super::*;

            pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
                write(d, s)
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
                parse(stringify!($name), d)
            }
        }
    };
}

field!(pause);
field!(interval);
field!(after);
field!(keep_previous_for);
field!(preview_for);
field!(timeout);

/// An optional duration, named by its field the same way.
macro_rules! optional {
    ($name:ident) => {
        pub mod $name {
            use super::*;

            pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
                match d {
                    Some(d) => write(d, s),
                    None => s.serialize_none(),
                }
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(
                d: D,
            ) -> Result<Option<Duration>, D::Error> {
                parse(stringify!($name), d).map(Some)
            }
        }
    };
}

optional!(max_duration);
