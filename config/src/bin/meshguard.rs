//! `meshguard`: check a plugin config before it ships, and print its JSON Schema.
//!
//! `meshguard validate FILE...` runs exactly the parse + validate + compile that
//! the filter runs in `on_configure`, so "valid here" means "Envoy accepts it".

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use meshguard_config::{parse_json, parse_yaml, validate::validate, Problem};

const USAGE: &str = "\
meshguard — validate and inspect meshguard plugin configs

USAGE:
    meshguard validate FILE...   check configs (.json, .yaml, .yml); one line per problem
    meshguard render --target envoy|istio|envoy-gateway [OPTIONS] FILE
                                 print deployment manifests with the config embedded
    meshguard schema [config|decision|status]
                                 print a JSON Schema (default: the config's)
    meshguard status [--json] URL
                                 fetch a live status document (explain.statusPath)
                                 and print it as tables, or as JSON with --json
    meshguard help               this text

RENDER OPTIONS:
    --image oci://HOST/REPO:TAG  plugin image (Istio, Envoy Gateway)
    --sha256 HEX                 pin the image digest (64 hex digits)
    --name NAME                  resource name (default meshguard)
    --namespace NS               namespace (default default)
    --native                     meshguard native (libmeshguard.so, an Envoy 1.40 dynamic module)
                                 instead of the Wasm filter (envoy, envoy-gateway)
    --module-file PATH           where the gateway's proxy has libmeshguard.so
                                 (envoy-gateway --native; default /usr/lib/envoy/libmeshguard.so)
    --selector KEY=VALUE         Istio workload selector (default: the whole namespace)
    --gateway NAME               Envoy Gateway Gateway to attach to (default eg)
    --wasm-file PATH             wasm path for plain Envoy (default /etc/envoy/meshguard.wasm)
    --fleet-address HOST:PORT    the fleet service for a config with fleetService (default
                                 meshguard-rls.meshguard.svc.cluster.local:8081)

Docs: docs/src/cli.md (this command), docs/src/configuration.md (every field);
each problem validate prints is followed, on stderr, by the page that explains it.

Exit status: 0 when every file is valid (status: fetched), 1 when any has a
problem (status: unreachable or not a status document), 2 on usage errors.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("validate") if args.len() > 1 => validate_files(args.get(1..).unwrap_or_default()),
        Some("schema") if args.len() <= 2 => print_schema(args.get(1).map(String::as_str)),
        Some("status") => status(args.get(1..).unwrap_or_default()),
        Some("render") => render(args.get(1..).unwrap_or_default()),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Parses and validates a file; the raw config when valid, else every problem.
fn load_file(file: &str) -> Result<meshguard_config::Config, Vec<Problem>> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            return Err(vec![Problem {
                path: meshguard_config::ROOT_PATH.into(),
                reason: format!("cannot read file: {e}"),
            }])
        }
    };
    let is_yaml = matches!(
        Path::new(file).extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let raw = if is_yaml {
        parse_yaml(&bytes)
    } else {
        parse_json(&bytes)
    };
    let raw = raw.map_err(|p| vec![p])?;
    validate(&raw)?;
    Ok(raw)
}

fn check_file(file: &str) -> Vec<Problem> {
    load_file(file).err().unwrap_or_default()
}

