//! The hooks Envoy calls (`envoy_dynamic_module_on_*`), each turning Envoy's
//! pointers into safe handles and calling the module's [`FilterConfig`] or
//! [`HttpFilter`] under one `catch_unwind` ([`guard`]): a panic never crosses
//! into Envoy. What a stream gets after a panic is the module's
//! ([`HttpFilter::panicked`]). Not in unit tests, which drive the module
//! through mocks instead.
//!
//! A configuration is an `Arc` whose raw pointer Envoy holds from
//! `config_new` to `config_destroy`; a stream is a `Box` from `filter_new` to
//! `filter_destroy`. The module names its configuration type once, below.

use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::envoy::{self, slice, Answer, Config, LogLevel, Stream};
use super::hooks::{FilterConfig, Flow, Hook, HttpFilter};
use super::{
    body_status, callout_result, status, ConfigEnvoyPtr, ConfigModulePtr, EnvoyBuffer,
    FilterEnvoyPtr, FilterModulePtr, HttpHeader, ABI_VERSION,
};

/// The hook's status for `flow`: headers and trailers stop iteration, a body
/// stops and is buffered (the same value, 1, in each status enum).
fn status(flow: Flow, body: bool) -> u32 {
    match (flow, body) {
        (Flow::Continue, _) => status::CONTINUE,
        (Flow::Stop, false) => status::STOP_ITERATION,
        (Flow::Stop, true) => body_status::STOP_ITERATION_AND_BUFFER,
    }
}

/// The module's configuration type.
type Module = crate::module::Module;
type Filter = <Module as FilterConfig>::Filter;

/// Runs `f`, catching a panic (logged): `None` then. The one place a panic
/// is caught: every hook runs under it.
fn guard<T>(hook: &str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            envoy::log(
                LogLevel::Error,
                &format!("meshguard: panic in {hook} caught at the module boundary: {what}"),
            );
            None
        }
    }
}

/// The configuration behind Envoy's module pointer.
///
/// # Safety
/// `ptr` came from `config_new` and `config_destroy` has not run.
unsafe fn config<'a>(ptr: ConfigModulePtr) -> Option<&'a Module> {
    // SAFETY: the caller's contract.
    unsafe { ptr.cast::<Module>().as_ref() }
}

/// The stream behind Envoy's module pointer.
///
/// # Safety
/// `ptr` came from `filter_new` and is not destroyed.
unsafe fn filter<'a>(ptr: FilterModulePtr) -> Option<&'a Filter> {
    // SAFETY: the caller's contract.
    unsafe { ptr.cast::<Filter>().as_ref() }
}

/// A callout's answer, copied out of Envoy's arrays.
///
/// # Safety
/// `headers` and `body` are null or valid for their sizes during the hook.
unsafe fn answer(
    result: u32,
    headers: *const HttpHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) -> Answer {
    // SAFETY: the caller's contract.
    let list = unsafe { slice(headers, headers_size) };
    let headers = list
        .iter()
        .map(|h| {
            // SAFETY: Envoy's header views, valid during this hook.
            let k = unsafe { slice(h.key_ptr, h.key_length) };
            // SAFETY: as above.
            let v = unsafe { slice(h.value_ptr, h.value_length) };
            (k.to_vec(), v.to_vec())
        })
        .collect();
    let mut bytes = Vec::new();
    // SAFETY: as above.
    for chunk in unsafe { slice(body, body_size) } {
        // SAFETY: as above.
        bytes.extend_from_slice(unsafe { chunk.bytes() }.unwrap_or_default());
    }
    Answer {
        ok: result == callout_result::SUCCESS,
        headers,
        body: bytes,
    }
}

/// Runs a stream hook: the stream's handle, the module's filter, and its
/// fallback when the hook panics.
///
/// # Safety
/// Envoy's pointers for a live stream.
unsafe fn on_stream(
    hook: &str,
    kind: Hook,
    envoy: FilterEnvoyPtr,
    module: FilterModulePtr,
    run: impl FnOnce(&Filter, &Stream) -> Flow,
) -> u32 {
    // SAFETY: Envoy's pointer from `filter_new`.
    let Some(f) = (unsafe { filter(module) }) else {
        return status(Flow::Continue, false);
    };
    // SAFETY: the live stream of this hook.
    let stream = unsafe { Stream::from_envoy(envoy) };
    let flow = guard(hook, || run(f, &stream))
        .or_else(|| guard("the fallback", || f.panicked(&stream, kind)))
        .unwrap_or(Flow::Continue);
    status(flow, kind == Hook::RequestBody)
}

/// # Safety
/// Envoy calls this once per load; the string is static.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION.as_ptr().cast()
}

/// # Safety
/// Envoy's buffers are valid for this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ConfigModulePtr {
    // SAFETY: Envoy's buffers, valid for this call (copied by the module).
    let (name, bytes) = unsafe { (name.bytes(), config.bytes()) };
    let name = String::from_utf8_lossy(name.unwrap_or_default()).into_owned();
    // SAFETY: the configuration being loaded.
    let envoy = unsafe { Config::from_envoy(config_envoy) };
    match guard("config_new", || {
        Module::new(&envoy, &name, bytes.unwrap_or_default())
    }) {
        Some(Some(m)) => Arc::into_raw(Arc::new(m)).cast(),
        _ => std::ptr::null(),
    }
}

/// # Safety
/// `config` came from `config_new` and is destroyed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    config: ConfigModulePtr,
) {
    if config.is_null() {
        return;
    }
    // SAFETY: the pointer `config_new` made with `Arc::into_raw`.
    let module = unsafe { Arc::from_raw(config.cast::<Module>()) };
    guard("config_destroy", || module.destroy());
}

