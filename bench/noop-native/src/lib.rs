//! The native floor of `make bench` (`passthrough-native`): an Envoy 1.40 dynamic
//! module (ABI `v0.2.0`) whose HTTP filter does nothing. Every hook returns
//! Continue and no hook calls back into Envoy, so its cost over Envoy alone is
//! what Envoy's dynamic-module filter costs by itself: the filter's creation,
//! one call per hook, its destruction. meshguard native's cost over this row is
//! meshguard's own.
//!
//! It exports the same hooks as `libmeshguard.so` (Envoy resolves them all when
//! it loads a module) with the same signatures; pointers Envoy passes are
//! never read.

#![allow(unsafe_code)] // `no_mangle` exports: the C ABI Envoy calls

use std::ffi::{c_char, c_void};

/// An Envoy- or module-owned byte buffer passed by value (`{ptr, length}`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    ptr: *const u8,
    length: usize,
}

/// Any opaque pointer of the ABI.
type Ptr = *const c_void;

/// `envoy_dynamic_module_type_on_http_filter_*_status`: Continue (all are 0).
const CONTINUE: u32 = 0;

/// What the module's configuration and filter pointers point at: Envoy only
/// needs them non-null, and this module keeps no state.
static TOKEN: u8 = 0;

fn token() -> Ptr {
    std::ptr::from_ref(&TOKEN).cast()
}

/// Exports hooks that ignore their arguments and return a constant (or nothing):
/// `"doc" name(argument types) -> return type = value;`.
macro_rules! hooks {
    ($($doc:literal $name:ident($($t:ty),*) $(-> $ret:ty = $val:expr)?;)*) => {$(
        #[doc = $doc]
        #[unsafe(no_mangle)]
        #[allow(clippy::too_many_arguments)]
        pub extern "C" fn $name($(_: $t),*) $(-> $ret)? { $($val)? }
    )*};
}

hooks! {
    "The ABI version this module is built for."
    envoy_dynamic_module_on_program_init() -> *const c_char = c"v0.2.0".as_ptr();
    "A configuration: nothing to load."
    envoy_dynamic_module_on_http_filter_config_new(Ptr, Buffer, Buffer) -> Ptr = token();
    "Nothing to free."
    envoy_dynamic_module_on_http_filter_config_destroy(Ptr);
    "Never scheduled."
    envoy_dynamic_module_on_http_filter_config_scheduled(Ptr, Ptr, u64);
    "A stream's filter: no state."
    envoy_dynamic_module_on_http_filter_new(Ptr, Ptr) -> Ptr = token();
    "Continue."
    envoy_dynamic_module_on_http_filter_request_headers(Ptr, Ptr, bool) -> u32 = CONTINUE;
    "Continue."
    envoy_dynamic_module_on_http_filter_request_body(Ptr, Ptr, bool) -> u32 = CONTINUE;
    "Continue."
    envoy_dynamic_module_on_http_filter_request_trailers(Ptr, Ptr) -> u32 = CONTINUE;
    "Continue."
    envoy_dynamic_module_on_http_filter_response_headers(Ptr, Ptr, bool) -> u32 = CONTINUE;
    "Continue."
    envoy_dynamic_module_on_http_filter_response_body(Ptr, Ptr, bool) -> u32 = CONTINUE;
    "Continue."
    envoy_dynamic_module_on_http_filter_response_trailers(Ptr, Ptr) -> u32 = CONTINUE;
    "Nothing to record."
    envoy_dynamic_module_on_http_filter_stream_complete(Ptr, Ptr);
    "Nothing to free."
    envoy_dynamic_module_on_http_filter_destroy(Ptr);
    "Never scheduled."
    envoy_dynamic_module_on_http_filter_scheduled(Ptr, Ptr, u64);
    "Makes no callouts: (filter, module, id, result, headers, count, body chunks, count)."
    envoy_dynamic_module_on_http_filter_http_callout_done(Ptr, Ptr, u64, u32, Ptr, usize, Ptr, usize);
    "Opens no streams: (filter, module, stream, headers, count, end of stream)."
    envoy_dynamic_module_on_http_filter_http_stream_headers(Ptr, Ptr, u64, Ptr, usize, bool);
    "Opens no streams: (filter, module, stream, data chunks, count, end of stream)."
    envoy_dynamic_module_on_http_filter_http_stream_data(Ptr, Ptr, u64, Ptr, usize, bool);
    "Opens no streams: (filter, module, stream, trailers, count)."
    envoy_dynamic_module_on_http_filter_http_stream_trailers(Ptr, Ptr, u64, Ptr, usize);
    "Opens no streams."
    envoy_dynamic_module_on_http_filter_http_stream_complete(Ptr, Ptr, u64);
    "Opens no streams: (filter, module, stream, reason)."
    envoy_dynamic_module_on_http_filter_http_stream_reset(Ptr, Ptr, u64, u32);
    "Nothing to pause."
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(Ptr, Ptr);
    "Nothing to resume."
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(Ptr, Ptr);
}