fn render(args: &[String]) -> ExitCode {
    use meshguard_config::render::{check_sha256, render, Options, Target};
    let mut o = Options::default();
    let mut target = None;
    let mut file = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let r: Result<(), String> = match a.as_str() {
            "--target" => value("--target").and_then(|v| {
                Target::parse(&v).map(|t| target = Some(t)).ok_or(format!(
                    "unknown target {v:?}: use envoy, istio or envoy-gateway"
                ))
            }),
            "--image" => value("--image").and_then(|v| {
                if v.starts_with("oci://")
                    || v.starts_with("https://")
                    || v.starts_with("http://")
                    || v.starts_with("file://")
                {
                    o.image = v;
                    Ok(())
                } else {
                    Err(format!(
                        "--image must start with oci://, https://, http:// or file://, got {v:?}"
                    ))
                }
            }),
            "--sha256" => {
                value("--sha256").and_then(|v| check_sha256(&v).map(|()| o.sha256 = Some(v)))
            }
            "--name" => value("--name").map(|v| o.name = v),
            "--namespace" => value("--namespace").map(|v| o.namespace = v),
            "--gateway" => value("--gateway").map(|v| o.gateway = v),
            "--wasm-file" => value("--wasm-file").map(|v| o.wasm_file = v),
            "--native" => {
                o.native = true;
                Ok(())
            }
            "--module-file" => value("--module-file").map(|v| o.module_file = v),
            "--fleet-address" => value("--fleet-address").and_then(|v| {
                match v.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
                    Some((h, Ok(_))) if !h.is_empty() => {
                        o.fleet_address = v;
                        Ok(())
                    }
                    _ => Err(format!("--fleet-address must be HOST:PORT, got {v:?}")),
                }
            }),
            "--selector" => value("--selector").and_then(|v| match v.split_once('=') {
                Some((k, val)) if !k.is_empty() => {
                    o.selector = Some((k.to_string(), val.to_string()));
                    Ok(())
                }
                _ => Err(format!("--selector must be KEY=VALUE, got {v:?}")),
            }),
            f if !f.starts_with("--") && file.is_none() => {
                file = Some(f.to_string());
                Ok(())
            }
            other => Err(format!("unexpected argument {other:?}")),
        };
        if let Err(e) = r {
            eprintln!("meshguard render: {e}");
            return ExitCode::from(2);
        }
    }
    let (Some(t), Some(file)) = (target, file) else {
        eprintln!("meshguard render: needs --target and a config FILE\n\n{USAGE}");
        return ExitCode::from(2);
    };
    o.target = t;
    if o.native && t == Target::Istio {
        eprintln!("meshguard render: --native: Istio's WasmPlugin loads Wasm only; use --target envoy or envoy-gateway");
        return ExitCode::from(2);
    }
    let raw = match load_file(&file) {
        Ok(raw) => raw,
        Err(problems) => {
            // Same lines as `validate`; nothing goes to stdout.
            for p in problems {
                println!("{file}: {p}");
            }
            return ExitCode::FAILURE;
        }
    };
    let config = match serde_json::to_value(&raw) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("meshguard render: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = String::new();
    for (comment, doc) in render(&config, &o) {
        let yaml = match serde_yaml_ng::to_string(&doc) {
            Ok(y) => y,
            Err(e) => {
                eprintln!("meshguard render: {e}");
                return ExitCode::FAILURE;
            }
        };
        out.push_str("---\n");
        for line in comment.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&yaml);
    }
    print!("{out}");
    ExitCode::SUCCESS
}

fn validate_files(files: &[String]) -> ExitCode {
    let mut failed = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut pages: Vec<&'static str> = Vec::new();
    for file in files {
        let problems = check_file(file);
        failed |= !problems.is_empty();
        for p in problems {
            // A closed stdout must not panic the CLI; the exit code still tells.
            let _ = writeln!(out, "{file}: {p}");
            let page = meshguard_config::docs::page_of(&p.path);
            if !pages.contains(&page) {
                pages.push(page);
            }
        }
    }
    // Where each problem's field is explained (stderr: stdout keeps one line
    // per problem).
    for page in pages {
        eprintln!("meshguard: see {page}");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_schema(which: Option<&str>) -> ExitCode {
    use meshguard_config::report::{decision_schema, status_schema};
    let schema = match which {
        None | Some("config") => schemars::schema_for!(meshguard_config::Config),
        Some("decision") => decision_schema(),
        Some("status") => status_schema(),
        Some(other) => {
            eprintln!(
                "meshguard schema: unknown document {other:?}: use config, decision or status"
            );
            return ExitCode::from(2);
        }
    };
    match serde_json::to_string_pretty(&schema) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshguard: cannot render the schema: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `meshguard status [--json] URL`: GET the status document and print it.
fn status(args: &[String]) -> ExitCode {
    let json = args.iter().any(|a| a == "--json");
    let urls: Vec<&String> = args.iter().filter(|a| *a != "--json").collect();
    let [url] = urls.as_slice() else {
        eprintln!("meshguard status: needs one URL, e.g. http://127.0.0.1:10000/.well-known/meshguard/status\n\n{USAGE}");
        return ExitCode::from(2);
    };
    if !url.starts_with("http://") {
        eprintln!("meshguard status: the URL must start with http://, got {url:?}");
        return ExitCode::from(2);
    }
    let body = match fetch(url) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("meshguard status: {url}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let doc: meshguard_config::report::Status = match serde_json::from_str(&body) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "meshguard status: {url} did not answer a status document ({e}); is the caller in explain.trustedSources?"
            );
            return ExitCode::FAILURE;
        }
    };
    if json {
        let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        match serde_json::to_string_pretty(&value) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("meshguard status: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", meshguard_config::report::render_table(&doc));
    }
    ExitCode::SUCCESS
}

fn fetch(url: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP {status}: {}", body.trim()));
    }
    Ok(body)
}
