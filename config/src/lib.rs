//! meshguard's plugin configuration.
//!
//! Three stages:
//!
//! 1. **parse**: [`parse_json`] / [`parse_yaml`] into the [`raw`] serde types, which
//!    reject unknown fields (a syntax or shape error stops here, with its path);
//! 2. **validate and compile**, one walk: [`validate`] checks the document and hands
//!    each part to the module that owns it ([`route`], [`ratelimit`], and per route
//!    [`canary`] and [`breaker`]; request conditions through [`matcher`]). Each
//!    records every problem with its field path ([`problem`]) and builds its
//!    compiled form when the part is valid;
//! 3. the result, [`compiled::CompiledConfig`]: what the request path uses.
//!
//! The filter runs [`load_json`] in `on_configure`; the `meshguard` CLI runs the
//! same code natively, so a config that passes `meshguard validate` is one Envoy
//! accepts. [`telemetry`] and [`render`] (CLI) describe what deployments need.
//!
//! The modules import one way, upwards: [`raw`] imports no other module; the
//! module of each part ([`route`], [`canary`], [`breaker`], [`ratelimit`],
//! [`fleet`], [`explain`], [`tuning`], ...) imports it and the small helpers
//! ([`problem`], [`names`], [`grpc`], [`status`]); [`compiled`] gathers their
//! compiled forms; [`reads`] and [`validate`] work on the whole; this root runs
//! them. [`rollout`] alone stands above the root: it names a canary policy's
//! rollout for other crates and reads fleet specs back with [`load_json`].

pub mod breaker;
pub mod canary;
pub mod cidr;
pub mod compiled;
#[cfg(feature = "cli")]
pub mod docs;
pub mod explain;
pub mod fingerprint;
pub mod fleet;
pub mod grpc;
mod jsonpath;
pub mod matcher;
pub mod names;
pub mod problem;
pub mod ratelimit;
pub mod raw;
pub mod reads;
#[cfg(feature = "cli")]
pub mod render;
pub mod report;
pub mod rollout;
pub mod route;
pub mod status;
pub mod telemetry;
pub mod tuning;
pub mod validate;

pub use compiled::CompiledConfig;
pub use problem::Problem;
pub use raw::Config;

/// Path shown for problems that concern the whole document.
pub const ROOT_PATH: &str = "(root)";

/// Parses JSON into the raw config; a syntax or shape error names its path.
pub fn parse_json(bytes: &[u8]) -> Result<Config, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem {
            path: ROOT_PATH.into(),
            reason: "configuration is empty; expected a JSON object with \"schemaVersion\": 1"
                .into(),
        });
    }
    serde_json::from_slice(bytes).map_err(|e: serde_json::Error| {
        let (line, column) = (e.line(), e.column());
        let mut reason = strip_position(&e.to_string());
        // `from_slice` gives every error a position (line from 1; serde_json
        // fixes custom errors up to the reader's place), so `line >= 0` here is
        // an equivalent mutant: the guard only keeps a "line 0" out if that ever changes.
        if line > 0 {
            reason = format!("{reason} (line {line}, column {column})");
        }
        // A syntax error has no field; a shape error is in the value being read.
        let path = if e.is_syntax() || e.is_eof() {
            String::new()
        } else {
            jsonpath::path_at(bytes, line, column)
        };
        Problem {
            path: display_path(&path),
            reason,
        }
    })
}

/// Parses YAML into the raw config (CLI only; Envoy and Istio hand the plugin JSON).
#[cfg(feature = "cli")]
pub fn parse_yaml(bytes: &[u8]) -> Result<Config, Problem> {
    let de = serde_yaml_ng::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let text = strip_position(&e.inner().to_string());
        // serde_yaml_ng starts its message with the parent's path ("routes[0]: ...").
        let text = match text.split_once(": ") {
            Some((head, rest)) if !head.contains(' ') => rest.to_string(),
            _ => text,
        };
        let reason = match e.inner().location() {
            Some(at) => format!("{text} (line {}, column {})", at.line(), at.column()),
            None => text,
        };
        Problem {
            path: display_path(&e.path().to_string()),
            reason,
        }
    })
}

/// Parses, validates and compiles a JSON config: what `on_configure` does.
pub fn load_json(bytes: &[u8]) -> Result<CompiledConfig, Vec<Problem>> {
    let raw = parse_json(bytes).map_err(|p| vec![p])?;
    let mut config = validate::validate(&raw)?;
    config.revision = fingerprint::fingerprint_bytes(&[bytes]);
    Ok(config)
}

fn display_path(p: &str) -> String {
    if p.is_empty() || p == "." || p == "?" {
        ROOT_PATH.into()
    } else {
        p.into()
    }
}

/// serde_json appends " at line L column C"; we report the position separately.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg.get(..i).unwrap_or(msg).to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties;
