//! The hooks Envoy calls (`envoy_dynamic_module_on_*`), each a few lines: find
//! the worker's configuration and the stream, and hand over to the same glue
//! functions the Wasm build's contexts call.
//!
//! **Threads.** Envoy loads a configuration on its main thread and runs a
//! stream's hooks on the stream's worker. Each worker builds its own copy of a
//! configuration on its first stream, as each Wasm VM does, so the glue and the
//! engine run unchanged (single-threaded `Rc` state); what workers share goes
//! through the process-wide [`store`](crate::store).
//!
//! **The tick runs on the hooks.** The 1.40 ABI has no per-worker timer, so a
//! worker runs its tick (batched counts to Envoy, held breaker outcomes, rollout
//! folds, slot stamps) from its streams' hooks once one is due (every 50 ms, as
//! the Wasm build's timer does), and writes everything it holds when a
//! configuration's last stream on the worker ends: under load counts are
//! batched as in the Wasm build, and an idle worker holds nothing.
//!
//! **Panics never cross into Envoy.** Every hook runs under `catch_unwind`; a
//! panic is logged and the stream goes on as the glue's failure policy says: a
//! request whose decision panicked is answered 503 (as the Wasm build's trapped
//! request is), any later hook lets the stream continue.

#![allow(unsafe_code)] // the hooks are the C boundary

use std::cell::{Cell, RefCell};
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use meshguard::glue::configure::configure;
use meshguard::glue::plugin::Plugin;
use meshguard::glue::request::{
    flush_idle, on_request_headers, on_response_headers, on_response_trailers, on_stream_end,
    on_tick, Stream,
};
use meshguard::glue::worker::{Worker, TICK_MS};
use meshguard::host::{Host, Level};
use meshguard_engine::Rng;

use crate::abi::{
    self, status, ConfigEnvoyPtr, ConfigModulePtr, EnvoyBuffer, FilterEnvoyPtr, FilterModulePtr,
};
use crate::host::{log, Metrics, NativeHost, Phase, Shared};

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A worker's copy of one configuration.
struct Instance {
    shared: Arc<Shared>,
    plugin: Option<Rc<Plugin>>,
    rng: Rc<Rng>,
    next_tick: Cell<u64>,
    /// This worker's streams of this configuration that have not completed.
    live: Cell<u32>,
}

thread_local! {
    /// This worker's configurations, by generation.
    static INSTANCES: RefCell<Vec<Rc<Instance>>> = const { RefCell::new(Vec::new()) };
    /// This worker's owner id for concurrency slots (0: not drawn yet).
    static OWNER: Cell<u64> = const { Cell::new(0) };
}

/// One stream.
struct Filter {
    instance: Rc<Instance>,
    stream: RefCell<Stream>,
    /// A hook of this stream is running (Envoy may end the stream from inside
    /// it: a local reply completes the stream before `send_response` returns).
    busy: Cell<bool>,
    /// The stream completed while a hook ran: finish it when that hook returns.
    complete_later: Cell<bool>,
    completed: Cell<bool>,
}

fn host<'a>(filter: FilterEnvoyPtr, shared: &'a Shared) -> NativeHost<'a> {
    NativeHost {
        phase: Phase::Stream {
            filter,
            metrics: &shared.metrics,
        },
        config: &shared.config,
        name: &shared.name,
    }
}

fn guarded<T>(hook: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log(
                Level::Error,
                &format!("meshguard: panic in {hook} caught at the module boundary: {what}"),
            );
            fallback
        }
    }
}

/// # Safety
/// Envoy calls this once per load; the string is static.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    abi::ABI_VERSION.as_ptr().cast()
}

/// Loads a configuration on Envoy's main thread: validates and compiles it as
/// the Wasm build's `on_configure` does (same logs) and defines its metrics;
/// null (Envoy rejects the configuration) on any problem.
///
/// # Safety
/// Envoy's buffers are valid for this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ConfigModulePtr {
    guarded("config_new", std::ptr::null(), || {
        // SAFETY: Envoy's buffers, valid for this call, copied at once.
        let name = unsafe { name.bytes() }.unwrap_or_default();
        let name = String::from_utf8_lossy(name).into_owned();
        let name = if name.is_empty() {
            "meshguard".to_owned()
        } else {
            name
        };
        // SAFETY: as above.
        let bytes = unsafe { config.bytes() }.unwrap_or_default().to_vec();
        let metrics = RefCell::new(Metrics::default());
        let loader = NativeHost {
            phase: Phase::Loading {
                config: config_envoy,
                metrics: &metrics,
            },
            config: &bytes,
            name: &name,
        };
        // The whole configuration is built once here, so every problem is
        // reported before a worker sees it and every metric is defined while
        // Envoy still accepts definitions.
        let worker = Rc::new(Worker::default());
        worker.owner.set(owner(&loader));
        if configure(&loader, worker).is_none() {
            return std::ptr::null();
        }
        let shared = Arc::new(Shared {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            name,
            config: bytes,
            metrics: metrics.into_inner(),
            destroyed: AtomicBool::new(false),
        });
        Arc::into_raw(shared).cast()
    })
}

