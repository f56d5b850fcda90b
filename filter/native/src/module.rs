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
//! worker runs its tick (held breaker outcomes, rollout folds, slot stamps)
//! from its streams' hooks once one is due (every 50 ms, as the Wasm build's
//! timer does), and writes everything it holds when a configuration's last
//! stream on the worker ends, so an idle worker holds nothing. Batched counts
//! are not the worker's: every worker adds them up in the configuration's
//! metrics, and the module's tick thread has Envoy's main thread write them
//! (`on_http_filter_config_scheduled`, `ticker.rs`), so a worker whose
//! streams end one by one does not write them per request.
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
use std::time::Duration;

use meshguard::glue::configure::configure;
use meshguard::glue::fleet::{on_sync_answer, sync};
use meshguard::glue::plugin::Plugin;
use meshguard::glue::request::{
    flush_idle, on_grpc_response, on_request_headers, on_response_headers, on_response_trailers,
    on_stream_end, on_tick, Stream,
};
use meshguard::glue::worker::{Worker, TICK_MS};
use meshguard::host::{Host, Level};
use meshguard_engine::Rng;

use crate::abi::{
    self, status, ConfigEnvoyPtr, ConfigModulePtr, EnvoyBuffer, FilterEnvoyPtr, FilterModulePtr,
};
use crate::host::{log, Metrics, NativeHost, Phase, Shared};
use crate::ticker;

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A worker's copy of one configuration.
struct Instance {
    shared: Arc<Shared>,
    plugin: Option<Rc<Plugin>>,
    rng: Rc<Rng>,
    next_tick: Cell<u64>,
    /// Whether the configuration needs the worker's tick (breakers, rollouts,
    /// or counts the worker batches because the configuration keeps none):
    /// without it no stream lends a scheduler and no hook looks at the clock.
    needs_tick: bool,
    /// This worker's streams of this configuration that have not completed:
    /// each one's address (its key here) and Envoy pointer.
    streams: RefCell<Vec<(usize, FilterEnvoyPtr)>>,
    /// The stream lending its scheduler to this worker's tick, and the key of
    /// the lent scheduler (see `ticker.rs`).
    ticker: Cell<Option<(u64, usize)>>,
}

thread_local! {
    /// This worker's configurations, by generation.
    static INSTANCES: RefCell<Vec<Rc<Instance>>> = const { RefCell::new(Vec::new()) };
    /// Envoy's main thread: the copy of each loaded configuration that syncs
    /// with the fleet service (the configuration's own callout, which no
    /// stream's end can cancel), with the configuration it belongs to (held,
    /// so its hooks never read a freed one). Entries of destroyed
    /// configurations are dropped here, on the main thread (Envoy may destroy
    /// a configuration on the worker of its last stream).
    static MAIN: RefCell<Vec<(Arc<Shared>, Rc<Plugin>)>> = const { RefCell::new(Vec::new()) };
    /// This worker's owner id for concurrency slots (0: not drawn yet).
    static OWNER: Cell<u64> = const { Cell::new(0) };
}

