//! The headers every response carries, whatever route made it: the page's
//! assets set their own policy, everything else (JSON, metrics, errors)
//! may be neither framed, sniffed, cached nor followed by a referrer.

use axum::http::{header, HeaderValue};
use axum::response::Response;

const NONE_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

pub async fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let mut set = |name: header::HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::CONTENT_SECURITY_POLICY, NONE_CSP);
    // Status, history and tokens' answers are not for any cache.
    set(header::CACHE_CONTROL, "no-store");
    resp
}
