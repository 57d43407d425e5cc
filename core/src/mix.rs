//! Cohort dimensions: what a request says about who sent it (a header such
//! as `x-country`, a cookie, the user agent's class), counted per version so
//! the controller can check that the canary's users look like everyone's.
//!
//! Whatever clients send, the counters stay bounded: a value gets a counter
//! of its own only once it is known to be frequent — its guaranteed count in
//! a Space-Saving sketch (Metwally et al., 2005) reaches [`PROMOTE_AT`] — and
//! at most `max_values` values per dimension ever do; every other value is
//! counted as [`OTHER`]. A value sent once never costs a counter, however
//! many distinct values a client invents.

use alloc::string::String;
use alloc::vec::Vec;

use crate::config::{Dimension, DimensionSource};
use crate::cookie::cookie_value;
use crate::decide::Request;

/// The value of every request whose value has no counter of its own.
pub const OTHER: &str = "_other";
/// The value of a request that does not carry the dimension at all.
pub const NONE: &str = "_none";
/// A value's guaranteed count before it gets a counter of its own.
pub const PROMOTE_AT: u32 = 8;
/// Longest value kept; longer ones are [`OTHER`].
pub const MAX_VALUE_LEN: usize = 32;
/// Sketch entries per counter slot: the sketch finds every value more
/// frequent than 1/(SKETCH_PER_SLOT · max_values) of the dimension's requests.
pub const SKETCH_PER_SLOT: usize = 4;

/// What the dimension of one request comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The counter of promoted value `i`.
    Value(usize),
    /// A value promoted now: the caller gives it counter `i`.
    Promoted(usize),
    Other,
    None,
}

/// A user agent's class: `bot`, `mobile` or `desktop`.
pub fn user_agent_class(ua: &[u8]) -> &'static str {
    const BOTS: [&[u8]; 9] = [
        b"bot",
        b"crawl",
        b"spider",
        b"slurp",
        b"curl",
        b"wget",
        b"python",
        b"go-http",
        b"headless",
    ];
    const MOBILE: [&[u8]; 4] = [b"mobi", b"android", b"iphone", b"ipad"];
    let has = |needle: &[u8]| {
        ua.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    if BOTS.iter().any(|b| has(b)) {
        "bot"
    } else if MOBILE.iter().any(|m| has(m)) {
        "mobile"
    } else {
        "desktop"
    }
}

/// A value as a stats tag: lowercased, 1 to [`MAX_VALUE_LEN`] bytes of
/// `a-z 0-9 . _ -` starting with a letter or digit; anything else is `None`
/// (counted as [`OTHER`]), so no value can reach into the stat's name.
pub fn tag_value(raw: &[u8]) -> Option<String> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_VALUE_LEN
        && raw[0].is_ascii_alphanumeric()
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then(|| {
        raw.iter()
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect()
    })
}

