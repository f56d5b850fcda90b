//! Behaviour of parse + validate as an operator sees it: one precise line per problem.

use wasm_bindgen_test::wasm_bindgen_test;

use crate::{load_json, Problem};

/// The compiled route `web` of a one-route config whose route has `fields`
/// (e.g. `"canary":{…}`); for the field modules' tests.
pub fn web_route(fields: &str) -> crate::compiled::CompiledRoute {
    let json = format!(r#"{{"schemaVersion":1,"routes":[{{"name":"web",{fields}}}]}}"#);
    let mut c = load_json(json.as_bytes()).unwrap();
    c.routes.remove(0)
}

fn problems(json: &str) -> Vec<String> {
    match load_json(json.as_bytes()) {
        Ok(_) => Vec::new(),
        Err(list) => list.iter().map(Problem::to_string).collect(),
    }
}

fn assert_one(json: &str, expected_start: &str) {
    let got = problems(json);
    assert_eq!(got.len(), 1, "expected one problem, got {got:#?}");
    assert!(
        got[0].starts_with(expected_start),
        "expected a line starting {expected_start:?}, got {:?}",
        got[0]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn minimal_valid_config_compiles() {
    let c =
        load_json(br#"{"schemaVersion":1,"routes":[{"name":"web","match":{"pathPrefix":"/"}}]}"#)
            .unwrap();
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].name, "web");
}

#[wasm_bindgen_test(unsupported = test)]
fn unknown_field_names_its_path() {
    assert_one(
        r#"{"schemaVersion":1,"routes":[{"name":"a"},{"name":"b","match":{"pathPrefx":"/"}}]}"#,
        "routes[1].match.pathPrefx: unknown field `pathPrefx`",
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn wrong_type_names_its_path_and_position() {
    let got = problems(r#"{"schemaVersion":1,"routes":[{"name":7}]}"#);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("routes[0].name: invalid type: integer `7`, expected a string"),
        "{got:?}"
    );
    assert!(got[0].ends_with("(line 1, column 38)"), "{got:?}");
}

#[wasm_bindgen_test(unsupported = test)]
fn syntax_error_is_reported_at_root_with_position() {
    assert_one(
        r#"{"schemaVersion":1,"#,
        "(root): EOF while parsing a value (line 1, column 19)",
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn empty_configuration_is_refused() {
    assert_one("  \n", "(root): configuration is empty");
}

#[wasm_bindgen_test(unsupported = test)]
fn missing_schema_version_is_refused() {
    assert_one(r#"{"routes":[]}"#, "(root): missing field `schemaVersion`");
}

#[wasm_bindgen_test(unsupported = test)]
fn unsupported_schema_version_is_refused() {
    assert_one(
        r#"{"schemaVersion":2}"#,
        "schemaVersion: unsupported schema version 2",
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn bad_regex_names_its_path() {
    assert_one(
        r#"{"schemaVersion":1,"routes":[{"name":"a","match":{"pathRegex":"/(unclosed"}}]}"#,
        "routes[0].match.pathRegex: invalid regex:",
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn oversized_regex_is_refused() {
    assert_one(
        r#"{"schemaVersion":1,"routes":[{"name":"a","match":{"pathRegex":"(\\w{100}){100}"}}]}"#,
        "routes[0].match.pathRegex: regex compiles larger than",
    );
}

/// Unicode case folding, the Unicode `\w \d \s` classes and `.` as one UTF-8
/// character work in the shipped feature set. (Property classes such as
/// `\p{Greek}` are not in the module; other workspace crates enable them in native
/// test builds, so `integration-tests/tests/tuning.rs` checks the refusal in Envoy.)
#[wasm_bindgen_test(unsupported = test)]
fn unicode_classes_and_case_folding_work() {
    let c = load_json(
        r#"{"schemaVersion":1,"routes":[{"name":"a","match":{"pathRegex":"(?i)/straße/\\w+/.."}}]}"#
            .as_bytes(),
    )
    .unwrap();
    let m = c.routes[0].path.as_ref().unwrap();
    assert!(!m.matches("/STRASSE/é/éé".as_bytes()));
    assert!(m.matches("/STRAßE/été/éé".as_bytes()));
    assert!(!m.matches(b"/strasse/x/ab/c"));
}

#[wasm_bindgen_test(unsupported = test)]
fn duplicate_route_names_are_refused() {
    assert_one(
        r#"{"schemaVersion":1,"routes":[{"name":"web"},{"name":"api"},{"name":"web"}]}"#,
        "routes[2].name: duplicate route name \"web\"",
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn empty_route_name_is_refused() {
    assert_one(
        r#"{"schemaVersion":1,"routes":[{"name":""}]}"#,
        "routes[0].name: must not be empty",
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn reserved_route_name_is_refused() {
    assert_one(
        r#"{"schemaVersion":1,"routes":[{"name":"other"}]}"#,
        "routes[0].name: \"other\" is reserved",
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn route_name_with_a_dot_is_refused() {
    assert_one(
        r#"{"schemaVersion":1,"routes":[{"name":"a.b"}]}"#,
        "routes[0].name: may contain only",
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn path_prefix_must_start_with_slash() {
    assert_one(
        r#"{"schemaVersion":1,"routes":[{"name":"a"},{"name":"b","match":{"pathPrefix":"api"}}]}"#,
        "routes[1].match.pathPrefix: must start with '/'",
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn two_path_matchers_are_refused() {
    assert_one(
        r#"{"schemaVersion":1,"routes":[{"name":"a","match":{"pathExact":"/a","pathPrefix":"/b"}}]}"#,
        "routes[0].match: give at most one of pathExact, pathPrefix, pathRegex; got pathExact, pathPrefix",
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn header_condition_needs_exactly_one_kind() {
    assert_one(
        r#"{"schemaVersion":1,"routes":[{"name":"a","match":{"headers":[{"name":"x","exact":"1","prefix":"2"}]}}]}"#,
        "routes[0].match.headers[0]: give exactly one of exact, prefix, suffix, regex, present; got exact, prefix",
    );
    assert_one(
        r#"{"schemaVersion":1,"routes":[{"name":"a","match":{"headers":[{"name":"x"}]}}]}"#,
        "routes[0].match.headers[0]: give exactly one of exact, prefix, suffix, regex, present; got none",
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn uppercase_header_name_and_method_are_refused_with_the_fix() {
    let got = problems(
        r#"{"schemaVersion":1,"routes":[{"name":"a","match":{"methods":["get"],"headers":[{"name":"X-Id","present":true}]}}]}"#,
    );
    assert_eq!(
        got,
        vec![
            "routes[0].match.methods[0]: methods are case-sensitive and uppercase: use \"GET\"",
            "routes[0].match.headers[0].name: must be lowercase (Envoy stores header names lowercased): use \"x-id\"",
        ]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn bad_authority_patterns_are_refused() {
    let got = problems(
        r#"{"schemaVersion":1,"routes":[{"name":"a","match":{"authority":["*.ok.com","a*b.com","", "sp ace"]}}]}"#,
    );
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(got[0].starts_with("routes[0].match.authority[1]: \"a*b.com\": a wildcard"));
    assert!(got[1].starts_with("routes[0].match.authority[2]: must not be empty"));
    assert!(got[2].starts_with("routes[0].match.authority[3]: \"sp ace\" is not a host pattern"));
}

#[wasm_bindgen_test(unsupported = test)]
fn every_problem_is_reported_not_only_the_first() {
    let got = problems(
        r#"{"schemaVersion":3,"routeHeader":"Bad Header","routes":[
            {"name":""},
            {"name":"ok","match":{"pathPrefix":"x","pathRegex":"("}},
            {"name":"ok"}]}"#,
    );
    let paths: Vec<&str> = got.iter().map(|l| l.split(": ").next().unwrap()).collect();
    assert_eq!(
        paths,
        vec![
            "schemaVersion",
            "routes[0].name",
            "routes[1].match",
            "routes[1].match.pathPrefix",
            "routes[1].match.pathRegex",
            "routes[2].name",
            "routeHeader",
        ],
        "{got:#?}"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn too_many_routes_are_refused() {
    let routes: Vec<String> = (0..257).map(|i| format!(r#"{{"name":"r{i}"}}"#)).collect();
    let json = format!(r#"{{"schemaVersion":1,"routes":[{}]}}"#, routes.join(","));
    assert_one(&json, "routes: at most 256 routes, got 257");
}

#[wasm_bindgen_test(unsupported = test)]
fn route_header_must_be_a_regular_lowercase_header() {
    assert_one(
        r#"{"schemaVersion":1,"routeHeader":":path"}"#,
        "routeHeader: must be a regular header name",
    );
    assert!(problems(r#"{"schemaVersion":1,"routeHeader":"x-meshguard-route"}"#).is_empty());
}

#[wasm_bindgen_test(unsupported = test)]
fn a_method_must_be_a_nonempty_token() {
    let at = |m: &str| {
        problems(&format!(
            r#"{{"schemaVersion":1,"routes":[{{"name":"a","match":{{"methods":["{m}"]}}}}]}}"#
        ))
    };
    assert_eq!(
        at(""),
        vec!["routes[0].match.methods[0]: \"\" is not a valid HTTP method token"]
    );
    assert_eq!(
        at("GE T"),
        vec!["routes[0].match.methods[0]: \"GE T\" is not a valid HTTP method token"]
    );
    assert_eq!(at("PURGE"), Vec::<String>::new());
}

#[wasm_bindgen_test(unsupported = test)]
fn the_route_header_must_differ_from_both_routing_headers() {
    for taken in ["x-meshguard-variant", "x-meshguard-cluster"] {
        assert_eq!(
            problems(&format!(
                r#"{{"schemaVersion":1,"routeHeader":"{taken}","routes":[{{"name":"a"}}]}}"#
            )),
            vec![format!(
                "routeHeader: {taken:?} is already the variant or cluster header"
            )]
        );
    }
    assert_eq!(
        problems(r#"{"schemaVersion":1,"routeHeader":"x-route","routes":[{"name":"a"}]}"#),
        Vec::<String>::new()
    );
}

/// A syntax error inside a value names no field (the text there is not a
/// value of one), even where the position sits deep in the document.
#[wasm_bindgen_test(unsupported = test)]
fn syntax_error_inside_a_route_is_reported_at_root() {
    let got = problems(r#"{"schemaVersion":1,"routes":[{"name":"a","match":{"pathPrefix":/}}]}"#);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("(root): expected value"), "{got:?}");
}

#[test]
fn root_paths_are_shown_as_root() {
    for p in ["", ".", "?"] {
        assert_eq!(super::display_path(p), crate::ROOT_PATH, "{p:?}");
    }
    assert_eq!(super::display_path("routes[0]"), "routes[0]");
}

#[cfg(feature = "cli")]
#[test]
fn yaml_type_error_keeps_the_whole_reason_and_its_path() {
    let p = crate::parse_yaml(b"schemaVersion: 1\nroutes:\n  - name: [1]\n").unwrap_err();
    assert_eq!(p.path, "routes[0].name");
    assert!(p.reason.starts_with("invalid type: sequence"), "{p:?}");
    assert!(p.reason.ends_with("(line 3, column 11)"), "{p:?}");
    // A document that is not a map at all is a problem of the root.
    let p = crate::parse_yaml(b"5\n").unwrap_err();
    assert_eq!(p.path, crate::ROOT_PATH, "{p:?}");
    // Its reason has no parent path in front, and keeps its own "type: ".
    assert!(p.reason.starts_with("invalid type: integer `5`"), "{p:?}");
}