/// # Safety
/// `config` came from `config_new` and is destroyed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    config: ConfigModulePtr,
) {
    guarded("config_destroy", (), || {
        if config.is_null() {
            return;
        }
        // SAFETY: the pointer `config_new` made with `Arc::into_raw`.
        let shared = unsafe { Arc::from_raw(config.cast::<Shared>()) };
        // Workers drop their copies on their next stream.
        shared.destroyed.store(true, Ordering::Release);
    });
}

fn owner(host: &impl Host) -> u64 {
    OWNER.with(|o| {
        if o.get() == 0 {
            let seed = host
                .random_seed()
                .unwrap_or_else(|_| host.now_ns().unwrap_or(1));
            o.set(Rng::new(seed).next_u64().max(1));
        }
        o.get()
    })
}

/// This worker's copy of `shared`, built on its first stream.
fn instance(shared: &Arc<Shared>, filter: FilterEnvoyPtr) -> Rc<Instance> {
    INSTANCES.with(|list| {
        let mut list = list.borrow_mut();
        list.retain(|i| !i.shared.destroyed.load(Ordering::Acquire));
        if let Some(i) = list
            .iter()
            .find(|i| i.shared.generation == shared.generation)
        {
            return i.clone();
        }
        let host = host(filter, shared);
        let worker = Rc::new(Worker::default());
        worker.owner.set(owner(&host));
        let seed = host
            .random_seed()
            .unwrap_or_else(|_| host.now_ns().unwrap_or(0));
        let plugin = configure(&host, worker);
        let i = Rc::new(Instance {
            shared: shared.clone(),
            plugin,
            rng: Rc::new(Rng::new(seed)),
            next_tick: Cell::new(0),
            live: Cell::new(0),
        });
        list.push(i.clone());
        i
    })
}

/// Runs the tick's work when one is due (rollouts fold and read verdicts,
/// concurrency stamps are renewed).
fn tick_if_due(host: &NativeHost<'_>, i: &Instance, plugin: &Plugin) {
    if !plugin.needs_tick() {
        return;
    }
    let Ok(now) = host.now_ns() else { return };
    if now >= i.next_tick.get() {
        i.next_tick.set(now.saturating_add(TICK_MS * 1_000_000));
        on_tick(host, plugin);
    }
}

/// A new stream: null makes Envoy close it, so even a configuration a worker
/// could not build gives a stream that passes through.
///
/// # Safety
/// `config` came from `config_new` and is alive.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigModulePtr,
    filter: FilterEnvoyPtr,
) -> FilterModulePtr {
    guarded("filter_new", std::ptr::null(), || {
        if config.is_null() {
            return std::ptr::null();
        }
        let ptr = config.cast::<Shared>();
        // SAFETY: the configuration outlives its streams; the count is
        // incremented before the `Arc` made from it is used.
        let shared = unsafe {
            Arc::increment_strong_count(ptr);
            Arc::from_raw(ptr)
        };
        let instance = instance(&shared, filter);
        instance.live.set(instance.live.get().saturating_add(1));
        let f = Box::new(Filter {
            instance,
            stream: RefCell::new(Stream::default()),
            busy: Cell::new(false),
            complete_later: Cell::new(false),
            completed: Cell::new(false),
        });
        Box::into_raw(f).cast_const().cast()
    })
}

/// The stream behind Envoy's module pointer.
///
/// # Safety
/// `ptr` came from `filter_new` and is not destroyed.
unsafe fn stream<'a>(ptr: FilterModulePtr) -> Option<&'a Filter> {
    // SAFETY: the caller's contract.
    unsafe { ptr.cast::<Filter>().as_ref() }
}