/// The raw value of `d` in a request.
pub fn raw_value(d: &Dimension, req: &impl Request) -> Option<Vec<u8>> {
    match &d.source {
        DimensionSource::Header(h) => req.header(h),
        DimensionSource::Cookie(c) => {
            let header = req.header("cookie")?;
            cookie_value(&header, c).map(<[u8]>::to_vec)
        }
        DimensionSource::UserAgentClass => req
            .header("user-agent")
            .map(|ua| user_agent_class(&ua).as_bytes().to_vec()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    hash: u64,
    count: u32,
    /// The count it inherited when it took an evicted entry's place: its
    /// true count is at least `count − error`.
    error: u32,
}

/// One dimension's values: those with a counter, and the sketch that finds
/// the next ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopValues {
    max_values: usize,
    promoted: Vec<String>,
    sketch: Vec<Entry>,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl TopValues {
    pub fn new(max_values: usize) -> TopValues {
        TopValues {
            max_values,
            promoted: Vec::new(),
            sketch: Vec::new(),
        }
    }

    /// The values with counters, in the order they got them.
    pub fn promoted(&self) -> &[String] {
        &self.promoted
    }

    /// One request's value (`None`: it had none).
    pub fn observe(&mut self, raw: Option<&[u8]>) -> Slot {
        let Some(raw) = raw else {
            return Slot::None;
        };
        let Some(value) = tag_value(raw) else {
            return Slot::Other;
        };
        if let Some(i) = self.promoted.iter().position(|p| *p == value) {
            return Slot::Value(i);
        }
        if self.promoted.len() >= self.max_values {
            return Slot::Other;
        }
        let hash = fnv1a(value.as_bytes());
        let capacity = SKETCH_PER_SLOT * self.max_values.max(1);
        let entry = match self.sketch.iter().position(|e| e.hash == hash) {
            Some(i) => {
                self.sketch[i].count = self.sketch[i].count.saturating_add(1);
                self.sketch[i]
            }
            None if self.sketch.len() < capacity => {
                let e = Entry {
                    hash,
                    count: 1,
                    error: 0,
                };
                self.sketch.push(e);
                e
            }
            None => {
                // Space-Saving: the new value takes the smallest entry's
                // place and inherits its count as its possible error.
                let (i, min) = self
                    .sketch
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| e.count)
                    .map_or((0, 0), |(i, e)| (i, e.count));
                let e = Entry {
                    hash,
                    count: min.saturating_add(1),
                    error: min,
                };
                if let Some(slot) = self.sketch.get_mut(i) {
                    *slot = e;
                }
                e
            }
        };
        if entry.count - entry.error >= PROMOTE_AT {
            self.sketch.retain(|e| e.hash != hash);
            self.promoted.push(value);
            return Slot::Promoted(self.promoted.len() - 1);
        }
        Slot::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_fall_into_three_classes() {
        let ua = |s: &str| user_agent_class(s.as_bytes());
        assert_eq!(
            ua("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"),
            "mobile"
        );
        assert_eq!(ua("Mozilla/5.0 (Linux; Android 14; Pixel 8)"), "mobile");
        assert_eq!(
            ua("Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"),
            "desktop"
        );
        assert_eq!(ua("Googlebot/2.1 (+http://www.google.com/bot.html)"), "bot");
        assert_eq!(ua("curl/8.5.0"), "bot");
        assert_eq!(ua(""), "desktop");
    }

    #[test]
    fn values_that_could_reach_into_a_stat_name_are_other() {
        assert_eq!(tag_value(b"FR").as_deref(), Some("fr"));
        assert_eq!(tag_value(b"en-gb.v2_x").as_deref(), Some("en-gb.v2_x"));
        for bad in [
            &b""[..],
            b"a;.;version=.=v2",
            b"_other",
            b"fr ",
            b"\xff",
            &[b'a'; 33],
        ] {
            assert_eq!(tag_value(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn frequent_values_get_counters_and_one_off_values_never_do() {
        let mut t = TopValues::new(3);
        let mut promoted = Vec::new();
        for i in 0..20_000u32 {
            // Three real countries, and a client inventing a new value
            // every other request.
            let junk = alloc::format!("x{i}");
            let v: &[u8] = match i % 6 {
                0 | 2 => b"us",
                4 => b"fr",
                _ if i % 12 == 1 => b"de",
                _ => junk.as_bytes(),
            };
            if let Slot::Promoted(k) = t.observe(Some(v)) {
                promoted.push((k, String::from_utf8_lossy(v).into_owned()));
            }
        }
        assert_eq!(t.promoted(), ["us", "fr", "de"], "{promoted:?}");
        assert_eq!(t.observe(Some(b"us")), Slot::Value(0));
        assert_eq!(t.observe(Some(b"jp")), Slot::Other, "no counters are left");
        assert_eq!(t.observe(None), Slot::None);
    }

    #[test]
    fn a_flood_of_distinct_values_promotes_nothing() {
        let mut t = TopValues::new(8);
        for i in 0..100_000u32 {
            let v = alloc::format!("v{i}");
            assert_eq!(t.observe(Some(v.as_bytes())), Slot::Other);
        }
        assert!(t.promoted().is_empty());
        assert!(t.sketch.len() <= SKETCH_PER_SLOT * 8);
    }
}
