//! Validation: a config is accepted whole or refused whole, and a refusal
//! names the first field at fault.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::config::{
    Anonymous, ConfigDoc, ControllerConfig, Flag, IdentitySource, Match, PluginConfig, Rollout,
    Version,
};
use crate::error::{ConfigError, Problem};
use crate::matching::lane_start;

type Result<T = ()> = core::result::Result<T, ConfigError>;

/// The largest config document or plugin configuration parsed, checked
/// before any parsing: a flood is refused for its size, not after the work.
pub const MAX_DOC_BYTES: usize = 1 << 20;
pub const MAX_ROLLOUTS: usize = 256;
pub const MAX_FLAGS: usize = 128;
/// Versions of a rollout, variants of a flag.
pub const MAX_VARIANTS: usize = 16;
pub const MAX_OVERRIDES: usize = 32;
pub const MAX_OVERRIDE_VALUES: usize = 256;
pub const MAX_REQUIRES: usize = 8;
/// Identity sources a rollout or flag tries in turn.
pub const MAX_IDENTITY: usize = 8;

fn check_size(bytes: &[u8]) -> Result {
    if bytes.len() > MAX_DOC_BYTES {
        return Err(ConfigError::invalid(
            "(document)",
            Problem::TooLarge {
                limit: MAX_DOC_BYTES,
            },
        ));
    }
    Ok(())
}

/// Parses and validates the Envoy plugin configuration.
pub fn parse_plugin_config(bytes: &[u8]) -> Result<PluginConfig> {
    check_size(bytes)?;
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
    check_size(bytes)?;
    let doc: ConfigDoc =
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Syntax(format!("{e}")))?;
    validate_rollouts(&doc.rollouts, "rollouts")?;
    validate_flags(&doc.flags, &doc.rollouts, "flags")?;
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
    check_header_name(&cfg.flags_header, "flags_header")?;
    if matches!(
        cfg.flags_header.as_str(),
        "host" | "cookie" | "content-length"
    ) || cfg.flags_header == cfg.route_header
    {
        return Err(ConfigError::invalid("flags_header", Problem::Reserved));
    }
    if let Some(c) = &cfg.controller {
        validate_controller(c)?;
    }
    validate_rollouts(&cfg.rollouts, "rollouts")?;
    validate_flags(&cfg.flags, &cfg.rollouts, "flags")
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
    max_len(rollouts.len(), MAX_ROLLOUTS, at)?;
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
    check_match(&r.matcher, at)?;
    check_identity(&r.identity, at)?;
    if r.anonymous == Anonymous::Cookie {
        check_cookie_name(
            &r.anonymous_cookie.name,
            &format!("{at}.anonymous_cookie.name"),
        )?;
    }
    non_empty(&r.salt, &format!("{at}.salt"))?;
    check_split(&r.versions, &format!("{at}.versions"))?;
    known_version(r, &r.stable, &format!("{at}.stable"))?;
    if r.lanes {
        check_lanes(r, at)?;
    }
    if let Some(shadow) = &r.shadow {
        known_version(r, shadow, &format!("{at}.shadow"))?;
    }
    check_dimensions(&r.dimensions, at)?;
    max_len(r.overrides.len(), MAX_OVERRIDES, &format!("{at}.overrides"))?;
    for (i, o) in r.overrides.iter().enumerate() {
        check_override(
            &o.header,
            &o.values,
            &o.version,
            "version",
            &format!("{at}.overrides[{i}]"),
            |name, field| known_version(r, name, field),
        )?;
    }
    Ok(())
}

/// `{at}.match`: a host that is not empty, a path prefix from `/`.
fn check_match(m: &Match, at: &str) -> Result {
    if let Some(host) = &m.host {
        non_empty(host, &format!("{at}.match.host"))?;
    }
    if let Some(prefix) = &m.path_prefix {
        if !prefix.starts_with('/') {
            return Err(ConfigError::invalid(
                format!("{at}.match.path_prefix"),
                Problem::MustStartWithSlash,
            ));
        }
    }
    Ok(())
}

/// `{at}.identity`: at most [`MAX_IDENTITY`] header or cookie names.
fn check_identity(sources: &[IdentitySource], at: &str) -> Result {
    max_len(sources.len(), MAX_IDENTITY, &format!("{at}.identity"))?;
    for (i, src) in sources.iter().enumerate() {
        match src {
            IdentitySource::Header(h) => {
                check_header_name(h, &format!("{at}.identity[{i}].header"))?
            }
            IdentitySource::Cookie(c) => {
                check_cookie_name(c, &format!("{at}.identity[{i}].cookie"))?
            }
        }
    }
    Ok(())
}

/// `{at}.overrides[i]`: a header, 1 to [`MAX_OVERRIDE_VALUES`] values, and
/// a target that `known` accepts.
fn check_override(
    header: &str,
    values: &[String],
    target: &str,
    target_field: &str,
    at: &str,
    known: impl Fn(&str, &str) -> Result,
) -> Result {
    check_header_name(header, &format!("{at}.header"))?;
    if values.is_empty() {
        return Err(ConfigError::invalid(format!("{at}.values"), Problem::Empty));
    }
    max_len(values.len(), MAX_OVERRIDE_VALUES, &format!("{at}.values"))?;
    known(target, &format!("{at}.{target_field}"))
}

