//! Host access, all of it: every proxy-wasm call the filter makes goes
//! through here, and none unwraps. The SDK's context helpers
//! (`set_http_request_header`, `get_plugin_configuration`, ...) unwrap the
//! host's status, and a panic in wasm kills the VM for every request on
//! that worker; a filter must never fail a request over its own plumbing.

use std::time::{Duration, UNIX_EPOCH};

use dimmer_core::request::{HeaderPairs, PairAt};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, Bytes, MapType, Status};

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> Status;
}

/// Every request header in one host call, serialized as the ABI hands it
/// over ([`HeaderPairs`] reads it in place; an unread map if the host
/// refuses). The SDK's `get_map_bytes` makes two allocations a header and
/// panics on a status it does not expect; this makes none.
pub fn request_header_pairs(index: Vec<PairAt>) -> HeaderPairs {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes through two pointers to live locals.
    let status =
        unsafe { proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) };
    match status {
        Status::Ok if !data.is_null() => {
            // SAFETY: the pointer is one the host got from this module's
            // `proxy_on_memory_allocate` (the SDK's: a `Vec<u8>` of `size`
            // bytes leaked to the host), so taking it back as that Vec is
            // sound; on any other status nothing was allocated.
            let bytes = unsafe { Vec::from_raw_parts(data, size, size) };
            HeaderPairs::with_index(bytes, index)
        }
        Status::Ok => HeaderPairs::with_index(Vec::new(), index),
        _ => HeaderPairs::unread(index),
    }
}

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// Microseconds since the epoch, read twice a timed request: straight
/// from the host's nanoseconds, not through `SystemTime` and `u128`.
pub fn now_us() -> u64 {
    let mut ns: u64 = 0;
    // SAFETY: the host writes one u64 through the pointer, which points at
    // a live local.
    match unsafe { proxy_get_current_time_nanoseconds(&mut ns) } {
        Status::Ok => ns / 1000,
        _ => 0,
    }
}

/// 64 bits from WASI's randomness, or from the clock if that fails.
pub fn random_seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| now_us().wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

pub fn property(path: Vec<&str>) -> Option<String> {
    let bytes = hostcalls::get_property(path).ok().flatten()?;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// Sets (or, with `None`, removes) a request header; false if the host refused.
pub fn set_request_header(name: &str, value: Option<&str>) -> bool {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value).is_ok()
}

pub fn response_header(name: &str) -> Option<Bytes> {
    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
}

pub fn add_response_header(name: &str, value: &str) -> bool {
    hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value).is_ok()
}

pub fn call_response_header(name: &str) -> Option<Bytes> {
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
        .ok()
        .flatten()
}

pub fn call_response_body(size: usize) -> Bytes {
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

pub fn plugin_configuration() -> Bytes {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default()
}

pub fn set_tick_period(period: Duration) -> bool {
    hostcalls::set_tick_period(period).is_ok()
}

pub fn dispatch_http_call(
    cluster: &str,
    headers: Vec<(&str, &str)>,
    timeout: Duration,
) -> Result<u32, Status> {
    hostcalls::dispatch_http_call(cluster, headers, None, vec![], timeout)
}

/// A panic still ends the VM (`panic = "abort"`), but says where first, in
/// Envoy's log, instead of an opaque wasm trap.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        log::error!("dimmer filter panicked: {info}");
    }));
}

/// The VM's linear memory, in bytes.
pub fn vm_memory_bytes() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_size(0) as u64 * 65_536
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}
