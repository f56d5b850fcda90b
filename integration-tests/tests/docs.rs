//! The docs cannot drift from the code: every meshguard config block in the book
//! (`docs/src`) and the README is checked by the CLI (a block marked `invalid`
//! must fail with the lines it shows, each as a `# expect: ` comment; a block
//! marked with another owner, `yaml envoy`, is someone else's config), every
//! metric the docs name is one the filter defines and every one it defines is
//! documented, every internal link resolves, and the book builds without a
//! warning.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use meshguard_integration_tests::{repo_root, METRIC_FAMILIES};

/// The README and every page of the book.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("docs/src"))
        .expect("docs/src")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.push(repo_root().join("README.md"));
    docs
}

/// A fenced code block: its info string, its text, and the line it starts on.
struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, l) in text.lines().enumerate() {
        if let Some(rest) = l.strip_prefix("```") {
            match open.take() {
                Some(b) => out.push(b),
                None => {
                    open = Some(Block {
                        info: rest.trim().to_string(),
                        text: String::new(),
                        line: i + 1,
                    })
                }
            }
        } else if let Some(b) = open.as_mut() {
            b.text.push_str(l);
            b.text.push('\n');
        }
    }
    out
}

fn cli() -> PathBuf {
    let p = repo_root().join("target/release/meshguard");
    assert!(p.exists(), "{} missing: run `make build`", p.display());
    p
}

/// The config's top-level fields, from the CLI's own JSON Schema.
fn config_fields() -> BTreeSet<String> {
    let out = Command::new(cli())
        .arg("schema")
        .output()
        .expect("meshguard schema");
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("schema JSON");
    schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect()
}

/// What became of one block.
#[derive(Debug, PartialEq)]
enum Checked {
    /// Not a meshguard config (someone else's, or not a mapping of its fields).
    Skipped,
    /// A meshguard config the CLI treats as the block says.
    Good,
    /// A meshguard config the CLI does not treat as the block says.
    Bad(String),
}

/// Checks one block.
fn check(block: &Block, fields: &BTreeSet<String>, dir: &Path, n: usize) -> Checked {
    match check_config(block, fields, dir, n) {
        None if is_config(block, fields) => Checked::Good,
        None => Checked::Skipped,
        Some(problem) => Checked::Bad(problem),
    }
}

/// Whether a block is a meshguard config (its owner unsaid, its top-level
/// keys all the config's fields).
fn is_config(block: &Block, fields: &BTreeSet<String>) -> bool {
    let owner = block.info.split([',', ' ']).nth(1);
    if owner.is_some_and(|o| o != "invalid") {
        return false;
    }
    let Ok(doc) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&block.text) else {
        return false;
    };
    doc.as_mapping().is_some_and(|map| {
        !map.is_empty()
            && map
                .keys()
                .all(|k| k.as_str().is_some_and(|k| fields.contains(k)))
    })
}

/// `Some(problem)` when `block` is a config block the CLI does not treat as
/// the block says.
fn check_config(block: &Block, fields: &BTreeSet<String>, dir: &Path, n: usize) -> Option<String> {
    // `yaml envoy` (or any other owner): someone else's config that happens to
    // share a field name (Envoy's `routes`).
    if !is_config(block, fields) {
        return None;
    }
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&block.text).ok()?;
    let keys: Vec<String> = doc
        .as_mapping()?
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    let mut text = block.text.clone();
    if !keys.iter().any(|k| k == "schemaVersion") {
        text = if block.info.starts_with("json") {
            format!(
                "{{\"schemaVersion\": 1, {}",
                text.trim_start().trim_start_matches('{')
            )
        } else {
            format!("schemaVersion: 1\n{text}")
        };
    }
    let ext = if block.info.starts_with("json") {
        "json"
    } else {
        "yaml"
    };
    let path = dir.join(format!("block{n}.{ext}"));
    std::fs::write(&path, &text).expect("write block");
    let out = Command::new(cli())
        .arg("validate")
        .arg(&path)
        .output()
        .expect("meshguard validate");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let invalid = block.info.split([',', ' ']).any(|w| w == "invalid");
    if invalid {
        let expected: Vec<&str> = block
            .text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("# expect: "))
            .collect();
        if out.status.success() || expected.is_empty() {
            return Some(format!("marked invalid, but: {said}"));
        }
        for e in expected {
            if !said.contains(e) {
                return Some(format!("marked invalid, the CLI did not say {e:?}: {said}"));
            }
        }
        None
    } else if out.status.success() {
        None
    } else {
        Some(said)
    }
}

