//! Request-path steps, written over [`Host`] so the fake host can drive them.

use meshguard_config::CompiledConfig;
use meshguard_engine::select_route;

use crate::host::view::CachedRequest;
use crate::host::{Host, Level};

/// What the filter decided for one request, kept for later callbacks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestState {
    /// Index of the matched route in the compiled config; `None`: pass through.
    pub route: Option<usize>,
}

/// `on_http_request_headers`: select the route and, when configured, tell the
/// upstream which route matched (removing any client-sent copy of that header).
pub fn on_request_headers(host: &impl Host, config: &CompiledConfig) -> RequestState {
    let route = select_route(config, &mut CachedRequest::new(host));
    if let Some(header) = &config.route_header {
        let name = route
            .and_then(|i| config.routes.get(i))
            .map(|r| r.name.as_bytes());
        if let Err(e) = host.set_request_header(header, name) {
            host.log(Level::Warn, &e.to_string());
        }
    }
    RequestState { route }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    use meshguard_config::load_json;

    fn config(json: &str) -> CompiledConfig {
        load_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn matched_route_is_told_upstream_and_client_copy_replaced() {
        let c = config(
            r#"{"schemaVersion":1,"routeHeader":"x-meshguard-route","routes":[{"name":"api","match":{"pathPrefix":"/api"}}]}"#,
        );
        let host = FakeHost::new()
            .with_header(":path", b"/api/x")
            .with_header("x-meshguard-route", b"spoofed");
        assert_eq!(on_request_headers(&host, &c).route, Some(0));
        assert_eq!(
            host.header_values("x-meshguard-route"),
            vec![b"api".to_vec()]
        );
    }

    #[test]
    fn unmatched_request_passes_but_client_copy_is_removed() {
        let c = config(
            r#"{"schemaVersion":1,"routeHeader":"x-meshguard-route","routes":[{"name":"api","match":{"pathPrefix":"/api"}}]}"#,
        );
        let host = FakeHost::new()
            .with_header(":path", b"/web")
            .with_header("x-meshguard-route", b"api");
        assert_eq!(on_request_headers(&host, &c).route, None);
        assert!(host.header_values("x-meshguard-route").is_empty());
    }

    #[test]
    fn without_route_header_nothing_is_written() {
        let c = config(r#"{"schemaVersion":1,"routes":[{"name":"all"}]}"#);
        let host = FakeHost::new().with_header("x-meshguard-route", b"keep");
        assert_eq!(on_request_headers(&host, &c).route, Some(0));
        assert_eq!(
            host.header_values("x-meshguard-route"),
            vec![b"keep".to_vec()]
        );
        assert!(
            host.reads.borrow().is_empty(),
            "no condition, so no header read"
        );
    }

    #[test]
    fn a_failing_header_read_counts_as_absent_and_is_logged() {
        let c = config(
            r#"{"schemaVersion":1,"routes":[
                {"name":"beta","match":{"headers":[{"name":"x-user-type","exact":"beta"}]}},
                {"name":"rest"}]}"#,
        );
        let host = FakeHost::new()
            .with_header("x-user-type", b"beta")
            .failing_read("x-user-type");
        assert_eq!(on_request_headers(&host, &c).route, Some(1));
        assert_eq!(host.logs.borrow().len(), 1);
        assert!(host.logs.borrow()[0]
            .1
            .contains("treating the header as absent"));
    }

    #[test]
    fn each_header_is_read_at_most_once_per_request() {
        let c = config(
            r#"{"schemaVersion":1,"routes":[
                {"name":"a","match":{"headers":[{"name":"x-k","exact":"1"}]}},
                {"name":"b","match":{"headers":[{"name":"x-k","exact":"2"}]}},
                {"name":"c","match":{"headers":[{"name":"x-k","present":true}]}}]}"#,
        );
        let host = FakeHost::new().with_header("x-k", b"3");
        assert_eq!(on_request_headers(&host, &c).route, Some(2));
        assert_eq!(*host.reads.borrow(), vec!["x-k".to_string()]);
    }
}
