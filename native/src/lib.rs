//! Dimmer's routing decision as an Envoy dynamic module: the same
//! `dimmer-core` as the wasm filter, called natively. An experiment to
//! measure the cost of the wasm ABI (bench/RESULTS.md), static config only
//! (no controller polling). Every hook catches panics: unwinding into
//! Envoy's C++ is undefined behaviour.

mod abi;

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use abi::{Buffer, EnvoyPtr};
use dimmer_core::decide::set_cookie_value;
use dimmer_core::stats::{self, StatusClass};
use dimmer_core::{decide, parse_plugin_config, Compiled, Decision, Request};

/// One version's stat ids: a counter per status class, and the histogram.
type VersionIds = ([Option<usize>; StatusClass::ALL.len()], Option<usize>);

struct Config {
    cfg: Compiled,
    /// `[rollout][version]`.
    stats: Vec<Vec<VersionIds>>,
}

struct Filter {
    config: *const Config,
    stats: Option<(usize, usize)>,
    started: Option<Instant>,
    class: StatusClass,
    set_cookie: Option<String>,
}

struct Headers(EnvoyPtr);

impl Request for Headers {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        let mut out = Buffer::NULL;
        // SAFETY: the filter pointer is Envoy's, valid during this hook.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                self.0,
                abi::REQUEST_HEADER,
                Buffer::of(name.as_bytes()),
                &mut out,
                0,
                std::ptr::null_mut(),
            )
        };
        // SAFETY: Envoy wrote a buffer valid until the hook returns.
        (found && !out.ptr.is_null()).then(|| unsafe { out.as_slice() }.to_vec())
    }
}

fn define(config: EnvoyPtr, histogram: bool, name: &str) -> Option<usize> {
    let mut id = 0usize;
    // SAFETY: config is Envoy's filter config pointer, valid during config_new.
    let r = unsafe {
        if histogram {
            abi::envoy_dynamic_module_callback_http_filter_config_define_histogram(
                config,
                Buffer::of(name.as_bytes()),
                std::ptr::null(),
                0,
                &mut id,
            )
        } else {
            abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                config,
                Buffer::of(name.as_bytes()),
                std::ptr::null(),
                0,
                &mut id,
            )
        }
    };
    (r == abi::METRICS_SUCCESS).then_some(id)
}

static ABI_VERSION: &[u8] = b"v0.1.0\0";

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION.as_ptr().cast()
}

/// # Safety
/// Envoy passes valid buffers for the name and the configuration.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: EnvoyPtr,
    _name: Buffer,
    config: Buffer,
) -> *const c_void {
    // SAFETY: Envoy's buffer, valid during this call.
    let bytes = unsafe { config.as_slice() };
    let built = catch_unwind(AssertUnwindSafe(|| {
        let plugin = parse_plugin_config(bytes).ok()?;
        let cfg = Compiled::new(0, &plugin.route_header, &plugin.rollouts);
        let stats = cfg
            .rollouts
            .iter()
            .map(|r| {
                r.versions
                    .iter()
                    .map(|v| {
                        let mut ids = [None; StatusClass::ALL.len()];
                        for class in StatusClass::ALL {
                            ids[class.index()] =
                                define(config_envoy, false, &stats::requests(&r.name, v, class));
                        }
                        (
                            ids,
                            define(config_envoy, true, &stats::latency_ms(&r.name, v)),
                        )
                    })
                    .collect()
            })
            .collect();
        Some(Box::new(Config { cfg, stats }))
    }));
    match built {
        Ok(Some(c)) => Box::into_raw(c) as *const c_void,
        _ => std::ptr::null(),
    }
}

/// # Safety
/// `config` is a pointer this module returned from `config_new`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    if !config.is_null() {
        // SAFETY: made by Box::into_raw in config_new, destroyed once.
        drop(unsafe { Box::from_raw(config as *mut Config) });
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: EnvoyPtr,
) -> *mut c_void {
    Box::into_raw(Box::new(Filter {
        config: config as *const Config,
        stats: None,
        started: None,
        class: StatusClass::Reset,
        set_cookie: None,
    })) as *mut c_void
}

/// Sets the route header to `version`, or removes it, and has Envoy pick
/// the route again. Called only from a request-headers hook, with Envoy's
/// filter pointer.
fn set_route(envoy: EnvoyPtr, header: &str, version: Option<&str>) {
    let value = version.map_or(Buffer::NULL, |v| Buffer::of(v.as_bytes()));
    // SAFETY: Envoy's filter pointer, during the hook.
    unsafe {
        abi::envoy_dynamic_module_callback_http_set_header(
            envoy,
            abi::REQUEST_HEADER,
            Buffer::of(header.as_bytes()),
            value,
        );
        abi::envoy_dynamic_module_callback_http_clear_route_cache(envoy);
    }
}

/// # Safety
/// Pointers are Envoy's filter and this module's filter, live for the stream.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: EnvoyPtr,
    filter: *mut c_void,
    _end_of_stream: bool,
) -> u32 {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: this module's filter and config, alive for the stream.
        let (f, c) = unsafe {
            (
                &mut *(filter as *mut Filter),
                &*(*(filter as *mut Filter)).config,
            )
        };
        let cfg = &c.cfg;
        let headers = Headers(envoy);
        match decide(cfg, &headers, &mut || fastrand::u64(..)) {
            // A mirror goes to the shadow version, uncounted: this module
            // keeps no shadow stats.
            Decision::Shadow {
                rollout,
                version: Some(v),
            } => {
                let name = cfg.rollouts.get(rollout).and_then(|r| r.versions.get(v));
                if let Some(version) = name {
                    set_route(envoy, &cfg.route_header, Some(version.as_str()));
                }
            }
            Decision::NoMatch | Decision::Shadow { version: None, .. } => {
                if headers.header(&cfg.route_header).is_some() {
                    set_route(envoy, &cfg.route_header, None);
                }
            }
            Decision::Route(route) => {
                let Some(r) = cfg.rollouts.get(route.rollout) else {
                    return;
                };
                let Some(version) = r.versions.get(route.version) else {
                    return;
                };
                set_route(envoy, &cfg.route_header, Some(version.as_str()));
                f.stats = Some((route.rollout, route.version));
                f.started = Some(Instant::now());
                f.set_cookie = route.new_cookie.map(|id| set_cookie_value(r, &id));
            }
        }
    }));
    abi::CONTINUE
}

