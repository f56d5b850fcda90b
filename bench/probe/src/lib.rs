//! `make bench BENCH_ARGS=--prices`: the price of one host call. The plugin
//! configuration is `CALL*N` (such as `request_header_present*10`), or several such
//! items separated by commas; every request makes each call N times in the
//! callback where a filter would make it, and otherwise behaves like the
//! pass-through filter. The bench divides the extra CPU per request by N. A list
//! replays a filter's calls without its code, to tell the two costs apart.

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // `proxy_wasm::main!` exports `_start` with `#[no_mangle]`.
mod entry {
    use std::rc::Rc;

    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};

    /// One host call, and the callback it belongs to.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Call {
        Nothing,
        RequestHeaderPresent,
        RequestHeaderAbsent,
        RequestHeaderPairs,
        SetRequestHeader,
        ClearRouteCache,
        PropertySourceAddress,
        PropertyResponseCode,
        ResponseStatusHeader,
        SetResponseHeader,
        SharedGet,
        SharedGetCasSet,
        CurrentTime,
        Counter,
        Histogram,
        LogCurrentTime,
        LogCounter,
    }

    fn parse(s: &str) -> (Call, u32) {
        let (name, n) = s.split_once('*').unwrap_or((s, "1"));
        let call = match name.trim() {
            "request_header_present" => Call::RequestHeaderPresent,
            "request_header_absent" => Call::RequestHeaderAbsent,
            "request_header_pairs" => Call::RequestHeaderPairs,
            "set_request_header" => Call::SetRequestHeader,
            "clear_route_cache" => Call::ClearRouteCache,
            "property_source_address" => Call::PropertySourceAddress,
            "property_response_code" => Call::PropertyResponseCode,
            "response_status_header" => Call::ResponseStatusHeader,
            "set_response_header" => Call::SetResponseHeader,
            "shared_get" => Call::SharedGet,
            "shared_get_cas_set" => Call::SharedGetCasSet,
            "current_time" => Call::CurrentTime,
            "counter" => Call::Counter,
            "histogram" => Call::Histogram,
            "log_current_time" => Call::LogCurrentTime,
            "log_counter" => Call::LogCounter,
            _ => Call::Nothing,
        };
        (call, n.trim().parse().unwrap_or(1))
    }

    struct Probe {
        calls: Vec<(Call, u32)>,
        counter: u32,
        histogram: u32,
    }

    struct Root(Rc<Probe>);
    impl Context for Root {}
    impl RootContext for Root {
        fn on_configure(&mut self, _: usize) -> bool {
            let text = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
                .ok()
                .flatten()
                .unwrap_or_default();
            let calls = String::from_utf8_lossy(&text)
                .split(',')
                .map(parse)
                .collect();
            let counter = hostcalls::define_metric(MetricType::Counter, "probe_total").unwrap_or(0);
            let histogram =
                hostcalls::define_metric(MetricType::Histogram, "probe_ms").unwrap_or(0);
            self.0 = Rc::new(Probe {
                calls,
                counter,
                histogram,
            });
            true
        }
        fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Http(Rc::clone(&self.0))))
        }
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Http(Rc<Probe>);
    impl Context for Http {}

    impl Http {
        fn repeat(&self, here: &[Call], f: impl Fn(&Probe, Call)) {
            for &(call, n) in &self.0.calls {
                if here.contains(&call) {
                    for _ in 0..n {
                        f(&self.0, call);
                    }
                }
            }
        }
    }

    impl HttpContext for Http {
        fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
            use Call::*;
            self.repeat(
                &[
                    RequestHeaderPresent,
                    RequestHeaderAbsent,
                    RequestHeaderPairs,
                    SetRequestHeader,
                    ClearRouteCache,
                    PropertySourceAddress,
                    SharedGet,
                    SharedGetCasSet,
                    CurrentTime,
                    Counter,
                ],
                |p, call| {
                    let req = MapType::HttpRequestHeaders;
                    let _ = match call {
                        RequestHeaderPresent => {
                            hostcalls::get_map_value_bytes(req, "x-user-id").map(drop)
                        }
                        RequestHeaderAbsent => {
                            hostcalls::get_map_value_bytes(req, "x-absent").map(drop)
                        }
                        RequestHeaderPairs => hostcalls::get_map_bytes(req).map(drop),
                        SetRequestHeader => {
                            hostcalls::set_map_value_bytes(req, "x-probe", Some(b"stable"))
                        }
                        ClearRouteCache => {
                            hostcalls::call_foreign_function("clear_route_cache", None).map(drop)
                        }
                        PropertySourceAddress => {
                            hostcalls::get_property(vec!["source", "address"]).map(drop)
                        }
                        SharedGet => hostcalls::get_shared_data("probe").map(drop),
                        SharedGetCasSet => {
                            let cas = hostcalls::get_shared_data("probe").map_or(None, |(_, c)| c);
                            hostcalls::set_shared_data("probe", Some(&[1u8; 17]), cas)
                        }
                        CurrentTime => hostcalls::get_current_time().map(drop),
                        Counter => hostcalls::increment_metric(p.counter, 1),
                        _ => Ok(()),
                    };
                },
            );
            Action::Continue
        }

        fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
            use Call::*;
            self.repeat(&[ResponseStatusHeader, SetResponseHeader], |_, call| {
                let resp = MapType::HttpResponseHeaders;
                let _ = match call {
                    ResponseStatusHeader => {
                        hostcalls::get_map_value_bytes(resp, ":status").map(drop)
                    }
                    SetResponseHeader => {
                        hostcalls::set_map_value_bytes(resp, "x-probe", Some(b"1"))
                    }
                    _ => Ok(()),
                };
            });
            Action::Continue
        }

        fn on_log(&mut self) {
            use Call::*;
            self.repeat(
                &[PropertyResponseCode, Histogram, LogCurrentTime, LogCounter],
                |p, call| {
                    let _ = match call {
                        PropertyResponseCode => {
                            hostcalls::get_property(vec!["response", "code"]).map(drop)
                        }
                        Histogram => hostcalls::record_metric(p.histogram, 3),
                        LogCurrentTime => hostcalls::get_current_time().map(drop),
                        LogCounter => hostcalls::increment_metric(p.counter, 1),
                        _ => Ok(()),
                    };
                },
            );
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| Box::new(Root(Rc::new(Probe {
            calls: Vec::new(), counter: 0, histogram: 0,
        }))));
    }}
}
