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

/// The ABI version this module is built for.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    c"v0.2.0".as_ptr()
}

/// A configuration: nothing to load.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config_envoy: Ptr,
    _name: Buffer,
    _config: Buffer,
) -> Ptr {
    token()
}

/// Nothing to free.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_config: Ptr) {}

/// Never scheduled.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _config_envoy: Ptr,
    _config: Ptr,
    _event_id: u64,
) {
}

/// A stream's filter: no state.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(_config: Ptr, _filter: Ptr) -> Ptr {
    token()
}

/// Continue.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _filter: Ptr,
    _module: Ptr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

/// Continue.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter: Ptr,
    _module: Ptr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

/// Continue.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter: Ptr,
    _module: Ptr,
) -> u32 {
    CONTINUE
}

/// Continue.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _filter: Ptr,
    _module: Ptr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

/// Continue.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter: Ptr,
    _module: Ptr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

/// Continue.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter: Ptr,
    _module: Ptr,
) -> u32 {
    CONTINUE
}

/// Nothing to record.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_filter: Ptr, _module: Ptr) {}

/// Nothing to free.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_module: Ptr) {}

/// Never scheduled.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter: Ptr,
    _module: Ptr,
    _event_id: u64,
) {
}

/// Makes no callouts.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter: Ptr,
    _module: Ptr,
    _callout_id: u64,
    _result: u32,
    _headers: Ptr,
    _headers_size: usize,
    _body: Ptr,
    _body_size: usize,
) {
}

/// Opens no streams.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter: Ptr,
    _module: Ptr,
    _stream_id: u64,
    _headers: Ptr,
    _headers_size: usize,
    _end_stream: bool,
) {
}

/// Opens no streams.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter: Ptr,
    _module: Ptr,
    _stream_id: u64,
    _data: Ptr,
    _data_count: usize,
    _end_stream: bool,
) {
}

/// Opens no streams.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter: Ptr,
    _module: Ptr,
    _stream_id: u64,
    _trailers: Ptr,
    _trailers_size: usize,
) {
}

/// Opens no streams.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter: Ptr,
    _module: Ptr,
    _stream_id: u64,
) {
}

/// Opens no streams.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter: Ptr,
    _module: Ptr,
    _stream_id: u64,
    _reason: u32,
) {
}

/// Nothing to pause.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter: Ptr,
    _module: Ptr,
) {
}

/// Nothing to resume.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter: Ptr,
    _module: Ptr,
) {
}