/// # Safety
/// As for the request headers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: EnvoyPtr,
    filter: *mut c_void,
    _end_of_stream: bool,
) -> u32 {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: this module's filter, alive for the stream.
        let f = unsafe { &mut *(filter as *mut Filter) };
        if f.stats.is_some() {
            let mut out = Buffer::NULL;
            // SAFETY: Envoy's filter pointer; the buffer is read before returning.
            let found = unsafe {
                abi::envoy_dynamic_module_callback_http_get_header(
                    envoy,
                    abi::RESPONSE_HEADER,
                    Buffer::of(b":status"),
                    &mut out,
                    0,
                    std::ptr::null_mut(),
                )
            };
            if found {
                // SAFETY: valid until the hook returns.
                f.class = StatusClass::from_status(unsafe { out.as_slice() });
            }
        }
        if let Some(cookie) = f.set_cookie.take() {
            // SAFETY: Envoy's filter pointer, during the hook.
            unsafe {
                abi::envoy_dynamic_module_callback_http_add_header(
                    envoy,
                    abi::RESPONSE_HEADER,
                    Buffer::of(b"set-cookie"),
                    Buffer::of(cookie.as_bytes()),
                );
            }
        }
    }));
    abi::CONTINUE
}

/// # Safety
/// As for the request headers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    envoy: EnvoyPtr,
    filter: *mut c_void,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: this module's filter and config, alive for the stream.
        let f = unsafe { &*(filter as *const Filter) };
        let c = unsafe { &*f.config };
        let Some((r, v)) = f.stats else { return };
        let Some((counters, histogram)) = c.stats.get(r).and_then(|vs| vs.get(v)) else {
            return;
        };
        let ms = f.started.map_or(0, |t| t.elapsed().as_millis() as u64);
        // SAFETY: Envoy's filter pointer, during the hook.
        unsafe {
            if let Some(id) = counters[f.class.index()] {
                abi::envoy_dynamic_module_callback_http_filter_increment_counter(
                    envoy,
                    id,
                    std::ptr::null(),
                    0,
                    1,
                );
            }
            if let Some(id) = histogram {
                abi::envoy_dynamic_module_callback_http_filter_record_histogram_value(
                    envoy,
                    *id,
                    std::ptr::null(),
                    0,
                    ms,
                );
            }
        }
    }));
}

/// # Safety
/// `filter` is a pointer this module returned from `filter_new`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *mut c_void) {
    if !filter.is_null() {
        // SAFETY: made by Box::into_raw in filter_new, destroyed once.
        drop(unsafe { Box::from_raw(filter as *mut Filter) });
    }
}

/// Hooks Envoy 1.40 resolves when it loads an HTTP filter module, that this
/// filter has no use for: continue, or do nothing.
macro_rules! continue_hooks {
    ($($name:ident),*) => {$(
        #[no_mangle]
        pub extern "C" fn $name(_envoy: EnvoyPtr, _filter: *mut c_void, _end_of_stream: bool) -> u32 {
            abi::CONTINUE
        }
    )*};
}

macro_rules! ignored_hooks {
    ($($name:ident),*) => {$(
        #[no_mangle]
        pub extern "C" fn $name() {}
    )*};
}

continue_hooks!(
    envoy_dynamic_module_on_http_filter_request_body,
    envoy_dynamic_module_on_http_filter_request_trailers,
    envoy_dynamic_module_on_http_filter_response_body,
    envoy_dynamic_module_on_http_filter_response_trailers
);

/// A local reply (Envoy answered itself): let it through unchanged.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _envoy: EnvoyPtr,
    _filter: *mut c_void,
    _code: u32,
    _details: Buffer,
    _reset_imminent: bool,
) -> u32 {
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: Buffer,
    _config: Buffer,
) -> *const c_void {
    std::ptr::null()
}

ignored_hooks!(
    envoy_dynamic_module_on_http_filter_per_route_config_destroy,
    envoy_dynamic_module_on_http_filter_config_http_callout_done,
    envoy_dynamic_module_on_http_filter_config_http_stream_complete,
    envoy_dynamic_module_on_http_filter_config_http_stream_data,
    envoy_dynamic_module_on_http_filter_config_http_stream_headers,
    envoy_dynamic_module_on_http_filter_config_http_stream_reset,
    envoy_dynamic_module_on_http_filter_config_http_stream_trailers,
    envoy_dynamic_module_on_http_filter_config_scheduled,
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark,
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark,
    envoy_dynamic_module_on_http_filter_http_callout_done,
    envoy_dynamic_module_on_http_filter_http_stream_complete,
    envoy_dynamic_module_on_http_filter_http_stream_data,
    envoy_dynamic_module_on_http_filter_http_stream_headers,
    envoy_dynamic_module_on_http_filter_http_stream_reset,
    envoy_dynamic_module_on_http_filter_http_stream_trailers,
    envoy_dynamic_module_on_http_filter_scheduled
);
