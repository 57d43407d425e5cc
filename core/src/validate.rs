//! Validation: a config is accepted whole or refused whole, and a refusal
//! names the first field at fault.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::config::{
    Anonymous, ConfigDoc, ControllerConfig, IdentitySource, PluginConfig, Rollout,
};
use crate::error::{ConfigError, Problem};

type Result<T = ()> = core::result::Result<T, ConfigError>;

/// Parses and validates the Envoy plugin configuration.
pub fn parse_plugin_config(bytes: &[u8]) -> Result<PluginConfig> {
    // An empty `configuration` means "no rollouts yet", not an error.
    let trimmed = bytes.trim_ascii();
    let cfg: PluginConfig = if trimmed.is_empty() {
        serde_json::from_slice(b"{}")
    } else {
        serde_json::from_slice(trimmed)
    }
    .map_err(|e| ConfigError::Syntax(format!("{e}")))?;
    validate_plugin(&cfg)?;
    Ok(cfg)
}

/// Parses and validates a `GET /v1/config` body.
pub fn parse_config_doc(bytes: &[u8]) -> Result<ConfigDoc> {
    let doc: ConfigDoc =
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Syntax(format!("{e}")))?;
    validate_rollouts(&doc.rollouts, "rollouts")?;
    Ok(doc)
}

pub fn validate_plugin(cfg: &PluginConfig) -> Result {
    check_header_name(&cfg.route_header, "route_header")?;
    if matches!(
        cfg.route_header.as_str(),
        "host" | "cookie" | "content-length"
    ) {
        return Err(ConfigError::invalid("route_header", Problem::Reserved));
    }
    if let Some(c) = &cfg.controller {
        validate_controller(c)?;
    }
    validate_rollouts(&cfg.rollouts, "rollouts")
}

fn validate_controller(c: &ControllerConfig) -> Result {
    non_empty(&c.cluster, "controller.cluster")?;
    if let Some(a) = &c.authority {
        non_empty(a, "controller.authority")?;
    }
    if !c.path.starts_with('/') {
        return Err(ConfigError::invalid(
            "controller.path",
            Problem::MustStartWithSlash,
        ));
    }
    in_range(
        c.poll_interval_ms,
        100,
        3_600_000,
        "controller.poll_interval_ms",
    )?;
    in_range(c.timeout_ms, 10, 60_000, "controller.timeout_ms")
}

pub fn validate_rollouts(rollouts: &[Rollout], at: &str) -> Result {
    let mut seen: Vec<&str> = Vec::with_capacity(rollouts.len());
    for (i, r) in rollouts.iter().enumerate() {
        let at = format!("{at}[{i}]");
        validate_rollout(r, &at)?;
        if seen.contains(&r.name.as_str()) {
            return Err(ConfigError::invalid(
                format!("{at}.name"),
                Problem::Duplicate(r.name.clone()),
            ));
        }
        seen.push(&r.name);
    }
    Ok(())
}

pub fn validate_rollout(r: &Rollout, at: &str) -> Result {
    check_name(&r.name, &format!("{at}.name"))?;
    if let Some(host) = &r.matcher.host {
        non_empty(host, &format!("{at}.match.host"))?;
    }
    if let Some(prefix) = &r.matcher.path_prefix {
        if !prefix.starts_with('/') {
            return Err(ConfigError::invalid(
                format!("{at}.match.path_prefix"),
                Problem::MustStartWithSlash,
            ));
        }
    }
    for (i, src) in r.identity.iter().enumerate() {
        match src {
            IdentitySource::Header(h) => {
                check_header_name(h, &format!("{at}.identity[{i}].header"))?
            }
            IdentitySource::Cookie(c) => {
                check_cookie_name(c, &format!("{at}.identity[{i}].cookie"))?
            }
        }
    }
    if r.anonymous == Anonymous::Cookie {
        check_cookie_name(
            &r.anonymous_cookie.name,
            &format!("{at}.anonymous_cookie.name"),
        )?;
    }
    non_empty(&r.salt, &format!("{at}.salt"))?;
    if r.versions.is_empty() {
        return Err(ConfigError::invalid(
            format!("{at}.versions"),
            Problem::Empty,
        ));
    }
    let mut sum: u64 = 0;
    for (i, v) in r.versions.iter().enumerate() {
        check_name(&v.name, &format!("{at}.versions[{i}].name"))?;
        if r.versions[..i].iter().any(|o| o.name == v.name) {
            return Err(ConfigError::invalid(
                format!("{at}.versions[{i}].name"),
                Problem::Duplicate(v.name.clone()),
            ));
        }
        if v.weight > 10_000 {
            return Err(ConfigError::invalid(
                format!("{at}.versions[{i}].weight"),
                Problem::WeightTooLarge(v.weight),
            ));
        }
        sum += u64::from(v.weight);
    }
    if sum != 10_000 {
        return Err(ConfigError::invalid(
            format!("{at}.versions"),
            Problem::WeightsSum(sum),
        ));
    }
    known_version(r, &r.stable, &format!("{at}.stable"))?;
    for (i, o) in r.overrides.iter().enumerate() {
        check_header_name(&o.header, &format!("{at}.overrides[{i}].header"))?;
        if o.values.is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.overrides[{i}].values"),
                Problem::Empty,
            ));
        }
        known_version(r, &o.version, &format!("{at}.overrides[{i}].version"))?;
    }
    Ok(())
}

fn known_version(r: &Rollout, name: &str, field: &str) -> Result {
    if r.versions.iter().any(|v| v.name == name) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            Problem::UnknownVersion(String::from(name)),
        ))
    }
}

fn non_empty(s: &str, field: &str) -> Result {
    if s.is_empty() {
        Err(ConfigError::invalid(field, Problem::Empty))
    } else {
        Ok(())
    }
}

fn in_range(v: u64, min: u64, max: u64, field: &str) -> Result {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            Problem::OutOfRange { min, max },
        ))
    }
}

/// Rollout and version names end up in stat tags, route headers and URLs.
/// Letters, digits, `.`, `_` and `-`, starting with a letter or digit: a
/// name is a stats tag and a URL path segment, and must never be `.` or `..`.
pub fn is_valid_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_name(s: &str, field: &str) -> Result {
    non_empty(s, field)?;
    if is_valid_name(s) {
        Ok(())
    } else {
        Err(ConfigError::invalid(field, Problem::BadName))
    }
}

fn check_header_name(s: &str, field: &str) -> Result {
    non_empty(s, field)?;
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(field, Problem::BadHeaderName))
    }
}

fn check_cookie_name(s: &str, field: &str) -> Result {
    non_empty(s, field)?;
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'=' | b';' | b',' | b'"' | b'\\'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(field, Problem::BadCookieName))
    }
}