/// One stream.
struct Filter {
    instance: Rc<Instance>,
    stream: RefCell<Stream>,
    /// Hooks of this stream running now (should Envoy end the stream from
    /// inside one, as a local reply might, the completion waits for it).
    busy: Cell<u32>,
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
        answer: None,
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
            answer: None,
        };
        // The whole configuration is built once here, so every problem is
        // reported before a worker sees it and every metric is defined while
        // Envoy still accepts definitions.
        let worker = Rc::new(Worker::default());
        worker.owner.set(owner(&loader));
        let Some(main) = configure(&loader, worker) else {
            return std::ptr::null();
        };
        // With a scheduler on Envoy's main thread the configuration keeps
        // every worker's batched counts and writes them there; without one
        // (Envoy gave none) each worker batches its own.
        let scheduler = ticker::scheduler(config_envoy);
        let metrics = metrics.into_inner();
        let shared = Arc::new(Shared {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            name,
            config: bytes,
            metrics: if scheduler.is_some() {
                metrics.keeping_counts()
            } else {
                metrics
            },
            destroyed: AtomicBool::new(false),
        });
        // The fleet sync runs on this thread, posted by the tick thread
        // through the configuration's scheduler.
        let fleet = main.syncs_fleet() && scheduler.is_some();
        if fleet {
            MAIN.with(|m| {
                let mut m = m.borrow_mut();
                m.retain(|(s, _)| !s.destroyed.load(Ordering::Acquire));
                m.push((shared.clone(), main));
            });
        } else if main.syncs_fleet() {
            log(
                Level::Warn,
                "meshguard: Envoy gave no scheduler on its main thread: fleet rollouts cannot sync; each holds its configured split (or judges alone, whileUnreachable: local)",
            );
        }
        if let Some(scheduler) = scheduler {
            ticker::register(scheduler, config_envoy, &shared, fleet);
        }
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
        // Its streams have ended (each holds Envoy's configuration): what they
        // counted since the last flush is written now, while Envoy's
        // configuration still lives (this runs in its destructor).
        if let Some(envoy) = ticker::forget(shared.generation) {
            // SAFETY: the configuration `envoy` points at is being destroyed,
            // its metrics still live (Envoy calls this from its destructor).
            unsafe { shared.metrics.flush(envoy) };
        }
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
        let needs_tick = plugin
            .as_ref()
            .is_some_and(|p| p.needs_tick_keeping(shared.metrics.keeps_counts()));
        let i = Rc::new(Instance {
            shared: shared.clone(),
            needs_tick,
            plugin,
            rng: Rc::new(Rng::new(seed)),
            next_tick: Cell::new(0),
            streams: RefCell::new(Vec::new()),
            ticker: Cell::new(None),
        });
        list.push(i.clone());
        i
    })
}

