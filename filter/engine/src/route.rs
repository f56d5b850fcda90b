//! Route selection: the first configured route whose conditions all hold. The
//! view is asked only for what a condition needs, in order, so a route whose path
//! does not match costs no header read.

use meshguard_config::compiled::CompiledRoute;
use meshguard_config::matcher::path_only;

use crate::view::RequestView;

/// Index of the first of `routes` that the request matches, if any.
pub fn select_route<'a>(
    routes: impl IntoIterator<Item = &'a CompiledRoute>,
    req: &mut impl RequestView,
) -> Option<usize> {
    routes.into_iter().position(|r| route_matches(r, req))
}

fn route_matches(route: &CompiledRoute, req: &mut impl RequestView) -> bool {
    if let Some(m) = &route.path {
        match req.header(":path") {
            Some(p) if m.matches(path_only(p)) => {}
            _ => return false,
        }
    }
    if let Some(methods) = &route.methods {
        match req.header(":method") {
            Some(m) if methods.iter().any(|x| x.as_slice() == m) => {}
            _ => return false,
        }
    }
    if let Some(hosts) = &route.authority {
        match req.header(":authority") {
            Some(a) if hosts.iter().any(|h| h.matches(a)) => {}
            _ => return false,
        }
    }
    route
        .headers
        .iter()
        .all(|h| h.condition.matches(req.header(&h.name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshguard_config::{load_json, CompiledConfig};
    use wasm_bindgen_test::wasm_bindgen_test;

    /// A request as a list of headers, counting how often each is asked for.
    struct Req {
        headers: Vec<(&'static str, Vec<u8>)>,
        asked: Vec<String>,
    }

    impl Req {
        fn new(headers: &[(&'static str, &[u8])]) -> Self {
            Req {
                headers: headers.iter().map(|(n, v)| (*n, v.to_vec())).collect(),
                asked: Vec::new(),
            }
        }
    }

    impl RequestView for Req {
        fn header(&mut self, name: &str) -> Option<&[u8]> {
            self.asked.push(name.to_string());
            self.headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_slice())
        }

        fn source_address(&mut self) -> Option<&[u8]> {
            None
        }
    }

    fn config(routes: &str) -> CompiledConfig {
        load_json(format!(r#"{{"schemaVersion":1,"routes":{routes}}}"#).as_bytes()).unwrap()
    }

    fn pick(c: &CompiledConfig, headers: &[(&'static str, &[u8])]) -> Option<String> {
        select_route(&c.routes, &mut Req::new(headers)).map(|i| c.routes[i].name.clone())
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn first_matching_route_wins_in_config_order() {
        let c = config(
            r#"[{"name":"api","match":{"pathPrefix":"/api"}},
                {"name":"api-v2","match":{"pathPrefix":"/api/v2"}},
                {"name":"web","match":{"pathPrefix":"/"}}]"#,
        );
        assert_eq!(pick(&c, &[(":path", b"/api/v2/x")]).as_deref(), Some("api"));
        assert_eq!(
            pick(&c, &[(":path", b"/index.html")]).as_deref(),
            Some("web")
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unmatched_request_selects_no_route() {
        let c = config(r#"[{"name":"api","match":{"pathPrefix":"/api"}}]"#);
        assert_eq!(pick(&c, &[(":path", b"/other")]), None);
        assert_eq!(pick(&c, &[]), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn path_matching_ignores_the_query_string() {
        let c = config(r#"[{"name":"exact","match":{"pathExact":"/login"}}]"#);
        assert!(pick(&c, &[(":path", b"/login?next=/x")]).is_some());
        assert!(pick(&c, &[(":path", b"/login/")]).is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn path_regex_must_match_the_whole_path() {
        let c = config(r#"[{"name":"user","match":{"pathRegex":"/users/[0-9]+"}}]"#);
        assert!(pick(&c, &[(":path", b"/users/42")]).is_some());
        assert!(pick(&c, &[(":path", b"/users/42/orders")]).is_none());
        assert!(pick(&c, &[(":path", b"/x/users/42")]).is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn methods_authority_and_headers_must_all_hold() {
        let c = config(
            r#"[{"name":"beta","match":{"methods":["GET","HEAD"],"authority":["*.example.com"],
                 "headers":[{"name":"x-user-type","exact":"beta-tester"},{"name":"x-debug","present":false}]}}]"#,
        );
        let ok: &[(&'static str, &[u8])] = &[
            (":method", b"GET"),
            (":authority", b"shop.example.com:8443"),
            ("x-user-type", b"beta-tester"),
        ];
        assert!(pick(&c, ok).is_some());
        let mut post = ok.to_vec();
        post[0] = (":method", b"POST");
        assert!(pick(&c, &post).is_none());
        let mut other_host = ok.to_vec();
        other_host[1] = (":authority", b"example.org");
        assert!(pick(&c, &other_host).is_none());
        let mut debug = ok.to_vec();
        debug.push(("x-debug", b"1"));
        assert!(pick(&c, &debug).is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn header_regex_matches_non_utf8_bytes_without_trouble() {
        let c = config(
            r#"[{"name":"bin","match":{"headers":[{"name":"x-raw","regex":"(?s-u)\\xff.*"}]}}]"#,
        );
        assert!(pick(&c, &[("x-raw", b"\xff\xfe\x80")]).is_some());
        assert!(pick(&c, &[("x-raw", b"plain")]).is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn only_headers_a_condition_needs_are_read() {
        let c = config(
            r#"[{"name":"a","match":{"pathPrefix":"/a","headers":[{"name":"x-a","present":true}]}},
                {"name":"b","match":{"pathPrefix":"/b"}}]"#,
        );
        let mut req = Req::new(&[(":path", b"/b")]);
        assert_eq!(select_route(&c.routes, &mut req), Some(1));
        // The failing path check short-circuits route "a" before its header is read.
        assert_eq!(req.asked, vec![":path", ":path"]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn route_without_conditions_matches_everything() {
        let c = config(r#"[{"name":"all"}]"#);
        assert_eq!(pick(&c, &[]).as_deref(), Some("all"));
    }
}