/// Every version other than stable fits its lane.
fn check_lanes(r: &Rollout, at: &str) -> Result {
    let n = r.versions.iter().filter(|v| v.name != r.stable).count();
    if n == 0 {
        return Err(ConfigError::invalid(
            format!("{at}.versions"),
            Problem::Empty,
        ));
    }
    let arms = r
        .versions
        .iter()
        .enumerate()
        .filter(|(_, v)| v.name != r.stable);
    for (lane, (i, v)) in arms.enumerate() {
        let width = u32::from(lane_start(lane + 1, n) - lane_start(lane, n));
        if v.weight > width {
            return Err(ConfigError::invalid(
                format!("{at}.versions[{i}].weight"),
                Problem::WiderThanLane { width },
            ));
        }
    }
    Ok(())
}

/// A rollout's versions or a flag's variants: 1 to 16 uniquely named
/// entries whose weights, each at most 10000, add up to 10000 basis points.
fn check_split(entries: &[Version], field: &str) -> Result {
    if entries.is_empty() {
        return Err(ConfigError::invalid(field, Problem::Empty));
    }
    max_len(entries.len(), MAX_VARIANTS, field)?;
    let mut sum: u64 = 0;
    for (i, v) in entries.iter().enumerate() {
        check_name(&v.name, &format!("{field}[{i}].name"))?;
        if entries[..i].iter().any(|o| o.name == v.name) {
            return Err(ConfigError::invalid(
                format!("{field}[{i}].name"),
                Problem::Duplicate(v.name.clone()),
            ));
        }
        if v.weight > 10_000 {
            return Err(ConfigError::invalid(
                format!("{field}[{i}].weight"),
                Problem::WeightTooLarge(v.weight),
            ));
        }
        sum += u64::from(v.weight);
    }
    if sum != 10_000 {
        return Err(ConfigError::invalid(field, Problem::WeightsSum(sum)));
    }
    Ok(())
}

fn max_len(len: usize, limit: usize, field: &str) -> Result {
    if len > limit {
        Err(ConfigError::invalid(field, Problem::TooMany { limit }))
    } else {
        Ok(())
    }
}

/// Flags one by one, then what binds them: unique keys apart from the
/// rollouts' names, prerequisites that exist, can be met and form no
/// cycle, and exclusion slices that do not overlap.
pub fn validate_flags(flags: &[Flag], rollouts: &[Rollout], at: &str) -> Result {
    max_len(flags.len(), MAX_FLAGS, at)?;
    for (i, f) in flags.iter().enumerate() {
        let at = format!("{at}[{i}]");
        validate_flag(f, &at)?;
        if flags[..i].iter().any(|o| o.key == f.key) {
            return Err(ConfigError::invalid(
                format!("{at}.key"),
                Problem::Duplicate(f.key.clone()),
            ));
        }
        if rollouts.iter().any(|r| r.name == f.key) {
            return Err(ConfigError::invalid(
                format!("{at}.key"),
                Problem::NameTaken(f.key.clone()),
            ));
        }
    }
    for (i, f) in flags.iter().enumerate() {
        for (j, p) in f.requires.iter().enumerate() {
            let field = format!("{at}[{i}].requires[{j}]");
            let Some(other) = flags.iter().find(|o| o.key == p.flag) else {
                return Err(ConfigError::invalid(
                    format!("{field}.flag"),
                    Problem::UnknownFlag(p.flag.clone()),
                ));
            };
            for (k, v) in p.variants.iter().enumerate() {
                if !other.variants.iter().any(|o| &o.name == v) {
                    return Err(ConfigError::invalid(
                        format!("{field}.variants[{k}]"),
                        Problem::UnknownVariant(v.clone()),
                    ));
                }
            }
            if let (Some(a), Some(b)) = (&f.exclusion, &other.exclusion) {
                let only_default = p.variants.iter().all(|v| v == &other.default_variant);
                if a.group == b.group && !only_default {
                    return Err(ConfigError::invalid(
                        field,
                        Problem::Impossible(format!(
                            "{:?} is in the same exclusion group {:?}, so no identity is in both",
                            other.key, a.group
                        )),
                    ));
                }
            }
        }
        if let Some(ex) = &f.exclusion {
            let clash = flags[..i].iter().find(|o| {
                o.exclusion.as_ref().is_some_and(|e| {
                    e.group == ex.group && e.from_bp < ex.to_bp && ex.from_bp < e.to_bp
                })
            });
            if let Some(o) = clash {
                return Err(ConfigError::invalid(
                    format!("{at}[{i}].exclusion"),
                    Problem::Overlaps(o.key.clone()),
                ));
            }
        }
    }
    if let Some((i, path)) = find_cycle(flags) {
        return Err(ConfigError::invalid(
            format!("{at}[{i}].requires"),
            Problem::Cycle(path),
        ));
    }
    Ok(())
}

