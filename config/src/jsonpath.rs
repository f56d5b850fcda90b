//! The field path of a JSON parse error, from the document and the error's
//! position.
//!
//! serde_json reports where a shape error happened (line and column) but not in
//! which field. `serde_path_to_error` tracks the path while deserialising, at the
//! price of a wrapper around every field's deserialiser: in the Wasm filter that was
//! 180 KB of code, for an error path shown once per bad config. This walks the text
//! instead, up to the error's byte, keeping the open objects' current keys and the
//! open arrays' indices: the same `routes[0].match.pathPrefix` form, at no cost when
//! the config is valid.

/// One open container at the error position.
enum Frame {
    /// An object: the key of the member being read, if any.
    Object { key: Option<String>, want_key: bool },
    /// An array: the index of the element being read.
    Array { index: usize },
}

/// The byte offset of 1-based `line` and 1-based `column` (serde_json's numbering;
/// column 0 means before the line's first byte).
fn offset_of(text: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match text
            .get(start..)
            .and_then(|t| t.iter().position(|b| *b == b'\n'))
        {
            Some(nl) => start += nl + 1,
            None => return text.len(),
        }
    }
    (start + column.saturating_sub(1)).min(text.len())
}

/// Reads a JSON string starting at `at` (its opening quote); returns its raw
/// contents (escapes kept, except `\"` and `\\`) and the index after its closing
/// quote.
fn string_at(text: &[u8], at: usize) -> (String, usize) {
    let mut out = Vec::new();
    let mut i = at + 1;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => return (String::from_utf8_lossy(&out).into_owned(), i + 1),
            b'\\' => {
                match text.get(i + 1) {
                    Some(&e @ (b'"' | b'\\')) => out.push(e),
                    Some(&e) => out.extend_from_slice(&[b'\\', e]),
                    None => {}
                }
                i += 2;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), text.len())
}

/// The path (`a.b[2].c`, empty at the top) of the value being read at byte `end`.
pub fn path_at(text: &[u8], line: usize, column: usize) -> String {
    let end = offset_of(text, line, column);
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i <= end {
        let Some(&b) = text.get(i) else { break };
        match b {
            b'{' => stack.push(Frame::Object {
                key: None,
                want_key: true,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array { index }) => *index += 1,
                Some(Frame::Object { key, want_key }) => {
                    *key = None;
                    *want_key = true;
                }
                None => {}
            },
            b'"' => {
                let (s, next) = string_at(text, i);
                if let Some(Frame::Object { key, want_key }) = stack.last_mut() {
                    if *want_key {
                        *key = Some(s);
                        *want_key = false;
                    }
                }
                i = next;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    for f in &stack {
        match f {
            Frame::Object { key: Some(k), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::path_at;

    fn at(text: &str, needle: &str) -> String {
        let i = text.find(needle).unwrap();
        let line = text[..i].matches('\n').count() + 1;
        let col = i - text[..i].rfind('\n').map_or(0, |n| n + 1) + 1;
        path_at(text.as_bytes(), line, col)
    }

    #[test]
    fn names_keys_and_indices_open_at_the_position() {
        let doc =
            r#"{"routes": [{"name": "a"}, {"name": "b", "match": {"pathPrefix": 7}}], "x": 1}"#;
        assert_eq!(at(doc, "7"), "routes[1].match.pathPrefix");
        assert_eq!(at(doc, r#""a""#), "routes[0].name");
        assert_eq!(at(doc, "1}"), "x");
        let lines = "{\n  \"a\": [\n    1,\n    {\"b\": \"q\\\"]\", \"c\": true}\n  ]\n}";
        assert_eq!(at(lines, "true"), "a[1].c");
        assert_eq!(path_at(b"", 1, 1), "");
        assert_eq!(path_at(b"{\"a\": [", 9, 9), "a[0]");
    }

    /// After a string the walk resumes past its closing quote: the brackets and
    /// braces that follow count, and a string's own brackets do not.
    #[test]
    fn strings_are_stepped_over_whole() {
        let doc = r#"{"a": "x", "b": [1, {"c": 5}], "d": "[{", "e": 6}"#;
        assert_eq!(at(doc, "5"), "b[1].c");
        assert_eq!(at(doc, "6"), "e");
        let escaped = r#"{"k\"": {"m\\": [true]}}"#;
        assert_eq!(at(escaped, "true"), r#"k".m\[0]"#);
    }

    /// The walk names the same path as `serde_path_to_error` (which the native CLI
    /// still links for YAML) for every kind of shape error.
    #[cfg(feature = "cli")]
    #[test]
    fn agrees_with_serde_path_to_error() {
        let docs = [
            r#"{"schemaVersion":"1"}"#,
            r#"{"schemaVersion":1,"bogus":true}"#,
            r#"{"schemaVersion":1,"routes":[{"name":"a"},{"name":"b","match":{"pathPrefix":5}}]}"#,
            r#"{"schemaVersion":1,"routes":[{"name":"a","mtch":{}}]}"#,
            r#"{"schemaVersion":1,"routes":[{}]}"#,
            r#"{"schemaVersion":1,"routes":{"name":"a"}}"#,
            r#"{"schemaVersion":1,"routingHeaders":"none"}"#,
            r#"{"schemaVersion":1,"clientAddress":{}}"#,
            r#"{"schemaVersion":1,"metrics":{"counters":"later","unmatched":"count"}}"#,
            r#"{"schemaVersion":1,"rateLimits":[{"name":"a","key":[{"header":"x"},{"clientAddress":{"v4":"24"}}]}]}"#,
            r#"{"schemaVersion":1,"routes":[{"name":"a","canary":{"variants":[{"name":"s","weight":-1}]}}]}"#,
            r#"{"schemaVersion":1,"routes":[{"name":"a\"b","canary":{"variants":[{"name":"s","weight":1.5}]}}]}"#,
            "{\n  \"schemaVersion\": 1,\n  \"routes\": [\n    {\"name\": \"a\", \"breaker\": {\"minimumCalls\": \"x\"}}\n  ]\n}",
        ];
        for doc in docs {
            let de = &mut serde_json::Deserializer::from_str(doc);
            let want = match serde_path_to_error::deserialize::<_, crate::raw::Config>(de) {
                Ok(_) => panic!("{doc} parsed"),
                Err(e) => e.path().to_string(),
            };
            let e = serde_json::from_str::<crate::raw::Config>(doc).unwrap_err();
            let got = path_at(doc.as_bytes(), e.line(), e.column());
            let want = if want == "." { String::new() } else { want };
            assert_eq!(got, want, "{doc}");
        }
    }
}