#[test]
fn every_config_block_in_the_docs_is_valid_or_fails_as_it_shows() {
    let fields = config_fields();
    let dir = tempfile::tempdir().unwrap();
    let (mut seen, mut configs) = (0, 0);
    let mut problems = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for b in blocks(&text) {
            if !(b.info.starts_with("yaml") || b.info.starts_with("json")) {
                continue;
            }
            seen += 1;
            match check(&b, &fields, dir.path(), seen) {
                Checked::Skipped => {}
                Checked::Good => configs += 1,
                Checked::Bad(p) => problems.push(format!("{}:{}: {p}", doc.display(), b.line)),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!("{configs} config blocks checked of {seen} YAML/JSON blocks");
    assert!(configs >= 9, "only {configs} config blocks of {seen}");
}

/// Every property name anywhere in a JSON Schema.
fn schema_fields(schema: &serde_json::Value, out: &mut BTreeSet<String>) {
    match schema {
        serde_json::Value::Object(o) => {
            if let Some(props) = o.get("properties").and_then(|p| p.as_object()) {
                out.extend(props.keys().cloned());
            }
            o.values().for_each(|v| schema_fields(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| schema_fields(v, out)),
        _ => {}
    }
}

#[test]
fn every_field_of_the_config_schema_is_described_in_the_book() {
    let out = Command::new(cli())
        .arg("schema")
        .output()
        .expect("meshguard schema");
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("schema JSON");
    let mut fields = BTreeSet::new();
    schema_fields(&schema, &mut fields);
    assert!(fields.len() > 100, "{} fields", fields.len());
    // A field is described where the book names it in code: `name`, a path
    // such as `canary.fleet.whileUnreachable`, or an example block.
    let words = |text: &str, out: &mut BTreeSet<String>| {
        out.extend(
            text.split(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                .map(str::to_string),
        );
    };
    let inline = regex::Regex::new(r"`([^`\n]+)`").unwrap();
    let mut in_code = BTreeSet::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let mut prose = String::new();
        for b in blocks(&text) {
            words(&b.text, &mut in_code);
        }
        let mut fence = false;
        for l in text.lines() {
            if l.starts_with("```") {
                fence = !fence;
            } else if !fence {
                prose.push_str(l);
                prose.push('\n');
            }
        }
        for c in inline.captures_iter(&prose) {
            words(&c[1], &mut in_code);
        }
    }
    let missing: Vec<_> = fields.difference(&in_code).collect();
    assert!(
        missing.is_empty(),
        "config fields the book never names: {missing:?}"
    );
}

/// Metric names (`meshguard_…`) a text uses, histogram suffixes folded.
fn metrics_named(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bmeshguard_[a-z_]+\b").unwrap();
    const CRATES: [&str; 5] = [
        "meshguard_engine",
        "meshguard_config",
        "meshguard_rls_proto",
        "meshguard_integration_tests",
        "meshguard_native",
    ];
    re.find_iter(text)
        .map(|m| m.as_str())
        .filter(|m| !CRATES.contains(m))
        .map(|m| {
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| m.strip_suffix(s))
                .unwrap_or(m)
                .to_string()
        })
        .collect()
}

#[test]
fn every_metric_the_docs_name_exists_and_every_metric_is_documented() {
    let families: BTreeSet<String> = METRIC_FAMILIES.iter().map(|s| s.to_string()).collect();
    let mut named = BTreeSet::new();
    for doc in documents() {
        named.extend(metrics_named(&std::fs::read_to_string(&doc).unwrap()));
    }
    let unknown: Vec<_> = named.difference(&families).collect();
    assert!(
        unknown.is_empty(),
        "the docs name metrics the filter does not define: {unknown:?}"
    );
    let metrics_page = std::fs::read_to_string(repo_root().join("docs/src/metrics.md")).unwrap();
    let missing: Vec<_> = families
        .iter()
        .filter(|f| !metrics_page.contains(&format!("`{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics the metrics page does not document: {missing:?}"
    );
}

/// The anchor a heading gets (as mdBook and GitHub make them for these headings).
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(c)
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fence = false;
    for l in text.lines() {
        if l.starts_with("```") {
            fence = !fence;
        }
        if !fence && l.starts_with('#') {
            let h = l.trim_start_matches('#');
            if h.starts_with(' ') {
                let base = slug(h);
                let mut s = base.clone();
                let mut k = 0;
                while out.contains(&s) {
                    k += 1;
                    s = format!("{base}-{k}");
                }
                out.insert(s);
            }
        }
    }
    out
}

/// Every relative link of `text` (in `file`) that does not resolve.
fn broken_links(file: &Path, text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\[[^\]]*\]\(([^)\s]+)\)").unwrap();
    let dir = file.parent().unwrap();
    let mut out = Vec::new();
    let mut fence = false;
    for l in text.lines() {
        if l.starts_with("```") {
            fence = !fence;
        }
        if fence {
            continue;
        }
        for c in re.captures_iter(l) {
            let target = &c[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, frag) = target.split_once('#').unwrap_or((target, ""));
            let resolved = if path.is_empty() {
                file.to_path_buf()
            } else {
                dir.join(path)
            };
            if !resolved.exists() {
                out.push(format!("{}: {target}: no such file", file.display()));
                continue;
            }
            if !frag.is_empty() && resolved.extension().is_some_and(|e| e == "md") {
                let page = std::fs::read_to_string(&resolved).unwrap();
                if !anchors(&page).contains(frag) {
                    out.push(format!("{}: {target}: no such heading", file.display()));
                }
            }
        }
    }
    out
}

#[test]
fn every_internal_link_resolves() {
    let mut broken = Vec::new();
    for doc in documents() {
        broken.extend(broken_links(&doc, &std::fs::read_to_string(&doc).unwrap()));
    }
    // The alert rules' runbook links point into the book too.
    let alerts =
        std::fs::read_to_string(repo_root().join("envoy/observability/alerts.yml")).unwrap();
    let re = regex::Regex::new(r#"runbook: "([^"]+)""#).unwrap();
    let mut runbooks = 0;
    for c in re.captures_iter(&alerts) {
        runbooks += 1;
        let link = format!("[runbook]({})", &c[1]);
        broken.extend(broken_links(&repo_root().join("README.md"), &link));
    }
    assert!(runbooks >= 8, "{runbooks} runbook links");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn a_broken_link_a_bad_block_and_an_unknown_metric_are_each_caught() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.md");
    let text = "# Page\n\n[ok](#page) [gone](#nowhere) [missing](nothing.md)\n";
    std::fs::write(&page, text).unwrap();
    assert_eq!(broken_links(&page, text).len(), 2);
    let fields = config_fields();
    let bad = Block {
        info: "yaml".into(),
        text: "routes:\n  - name: \"\"\n".into(),
        line: 1,
    };
    assert!(
        matches!(check(&bad, &fields, dir.path(), 1), Checked::Bad(_)),
        "an invalid config block fails"
    );
    let shown = Block {
        info: "yaml invalid".into(),
        text: "routes:\n  - name: web\n    match: { methods: [] }\n# expect: routes[0].match.methods: must list at least one method\n".into(),
        line: 1,
    };
    assert_eq!(
        check(&shown, &fields, dir.path(), 2),
        Checked::Good,
        "fails as it shows"
    );
    let wrong = Block {
        info: "yaml invalid".into(),
        text: "routes:\n  - name: web\n# expect: something else\n".into(),
        line: 1,
    };
    assert!(
        matches!(check(&wrong, &fields, dir.path(), 3), Checked::Bad(_)),
        "a valid block marked invalid"
    );
    let envoy = Block {
        info: "yaml".into(),
        text: "static_resources:\n  clusters: []\n".into(),
        line: 1,
    };
    assert_eq!(
        check(&envoy, &fields, dir.path(), 4),
        Checked::Skipped,
        "not a config"
    );
    let owned = Block {
        info: "yaml envoy".into(),
        text: "routes:\n  - match: { prefix: / }\n".into(),
        line: 1,
    };
    assert_eq!(
        check(&owned, &fields, dir.path(), 5),
        Checked::Skipped,
        "Envoy's routes"
    );
    let named = metrics_named(
        "`meshguard_requests_total` and `meshguard_made_up_total`, meshguard_engine::x",
    );
    assert!(named.contains("meshguard_made_up_total") && !named.contains("meshguard_engine"));
}

#[test]
fn the_book_builds_without_a_warning() {
    let mdbook = std::env::var("MDBOOK_BIN").unwrap_or_else(|_| "mdbook".into());
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(&mdbook)
        .arg("build")
        .arg(repo_root().join("docs"))
        .arg("--dest-dir")
        .arg(out_dir.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {mdbook}: {e} (run `make setup`)"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains("WARN") && !said.contains("ERROR"),
        "mdbook warned:\n{said}"
    );
    assert!(out_dir.path().join("fleet.html").exists());
}
