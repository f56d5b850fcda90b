//! `explain`: how meshguard says why it decided what it did — a decision record
//! per request (Envoy filter state for access logs, a response header for trusted
//! callers that ask, a debug log line) and a live status document at a path only
//! trusted callers can read. See docs/src/explanations.md.

use crate::cidr::Cidr;
use crate::names::check_header_name;
use crate::problem::{join, Problems};

// `explain` as written: a raw config type.
pub use crate::raw::Explain;

/// The request header a trusted caller sends to ask for the decision header.
pub const DEFAULT_ASK_HEADER: &str = "x-meshguard-explain";
/// The response header that carries the decision record.
pub const DEFAULT_DECISION_HEADER: &str = "x-meshguard-decision";
/// The filter state key (Envoy prefixes `wasm.`): `%FILTER_STATE(wasm.meshguard.decision:PLAIN)%`.
pub const FILTER_STATE_KEY: &str = "meshguard.decision";
/// Longest status path accepted.
pub const MAX_STATUS_PATH: usize = 256;

/// `explain`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledExplain {
    /// Who may ask.
    pub trusted: Vec<Cidr>,
    /// Write filter state.
    pub filter_state: bool,
    /// `(ask, answer)` header names, when the header is on.
    pub header: Option<(String, String)>,
    /// Log at debug level.
    pub log: bool,
    /// The status document's path.
    pub status_path: Option<String>,
}

impl CompiledExplain {
    /// Whether every request needs its decision record (filter state or log).
    pub fn always(&self) -> bool {
        self.filter_state || self.log
    }
}

/// Validates and compiles `explain` at `path`; `None` when absent or nothing is on.
/// `taken` lists header names already in use (variant, cluster, route headers).
pub fn compile_explain(
    e: &Explain,
    path: &str,
    taken: &[&str],
    p: &mut Problems,
) -> Option<CompiledExplain> {
    let before = p.len();
    let trusted = crate::cidr::parse_list(&e.trusted_sources, &join(path, "trustedSources"), p);
    let ask = e
        .ask_header
        .clone()
        .unwrap_or_else(|| DEFAULT_ASK_HEADER.into());
    let name = e
        .decision_header
        .clone()
        .unwrap_or_else(|| DEFAULT_DECISION_HEADER.into());
    for (field, value) in [("askHeader", &ask), ("decisionHeader", &name)] {
        let at = join(path, field);
        if let Err(why) = check_header_name(value, false) {
            p.push(at, why);
        } else if taken.contains(&value.as_str()) {
            p.push(at, format!("{value:?} is already a routing header"));
        }
    }
    if ask == name {
        p.push(
            join(path, "decisionHeader"),
            format!("must differ from askHeader ({ask:?})"),
        );
    }
    let header = e.header.then_some((ask, name));
    if let Some(s) = &e.status_path {
        let at = join(path, "statusPath");
        if !s.starts_with('/') {
            p.push(at, format!("must start with '/', got {s:?}"));
        } else if s.len() > MAX_STATUS_PATH {
            p.push(at, format!("must be at most {MAX_STATUS_PATH} bytes"));
        } else if !s
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
        {
            p.push(
                at,
                format!("must be printable ASCII without '?' or '#', got {s:?}"),
            );
        }
    }
    let asks = header.is_some() || e.status_path.is_some();
    if asks && e.trusted_sources.is_empty() {
        p.push(
            join(path, "trustedSources"),
            "no caller can ask: set trustedSources for header and statusPath",
        );
    }
    let on = e.filter_state || e.log || asks;
    (p.len() == before && on).then(|| CompiledExplain {
        trusted,
        filter_state: e.filter_state,
        header,
        log: e.log,
        status_path: e.status_path.clone(),
    })
}

#[cfg(test)]
mod tests {
    use crate::load_json;

    fn problems(explain: &str) -> Vec<String> {
        let json = format!(r#"{{"schemaVersion":1,"explain":{explain}}}"#);
        match load_json(json.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(list) => list.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn defaults_fill_the_header_names_and_nothing_on_compiles_to_none() {
        let c = load_json(br#"{"schemaVersion":1,"explain":{"trustedSources":["10.0.0.0/8"],"header":true,"statusPath":"/.well-known/meshguard/status"}}"#).unwrap();
        let e = c.explain.unwrap();
        assert_eq!(
            e.header,
            Some(("x-meshguard-explain".into(), "x-meshguard-decision".into()))
        );
        assert!(!e.always());
        assert_eq!(
            e.status_path.as_deref(),
            Some("/.well-known/meshguard/status")
        );
        let c =
            load_json(br#"{"schemaVersion":1,"explain":{"trustedSources":["10.0.0.1"]}}"#).unwrap();
        assert_eq!(c.explain, None);
        let c = load_json(br#"{"schemaVersion":1,"explain":{"filterState":true}}"#).unwrap();
        assert!(c.explain.unwrap().always());
        let c = load_json(br#"{"schemaVersion":1,"explain":{"log":true}}"#).unwrap();
        assert!(c.explain.unwrap().always());
    }

    #[test]
    fn each_mistake_names_its_field() {
        for (explain, want) in [
            (
                r#"{"header":true}"#,
                "explain.trustedSources: no caller can ask",
            ),
            (
                r#"{"statusPath":"/s"}"#,
                "explain.trustedSources: no caller can ask",
            ),
            (
                r#"{"trustedSources":["10.0.0.0/33"],"filterState":true}"#,
                "explain.trustedSources[0]: \"10.0.0.0/33\": prefix length",
            ),
            (
                r#"{"trustedSources":["::1"],"statusPath":"status"}"#,
                "explain.statusPath: must start with '/'",
            ),
            (
                r#"{"trustedSources":["::1"],"statusPath":"/s?x=1"}"#,
                "explain.statusPath: must be printable ASCII",
            ),
            (
                r#"{"trustedSources":["::1"],"statusPath":"/a b"}"#,
                "explain.statusPath: must be printable ASCII",
            ),
            (
                r#"{"trustedSources":["::1"],"header":true,"askHeader":"X-Bad"}"#,
                "explain.askHeader:",
            ),
            (
                r#"{"trustedSources":["::1"],"header":true,"decisionHeader":"x-meshguard-variant"}"#,
                "explain.decisionHeader: \"x-meshguard-variant\" is already a routing header",
            ),
            (
                r#"{"trustedSources":["::1"],"header":true,"askHeader":"x-a","decisionHeader":"x-a"}"#,
                "explain.decisionHeader: must differ from askHeader",
            ),
            (
                r#"{"filterstate":true}"#,
                "explain.filterstate: unknown field `filterstate`",
            ),
        ] {
            let got = problems(explain);
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "{explain}: want {want:?}, got {got:?}"
            );
        }
        let long = format!(
            r#"{{"trustedSources":["::1"],"statusPath":"/{}"}}"#,
            "a".repeat(256)
        );
        assert!(problems(&long)
            .iter()
            .any(|g| g.starts_with("explain.statusPath: must be at most 256 bytes")));
        let longest = format!(
            r#"{{"trustedSources":["::1"],"statusPath":"/{}"}}"#,
            "a".repeat(255)
        );
        assert_eq!(problems(&longest), Vec::<String>::new());
    }
}