/// Runs `f` on the stream as one hook, then a completion Envoy signalled from
/// inside it.
fn hook<T>(
    filter: FilterEnvoyPtr,
    f: &Filter,
    run: impl FnOnce(&NativeHost<'_>, &Plugin) -> T,
) -> Option<T> {
    let i = &f.instance;
    let plugin = i.plugin.as_ref()?;
    let host = host(filter, &i.shared);
    f.busy.set(true);
    let out = run(&host, plugin);
    f.busy.set(false);
    if f.complete_later.replace(false) {
        complete(&host, f, plugin);
    }
    Some(out)
}

fn complete(host: &NativeHost<'_>, f: &Filter, plugin: &Plugin) {
    if f.completed.replace(true) {
        return;
    }
    on_stream_end(host, plugin, &f.stream.borrow());
    let i = &f.instance;
    i.live.set(i.live.get().saturating_sub(1));
    if i.live.get() == 0 {
        // No later hook of this configuration may come on this worker.
        flush_idle(host, plugin);
    } else {
        tick_if_due(host, i, plugin);
    }
}

/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: Envoy's pointer from `filter_new`.
    let Some(f) = (unsafe { stream(module) }) else {
        return status::CONTINUE;
    };
    let mut replied = false;
    let paused = guarded("request_headers", None, || {
        hook(filter, f, |host, plugin| {
            #[cfg(feature = "panic-drill")]
            crate::drill::panic_on_demand(host);
            tick_if_due(host, &f.instance, plugin);
            let s = on_request_headers(host, plugin, &f.instance.rng);
            let pause = s.must_pause();
            *f.stream.borrow_mut() = s;
            pause
        })
    });
    if paused.is_none() && f.instance.plugin.is_some() {
        // The decision panicked: answer as the Wasm build's trapped request is.
        f.busy.set(false);
        guarded("request_headers fallback", (), || {
            let h = host(filter, &f.instance.shared);
            let _ = h.send_local_reply(503, &[], b"meshguard: internal error\n");
            replied = true;
        });
    }
    if replied || paused == Some(true) {
        status::STOP_ITERATION
    } else {
        status::CONTINUE
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
    // SAFETY: Envoy's pointer from `filter_new`.
    if let Some(f) = unsafe { stream(module) } {
        guarded("response_headers", None, || {
            hook(filter, f, |host, plugin| {
                on_response_headers(
                    host,
                    plugin,
                    &mut f.stream.borrow_mut().state,
                    end_of_stream,
                );
            })
        });
    }
    status::CONTINUE
}

/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter: FilterEnvoyPtr,
    module: FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: Envoy's pointer from `filter_new`.
    if let Some(f) = unsafe { stream(module) } {
        guarded("response_body", (), || {
            if let Ok(mut s) = f.stream.try_borrow_mut() {
                s.state.response_complete |= end_of_stream;
            }
        });
    }
    status::CONTINUE
}

/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
) -> u32 {
    // SAFETY: Envoy's pointer from `filter_new`.
    if let Some(f) = unsafe { stream(module) } {
        guarded("response_trailers", None, || {
            hook(filter, f, |host, plugin| {
                on_response_trailers(host, plugin, &mut f.stream.borrow_mut().state);
            })
        });
    }
    status::CONTINUE
}

/// The stream is over (answered, reset or abandoned): counted and judged once.
///
/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
) {
    // SAFETY: Envoy's pointer from `filter_new`.
    let Some(f) = (unsafe { stream(module) }) else {
        return;
    };
    guarded("stream_complete", (), || {
        if f.busy.get() {
            f.complete_later.set(true);
            return;
        }
        if let Some(plugin) = f.instance.plugin.as_ref() {
            complete(&host(filter, &f.instance.shared), f, plugin);
        }
    });
}

/// # Safety
/// `module` came from `filter_new`; Envoy destroys it once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module: FilterModulePtr) {
    guarded("filter_destroy", (), || {
        if !module.is_null() {
            // SAFETY: the box `filter_new` leaked.
            let f = unsafe { Box::from_raw(module.cast::<Filter>().cast_mut()) };
            if !f.completed.get() {
                // Envoy 1.40 completes every stream before destroying it; should
                // one not be, it no longer counts as live.
                let i = &f.instance;
                i.live.set(i.live.get().saturating_sub(1));
            }
        }
    });
}

// The hooks Envoy 1.40 requires a module to export, unused here.

/// # Safety
/// Unused: the request body passes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    status::CONTINUE
}

/// # Safety
/// Unused: request trailers pass.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
) -> u32 {
    status::CONTINUE
}

/// # Safety
/// Unused: no scheduler is created.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _event_id: u64,
) {
}

/// # Safety
/// Unused: no callout is made.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _callout_id: u64,
    _result: u32,
    _headers: *const abi::HttpHeader,
    _headers_size: usize,
    _body: *const EnvoyBuffer,
    _body_size: usize,
) {
}

/// # Safety
/// Unused: no stream is started.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
    _headers: *const abi::HttpHeader,
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
    _trailers: *const abi::HttpHeader,
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