/// Runs the tick's work when one is due (rollouts fold and read verdicts,
/// concurrency stamps are renewed).
fn tick_if_due(host: &NativeHost<'_>, i: &Instance, plugin: &Plugin) {
    if !i.needs_tick {
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
        let f = Box::new(Filter {
            instance,
            stream: RefCell::new(Stream::default()),
            busy: Cell::new(0),
            complete_later: Cell::new(false),
            completed: Cell::new(false),
        });
        let raw = Box::into_raw(f);
        // SAFETY: just leaked; freed only by `filter_destroy`.
        let f = unsafe { &*raw };
        f.instance.streams.borrow_mut().push((raw as usize, filter));
        raw.cast_const().cast()
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
/// `None` when the worker has no configuration (the stream passes) or `run`
/// panicked (caught and logged here, so the completion still runs).
fn hook<T>(
    name: &str,
    filter: FilterEnvoyPtr,
    f: &Filter,
    run: impl FnOnce(&NativeHost<'_>, &Plugin) -> T,
) -> Option<T> {
    hook_answering(name, filter, f, None, run)
}

/// [`hook`], with the rate limit service's `answer` readable from the host.
fn hook_answering<T>(
    name: &str,
    filter: FilterEnvoyPtr,
    f: &Filter,
    answer: Option<&[u8]>,
    run: impl FnOnce(&NativeHost<'_>, &Plugin) -> T,
) -> Option<T> {
    let i = &f.instance;
    let plugin = i.plugin.as_ref()?;
    let host = NativeHost {
        answer,
        ..host(filter, &i.shared)
    };
    if i.ticker.get().is_none() && !f.completed.get() {
        lend(i, std::ptr::from_ref(f) as usize, filter);
    }
    f.busy.set(f.busy.get().saturating_add(1));
    let out = guarded(name, None, || Some(run(&host, plugin)));
    f.busy.set(f.busy.get().saturating_sub(1));
    if f.busy.get() == 0 && f.complete_later.replace(false) {
        complete(&host, f, plugin);
    }
    out
}

fn complete(host: &NativeHost<'_>, f: &Filter, plugin: &Plugin) {
    if f.completed.replace(true) {
        return;
    }
    let i = &f.instance;
    // Counted off first: a panic below must not keep the worker "busy" for ever.
    leave(f);
    guarded("stream_complete", (), || {
        on_stream_end(host, plugin, &f.stream.borrow());
    });
    guarded("tick", (), || {
        if i.streams.borrow().is_empty() {
            // No later hook of this configuration may come on this worker.
            flush_idle(host, plugin);
        } else {
            tick_if_due(host, i, plugin);
        }
    });
}

/// The stream no longer counts as live; if it lent the worker's scheduler,
/// another live stream of the configuration lends one.
fn leave(f: &Filter) {
    let i = &f.instance;
    let me = std::ptr::from_ref(f) as usize;
    i.streams.borrow_mut().retain(|(s, _)| *s != me);
    if let Some((key, stream)) = i.ticker.get() {
        if stream == me {
            ticker::give_back(key);
            i.ticker.set(None);
            let next = i.streams.borrow().first().copied();
            if let Some((s, envoy)) = next {
                lend(i, s, envoy);
            }
        }
    }
}

/// Lends stream `s`'s scheduler to the worker's tick, when it needs one.
fn lend(i: &Instance, s: usize, envoy: FilterEnvoyPtr) {
    if i.ticker.get().is_some() || !i.needs_tick {
        return;
    }
    if let Some(key) = ticker::lend(envoy, Duration::from_millis(TICK_MS)) {
        i.ticker.set(Some((key, s)));
    }
}

/// A hook on the request path panicked: the request is answered as the Wasm
/// build's trapped request is (503; a gRPC client gets UNAVAILABLE, since this
/// ABI's local reply would otherwise carry grpc-status 0). True when it was
/// answered; a worker without a configuration lets its streams pass.
fn fail_request(filter: FilterEnvoyPtr, f: &Filter) -> bool {
    if f.instance.plugin.is_none() {
        return false;
    }
    guarded("request fallback", false, || {
        let h = host(filter, &f.instance.shared);
        let grpc = h
            .request_header("content-type")
            .ok()
            .flatten()
            .is_some_and(|v| v.starts_with(b"application/grpc"));
        let _ = if grpc {
            h.send_grpc_reply(14, "meshguard: internal error", &[])
        } else {
            h.send_local_reply(503, &[], b"meshguard: internal error\n")
        };
        true
    })
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
    let paused = guarded("request_headers", None, || {
        hook("request_headers", filter, f, |host, plugin| {
            #[cfg(feature = "panic-drill")]
            crate::drill::panic_on_demand(host, b"1");
            tick_if_due(host, &f.instance, plugin);
            let s = on_request_headers(host, plugin, &f.instance.rng);
            let pause = s.must_pause();
            *f.stream.borrow_mut() = s;
            pause
        })
    });
    // The decision panicked: the request is failed.
    let replied = paused.is_none() && fail_request(filter, f);
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
            hook("response_headers", filter, f, |host, plugin| {
                #[cfg(feature = "panic-drill")]
                crate::drill::panic_on_demand(host, b"response");
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
            hook("response_trailers", filter, f, |host, plugin| {
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
        if f.busy.get() > 0 {
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
                leave(&f);
            }
        }
    });
}

// The other hooks Envoy 1.40 requires a module to export: the request body
// and trailers (held while a verdict is pending), the tick, the rate limit
// service's answers, and the stream callouts and watermarks, unused here.

/// The request body passes, except while the rate limit service is asked (or
/// the request was answered): then Envoy buffers it until the decision, so a
/// body cannot carry its headers past a pending verdict. (Headers stopped with
/// `StopIteration` go on with a body answered `Continue`; the Wasm build's
/// pause is Envoy's `StopAllIterationAndWatermark`, which holds the body
/// without asking. Tested in `global.rs`.)
///
/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: Envoy's pointer from `filter_new`.
    let Some(f) = (unsafe { stream(module) }) else {
        return status::CONTINUE;
    };
    match guarded("request_body", None, || {
        #[cfg(feature = "panic-drill")]
        crate::drill::panic_on_demand(&host(filter, &f.instance.shared), b"body");
        Some(waiting(f))
    }) {
        Some(false) => status::CONTINUE,
        // Waiting for the verdict.
        Some(true) => abi::body_status::STOP_ITERATION_AND_BUFFER,
        // Answered: Envoy ends the request.
        None if fail_request(filter, f) => abi::body_status::STOP_ITERATION_AND_BUFFER,
        None => status::CONTINUE,
    }
}

/// Request trailers wait for a pending verdict as the body does.
///
/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
) -> u32 {
    // SAFETY: Envoy's pointer from `filter_new`.
    let Some(f) = (unsafe { stream(module) }) else {
        return status::CONTINUE;
    };
    match guarded("request_trailers", None, || Some(waiting(f))) {
        Some(false) => status::CONTINUE,
        Some(true) => status::STOP_ITERATION,
        None if fail_request(filter, f) => status::STOP_ITERATION,
        None => status::CONTINUE,
    }
}

/// The worker's tick, posted to the stream lending its scheduler.
///
/// # Safety
/// Envoy's pointers for a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
    event_id: u64,
) {
    // SAFETY: Envoy's pointer from `filter_new`.
    let Some(f) = (unsafe { stream(module) }) else {
        return;
    };
    if event_id != ticker::TICK_EVENT || f.completed.get() {
        return;
    }
    guarded("scheduled", None, || {
        hook("scheduled", filter, f, |host, plugin| {
            tick_if_due(host, &f.instance, plugin);
        })
    });
}

/// The batched counts of every worker, written on Envoy's main thread
/// (posted by the tick thread, `ticker.rs`).
///
/// # Safety
/// Envoy's pointers for a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: ConfigEnvoyPtr,
    config: ConfigModulePtr,
    event_id: u64,
) {
    guarded("config_scheduled", (), || {
        if config.is_null() {
            return;
        }
        // SAFETY: the pointer `config_new` made; Envoy posts this only while
        // the configuration lives, and `config_destroy` comes after.
        let shared = unsafe { &*config.cast::<Shared>() };
        match event_id {
            // SAFETY: Envoy's live configuration of these metrics.
            ticker::FLUSH_EVENT => unsafe { shared.metrics.flush(config_envoy) },
            ticker::FLEET_EVENT => {
                if let Some((shared, plugin)) = main_plugin(config) {
                    sync(&main_host(config_envoy, &shared, None), &plugin);
                }
            }
            _ => {}
        }
    });
}

/// The main thread's copy of the configuration at `config` (Envoy's module
/// pointer), when it syncs and is not destroyed; destroyed ones are dropped.
fn main_plugin(config: ConfigModulePtr) -> Option<(Arc<Shared>, Rc<Plugin>)> {
    MAIN.with(|m| {
        let mut m = m.borrow_mut();
        m.retain(|(s, _)| !s.destroyed.load(Ordering::Acquire));
        m.iter()
            .find(|(s, _)| Arc::as_ptr(s).cast::<std::ffi::c_void>() == config)
            .map(|(s, p)| (s.clone(), p.clone()))
    })
}

fn main_host<'a>(
    config: ConfigEnvoyPtr,
    shared: &'a Shared,
    answer: Option<&'a [u8]>,
) -> NativeHost<'a> {
    NativeHost {
        phase: Phase::Main {
            config,
            metrics: &shared.metrics,
        },
        config: &shared.config,
        name: &shared.name,
        answer,
    }
}

