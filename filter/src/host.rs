//! Host access: everything here is one proxy-wasm call, errors absorbed,
//! because a filter must never fail a request over its own plumbing.

use std::time::UNIX_EPOCH;

use dimmer_core::Request;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Bytes, MapType};

/// The request headers of the current HTTP context.
pub struct EnvoyRequest;

impl Request for EnvoyRequest {
    fn header(&self, name: &str) -> Option<Bytes> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }
}

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn now_us() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_micros() as u64)
}

/// 64 bits from WASI's randomness, or from the clock if that fails.
pub fn random_seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| now_us().wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

pub fn property(path: Vec<&str>) -> Option<String> {
    let bytes = hostcalls::get_property(path).ok().flatten()?;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}