/// # Safety
/// `config` came from `config_new` and is alive.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigModulePtr,
    filter: FilterEnvoyPtr,
) -> FilterModulePtr {
    if config.is_null() {
        return std::ptr::null();
    }
    let ptr = config.cast::<Module>();
    // SAFETY: the configuration outlives its streams; the count is
    // incremented before the `Arc` made from it is used.
    let module = unsafe {
        Arc::increment_strong_count(ptr);
        Arc::from_raw(ptr)
    };
    // SAFETY: the new stream of this hook.
    let stream = unsafe { Stream::from_envoy(filter) };
    match guard("filter_new", || Module::new_filter(&module, stream)) {
        Some(Some(f)) => Box::into_raw(Box::new(f)).cast_const().cast(),
        _ => std::ptr::null(),
    }
}

/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: the caller's.
    unsafe {
        on_stream(
            "request_headers",
            Hook::RequestHeaders,
            filter,
            module,
            |f, s| f.request_headers(s, end_of_stream),
        )
    }
}

/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: the caller's.
    unsafe {
        on_stream("request_body", Hook::RequestBody, filter, module, |f, s| {
            f.request_body(s, end_of_stream)
        })
    }
}

/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
) -> u32 {
    // SAFETY: the caller's.
    unsafe {
        on_stream(
            "request_trailers",
            Hook::RequestTrailers,
            filter,
            module,
            |f, s| f.request_trailers(s),
        )
    }
}

/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: the caller's.
    unsafe {
        on_stream("response_headers", Hook::Later, filter, module, |f, s| {
            f.response_headers(s, end_of_stream);
            Flow::Continue
        })
    }
}

/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: the caller's.
    unsafe {
        on_stream("response_body", Hook::Later, filter, module, |f, _| {
            f.response_body(end_of_stream);
            Flow::Continue
        })
    }
}

/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
) -> u32 {
    // SAFETY: the caller's.
    unsafe {
        on_stream("response_trailers", Hook::Later, filter, module, |f, s| {
            f.response_trailers(s);
            Flow::Continue
        })
    }
}

/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
) {
    // SAFETY: the caller's.
    unsafe {
        on_stream("stream_complete", Hook::Later, filter, module, |f, s| {
            f.stream_complete(s);
            Flow::Continue
        });
    }
}

/// # Safety
/// `module` came from `filter_new`; Envoy destroys it once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module: FilterModulePtr) {
    if module.is_null() {
        return;
    }
    // SAFETY: the box `filter_new` leaked.
    let f = unsafe { Box::from_raw(module.cast::<Filter>().cast_mut()) };
    guard("filter_destroy", || drop(f));
}

/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
    event_id: u64,
) {
    // SAFETY: the caller's.
    unsafe {
        on_stream("scheduled", Hook::Later, filter, module, |f, s| {
            f.scheduled(s, event_id);
            Flow::Continue
        });
    }
}

/// # Safety
/// Envoy's pointers for a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: ConfigEnvoyPtr,
    module: ConfigModulePtr,
    event_id: u64,
) {
    // SAFETY: Envoy posts this only while the configuration lives.
    let Some(m) = (unsafe { config(module) }) else {
        return;
    };
    // SAFETY: the live configuration of this hook.
    let envoy = unsafe { Config::from_envoy(config_envoy) };
    guard("config_scheduled", || m.scheduled(&envoy, event_id));
}

/// # Safety
/// Envoy's pointers for a live configuration; `headers` and `body` are null or
/// valid for their sizes during this hook.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    config_envoy: ConfigEnvoyPtr,
    module: ConfigModulePtr,
    callout_id: u64,
    result: u32,
    headers: *const HttpHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) {
    // SAFETY: Envoy calls this only while the configuration lives.
    let Some(m) = (unsafe { config(module) }) else {
        return;
    };
    // SAFETY: the live configuration of this hook.
    let envoy = unsafe { Config::from_envoy(config_envoy) };
    // SAFETY: Envoy's arrays for this hook.
    let answer = unsafe { answer(result, headers, headers_size, body, body_size) };
    guard("config_http_callout_done", || {
        m.callout_done(&envoy, callout_id, answer)
    });
}

/// # Safety
/// Envoy's pointers for a live stream; `headers` and `body` are null or valid
/// for their sizes during this hook.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
    callout_id: u64,
    result: u32,
    headers: *const HttpHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) {
    // SAFETY: Envoy's arrays for this hook.
    let answer = unsafe { answer(result, headers, headers_size, body, body_size) };
    // SAFETY: the caller's.
    unsafe {
        on_stream("http_callout_done", Hook::Later, filter, module, |f, s| {
            f.callout_done(s, callout_id, answer);
            Flow::Continue
        });
    }
}

// The other hooks Envoy 1.40 requires a module to export: stream callouts
// and watermarks, unused here.

/// # Safety
/// Unused: no stream is started.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
    _headers: *const HttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

/// # Safety
/// Unused: no stream is started.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

/// # Safety
/// Unused: no stream is started.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
    _trailers: *const HttpHeader,
    _trailers_size: usize,
) {
}

/// # Safety
/// Unused: no stream is started.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
) {
}

/// # Safety
/// Unused: no stream is started.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

/// # Safety
/// Unused: the response is not buffered here.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
) {
}

/// # Safety
/// Unused: the response is not buffered here.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
) {
}