/// The fleet service answered the configuration's sync (or the callout
/// failed), on Envoy's main thread: read as gRPC (`grpc.rs`) and handed to
/// the glue.
///
/// # Safety
/// Envoy's pointers for a live configuration; `headers` and `body` are null or
/// valid for their sizes during this hook.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    config_envoy: ConfigEnvoyPtr,
    config: ConfigModulePtr,
    callout_id: u64,
    result: u32,
    headers: *const abi::HttpHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) {
    guarded("config_http_callout_done", (), || {
        // The configuration as the main thread holds it (no raw pointer read).
        let (Some((shared, plugin)), Ok(token)) = (main_plugin(config), u32::try_from(callout_id))
        else {
            return;
        };
        // SAFETY: Envoy's arrays for this hook.
        let (code, message) =
            unsafe { read_answer(result, headers, headers_size, body, body_size) };
        let size = message.as_ref().map_or(0, Vec::len);
        let host = main_host(config_envoy, &shared, message.as_deref());
        on_sync_answer(&host, &plugin, token, code, size);
    });
}

/// A callout's answer as gRPC: its status and, when 0, its message.
///
/// # Safety
/// `headers` and `body` are null or valid for their sizes during the hook.
unsafe fn read_answer(
    result: u32,
    headers: *const abi::HttpHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) -> (u32, Option<Vec<u8>>) {
    // SAFETY: the caller's contract.
    let headers = unsafe { slice(headers, headers_size) };
    let pairs: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|h| {
            // SAFETY: Envoy's header views, valid during this hook.
            let k = unsafe { slice(h.key_ptr, h.key_length) };
            let v = unsafe { slice(h.value_ptr, h.value_length) };
            (k, v)
        })
        .collect();
    let mut bytes = Vec::new();
    // SAFETY: as above.
    for chunk in unsafe { slice(body, body_size) } {
        // SAFETY: as above.
        bytes.extend_from_slice(unsafe { chunk.bytes() }.unwrap_or_default());
    }
    let ok = result == abi::callout_result::SUCCESS;
    let (code, message) = crate::grpc::answer(ok, &pairs, &bytes);
    (code, message.map(<[u8]>::to_vec))
}

