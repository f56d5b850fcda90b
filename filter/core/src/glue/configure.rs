//! `on_configure`: parse, validate and compile the whole config, or refuse it.

use std::rc::Rc;

use meshguard_config::{load_json, Problem};

use super::plugin::{build, Plugin};
use super::tick;
use super::worker::Worker;

use crate::host::{Configuration, Level};

/// Loads the plugin configuration. On any problem, logs one line per problem (the
/// same `path: reason` text as `meshguard validate`) and returns `None`, so the
/// root context returns `false` and Envoy rejects the config instead of running
/// part of it.
pub fn configure(host: &impl Configuration, worker: Rc<Worker>) -> Option<Rc<Plugin>> {
    let bytes = match host.plugin_configuration() {
        Ok(b) => b.unwrap_or_default(),
        Err(e) => {
            host.log(
                Level::Error,
                &format!("meshguard: cannot read the plugin configuration: {e}"),
            );
            return None;
        }
    };
    match load_json(&bytes) {
        Ok(c) => {
            let routes = c.routes.len();
            match build(host, c, worker) {
                Ok(plugin) => {
                    // Rollouts route by their shared state from the first request
                    // (a verdict reached before this config or VM survives).
                    tick::run(host, &plugin);
                    host.log(
                        Level::Info,
                        &format!("meshguard: configuration loaded: {routes} route(s)"),
                    );
                    Some(Rc::new(plugin))
                }
                Err(e) => {
                    host.log(
                        Level::Error,
                        &format!("meshguard: cannot set up metrics or state: {e}"),
                    );
                    None
                }
            }
        }
        Err(problems) => {
            for p in &problems {
                host.log(
                    Level::Error,
                    &format!("meshguard: invalid configuration: {p}"),
                );
            }
            host.log(Level::Error, &rejected_summary(&problems));
            None
        }
    }
}

fn rejected_summary(problems: &[Problem]) -> String {
    format!(
        "meshguard: configuration rejected ({} problem(s)); Envoy refuses it (a bootstrap fails to start, an xDS update is rejected)",
        problems.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    #[test]
    fn valid_config_compiles() {
        let host = FakeHost::new().with_config(r#"{"schemaVersion":1,"routes":[{"name":"web"}]}"#);
        let c = configure(&host, Rc::default()).unwrap();
        assert_eq!(c.runtime.routes[0].route.name, "web");
        assert_eq!(c.runtime.store_prefix, "mg1.meshguard");
    }

    #[test]
    fn invalid_config_logs_each_problem_and_is_refused() {
        let host = FakeHost::new().with_config(
            r#"{"schemaVersion":1,"routes":[{"name":""},{"name":"b","match":{"pathPrefix":"b"}}]}"#,
        );
        assert!(configure(&host, Rc::default()).is_none());
        let logs = host.logs.borrow();
        let errors: Vec<&str> = logs
            .iter()
            .filter(|(l, _)| *l == Level::Error)
            .map(|(_, m)| m.as_str())
            .collect();
        assert_eq!(
            errors,
            vec![
                "meshguard: invalid configuration: routes[0].name: must not be empty",
                "meshguard: invalid configuration: routes[1].match.pathPrefix: must start with '/'",
                "meshguard: configuration rejected (2 problem(s)); Envoy refuses it (a bootstrap fails to start, an xDS update is rejected)",
            ]
        );
    }

    #[test]
    fn missing_config_is_refused_with_a_reason() {
        let host = FakeHost::new();
        assert!(configure(&host, Rc::default()).is_none());
        assert!(host.logs.borrow()[0]
            .1
            .contains("(root): configuration is empty"));
    }
}
