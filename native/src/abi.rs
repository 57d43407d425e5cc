//! The few parts of Envoy 1.40's dynamic-modules C ABI
//! (`source/extensions/dynamic_modules/abi/abi.h`, ABI "v0.1.0") this
//! experiment uses, declared by hand. Buffers are `{ptr, length}` structs
//! passed by value, as the header declares them.

use std::ffi::c_void;

pub type EnvoyPtr = *mut c_void;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl Buffer {
    pub fn of(s: &[u8]) -> Buffer {
        Buffer {
            ptr: s.as_ptr(),
            length: s.len(),
        }
    }

    pub const NULL: Buffer = Buffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// # Safety
    /// `ptr` must point to `length` readable bytes (or be null).
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: the caller promises ptr/length describe readable memory.
            unsafe { std::slice::from_raw_parts(self.ptr, self.length) }
        }
    }
}

pub const REQUEST_HEADER: u32 = 0;
pub const RESPONSE_HEADER: u32 = 2;
/// `envoy_dynamic_module_type_on_http_filter_*_status_Continue`.
pub const CONTINUE: u32 = 0;
pub const METRICS_SUCCESS: u32 = 0;

extern "C" {
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: EnvoyPtr,
        header_type: u32,
        key: Buffer,
        result: *mut Buffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: EnvoyPtr,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: EnvoyPtr,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter: EnvoyPtr);
    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: EnvoyPtr,
        name: Buffer,
        label_names: *const Buffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: EnvoyPtr,
        name: Buffer,
        label_names: *const Buffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: EnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: EnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}