/// The first flag on a prerequisite cycle and the cycle as `a -> b -> a`.
fn find_cycle(flags: &[Flag]) -> Option<(usize, String)> {
    let index = |key: &str| flags.iter().position(|f| f.key == key);
    // 0 unvisited, 1 on the current path, 2 done. Depth is bounded by
    // MAX_FLAGS, so recursion is bounded too.
    fn visit(
        i: usize,
        flags: &[Flag],
        index: &dyn Fn(&str) -> Option<usize>,
        mark: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        mark[i] = 1;
        path.push(i);
        for p in &flags[i].requires {
            let Some(j) = index(&p.flag) else { continue };
            if mark[j] == 1 {
                let start = path.iter().position(|&k| k == j).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(j);
                return Some(cycle);
            }
            if mark[j] == 0 {
                if let Some(c) = visit(j, flags, index, mark, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        mark[i] = 2;
        None
    }
    let mut mark = alloc::vec![0u8; flags.len()];
    for i in 0..flags.len() {
        if mark[i] == 0 {
            let mut path = Vec::new();
            if let Some(cycle) = visit(i, flags, &index, &mut mark, &mut path) {
                let names: Vec<&str> = cycle.iter().map(|&k| flags[k].key.as_str()).collect();
                return Some((cycle[0], names.join(" -> ")));
            }
        }
    }
    None
}

pub fn validate_flag(f: &Flag, at: &str) -> Result {
    check_name(&f.key, &format!("{at}.key"))?;
    check_match(&f.matcher, at)?;
    check_identity(&f.identity, at)?;
    if let Some(salt) = &f.salt {
        non_empty(salt, &format!("{at}.salt"))?;
    }
    check_split(&f.variants, &format!("{at}.variants"))?;
    let known = |name: &str, field: &str| {
        if f.variants.iter().any(|v| v.name == name) {
            Ok(())
        } else {
            Err(ConfigError::invalid(
                field,
                Problem::UnknownVariant(String::from(name)),
            ))
        }
    };
    known(&f.default_variant, &format!("{at}.default_variant"))?;
    max_len(f.overrides.len(), MAX_OVERRIDES, &format!("{at}.overrides"))?;
    for (i, o) in f.overrides.iter().enumerate() {
        check_override(
            &o.header,
            &o.values,
            &o.variant,
            "variant",
            &format!("{at}.overrides[{i}]"),
            known,
        )?;
    }
    max_len(f.requires.len(), MAX_REQUIRES, &format!("{at}.requires"))?;
    for (i, p) in f.requires.iter().enumerate() {
        if p.flag == f.key {
            return Err(ConfigError::invalid(
                format!("{at}.requires[{i}].flag"),
                Problem::Cycle(format!("{} -> {}", f.key, f.key)),
            ));
        }
        if p.variants.is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.requires[{i}].variants"),
                Problem::Empty,
            ));
        }
        max_len(
            p.variants.len(),
            MAX_VARIANTS,
            &format!("{at}.requires[{i}].variants"),
        )?;
    }
    if let Some(ex) = &f.exclusion {
        check_name(&ex.group, &format!("{at}.exclusion.group"))?;
        if ex.to_bp > 10_000 {
            return Err(ConfigError::invalid(
                format!("{at}.exclusion.to_bp"),
                Problem::OutOfRange {
                    min: 1,
                    max: 10_000,
                },
            ));
        }
        if ex.from_bp >= ex.to_bp {
            return Err(ConfigError::invalid(
                format!("{at}.exclusion.from_bp"),
                Problem::OutOfRange {
                    min: 0,
                    max: u64::from(ex.to_bp.saturating_sub(1)),
                },
            ));
        }
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

/// Dimensions a rollout may count by.
pub const MAX_DIMENSIONS: usize = 4;
/// Values one dimension may count apart.
pub const MAX_DIMENSION_VALUES: u8 = 32;

fn check_dimensions(dims: &[crate::config::Dimension], at: &str) -> Result {
    max_len(dims.len(), MAX_DIMENSIONS, &format!("{at}.dimensions"))?;
    for (i, d) in dims.iter().enumerate() {
        let field = format!("{at}.dimensions[{i}]");
        let name = d.name();
        if crate::mix::tag_value(name.as_bytes()).as_deref() != Some(name.as_str()) {
            return Err(ConfigError::invalid(field, Problem::BadDimension));
        }
        if d.max_values == 0 || d.max_values > MAX_DIMENSION_VALUES {
            return Err(ConfigError::invalid(
                format!("{field}.max_values"),
                Problem::OutOfRange {
                    min: 1,
                    max: u64::from(MAX_DIMENSION_VALUES),
                },
            ));
        }
        if dims[..i].iter().any(|o| o.name() == name) {
            return Err(ConfigError::invalid(field, Problem::Duplicate(name)));
        }
    }
    Ok(())
}
