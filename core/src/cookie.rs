//! Reading one cookie out of a `Cookie` header, without allocating.

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`), with
/// surrounding double quotes removed. Bytes need not be UTF-8.
pub fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        if pair[..eq].trim_ascii() != name.as_bytes() {
            return None;
        }
        let value = pair[eq + 1..].trim_ascii();
        Some(match value {
            [b'"', inner @ .., b'"'] => inner,
            v => v,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookies() {
        let h = b"a=1; session_id=abc;b=2 ; q=\"quoted\"";
        assert_eq!(cookie_value(h, "a"), Some(&b"1"[..]));
        assert_eq!(cookie_value(h, "session_id"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(h, "b"), Some(&b"2"[..]));
        assert_eq!(cookie_value(h, "q"), Some(&b"quoted"[..]));
        assert_eq!(cookie_value(h, "missing"), None);
        assert_eq!(cookie_value(b"", "a"), None);
        assert_eq!(cookie_value(b"a", "a"), None);
        assert_eq!(cookie_value(b"a=", "a"), Some(&b""[..]));
        assert_eq!(cookie_value(b"xa=1; a=2", "a"), Some(&b"2"[..]));
        assert_eq!(cookie_value(b"a=\"", "a"), Some(&b"\""[..]));
    }
}