/// The stream waits for the rate limit service, or was answered locally.
fn waiting(f: &Filter) -> bool {
    f.stream.try_borrow().is_ok_and(|s| s.must_pause())
}

/// The rate limit service answered (or the callout failed): the answer is
/// read as gRPC (`grpc.rs`) and handed to the glue as the Wasm build's
/// `on_grpc_call_response` is.
///
/// # Safety
/// Envoy's pointers for a live stream; `headers` and `body` are null or valid
/// for their sizes during this hook.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
    callout_id: u64,
    result: u32,
    headers: *const abi::HttpHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) {
    // SAFETY: Envoy's pointer from `filter_new`.
    let Some(f) = (unsafe { stream(module) }) else {
        return;
    };
    if f.completed.get() {
        return;
    }
    let Ok(token) = u32::try_from(callout_id) else {
        return;
    };
    guarded("http_callout_done", None, || {
        // SAFETY: Envoy's arrays for this hook (null when empty).
        let (code, message) =
            unsafe { read_answer(result, headers, headers_size, body, body_size) };
        let size = message.as_ref().map_or(0, Vec::len);
        let message = message.as_deref();
        hook_answering("http_callout_done", filter, f, message, |host, plugin| {
            // Out of its cell while the glue runs: a limited request's local
            // reply passes this filter's own response hook, which reads it.
            let mut s = f.stream.take();
            on_grpc_response(host, plugin, &mut s, (token, code, size), &f.instance.rng);
            *f.stream.borrow_mut() = s;
        })
    });
}

/// `len` items at `ptr`, or none when `ptr` is null.
///
/// # Safety
/// `ptr` is null or valid for `len` items while the slice lives.
unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
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
