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
    meshguard schema             print the JSON Schema of the config
    meshguard help               this text

Exit status: 0 when every file is valid, 1 when any has a problem, 2 on usage errors.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("validate") if args.len() > 1 => validate_files(args.get(1..).unwrap_or_default()),
        Some("schema") if args.len() == 1 => print_schema(),
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

fn check_file(file: &str) -> Vec<Problem> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            return vec![Problem {
                path: meshguard_config::ROOT_PATH.into(),
                reason: format!("cannot read file: {e}"),
            }]
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
    match raw {
        Err(p) => vec![p],
        Ok(raw) => validate(&raw).err().unwrap_or_default(),
    }
}

fn validate_files(files: &[String]) -> ExitCode {
    let mut failed = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for file in files {
        let problems = check_file(file);
        failed |= !problems.is_empty();
        for p in problems {
            // A closed stdout must not panic the CLI; the exit code still tells.
            let _ = writeln!(out, "{file}: {p}");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_schema() -> ExitCode {
    let schema = schemars::schema_for!(meshguard_config::Config);
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
