//! What a spec may say in HTTP's own syntax: URLs, header names and values.
//! The rules are the ones the controller's HTTP client enforces when it
//! sends them (the `http` crate's), written out here so that the decision
//! crate checks a spec without depending on an HTTP stack; a test holds
//! them equal to that crate's on arbitrary input.

/// A parseable URL: whatever the `url` crate (the one HTTP clients use) reads.
pub fn parses_as_url(text: &str) -> bool {
    url::Url::parse(text).is_ok()
}

/// An `http:` or `https:` URL with a host.
pub fn is_http_url_with_host(text: &str) -> bool {
    matches!(url::Url::parse(text), Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// A header name: 1 to 65,535 token characters (RFC 9110 §5.6.2); upper
/// case is allowed (it is sent lower-cased).
pub fn is_header_name(name: &str) -> bool {
    (1..1 << 16).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// A header value: no control character but tab (so no CR or LF: a value
/// cannot start another header).
pub fn is_header_value(value: &str) -> bool {
    value.bytes().all(|b| (b >= 32 && b != 127) || b == b'\t')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn header_names_are_judged_as_the_http_crate_does(name in "\\PC{0,12}|[ -~]{0,12}") {
            prop_assert_eq!(is_header_name(&name), http::HeaderName::from_bytes(name.as_bytes()).is_ok());
        }

        #[test]
        fn header_values_are_judged_as_the_http_crate_does(value in "\\PC{0,12}|[\\x00-\\x7f]{0,12}") {
            prop_assert_eq!(is_header_value(&value), http::HeaderValue::from_str(&value).is_ok());
        }
    }

    #[test]
    fn every_byte_of_a_name_and_a_value_as_the_http_crate_judges_it() {
        for b in 0u8..=255 {
            let Ok(text) = std::str::from_utf8(std::slice::from_ref(&b)) else {
                continue;
            };
            assert_eq!(
                is_header_name(text),
                http::HeaderName::from_bytes(&[b]).is_ok(),
                "{b}"
            );
            assert_eq!(
                is_header_value(text),
                http::HeaderValue::from_str(text).is_ok(),
                "{b}"
            );
        }
        assert!(!is_header_name(""));
        assert!(http::HeaderName::from_bytes(b"").is_err());
        assert!(is_header_value("caf\u{e9}"));
        assert!(http::HeaderValue::from_str("caf\u{e9}").is_ok());
    }
}
