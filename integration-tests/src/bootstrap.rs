//! Envoy bootstrap for one test, built as JSON (Envoy reads `.json` bootstraps),
//! so the plugin config is embedded without any YAML quoting questions.
//!
//! Everything binds 127.0.0.1 port 0; [`crate::envoy::Envoy`] reads the real
//! ports back from the admin API.

use std::net::SocketAddr;

use serde_json::{json, Value};

/// What a test's Envoy looks like.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// meshguard's plugin configuration (JSON text).
    pub plugin_config: String,
    /// Upstream clusters: name and address.
    pub clusters: Vec<(String, SocketAddr)>,
    /// HTTP/2 (gRPC) clusters, such as a rate limit service: name and addresses.
    pub grpc_clusters: Vec<(String, Vec<SocketAddr>)>,
    /// Envoy's node id (the name a fleet service logs), if set.
    pub node: Option<String>,
    /// Envoy routes of the listener's virtual host; default: `/` to the first cluster.
    pub routes: Vec<Value>,
    /// HTTP filters placed before meshguard (e.g. one that resolves the route early).
    pub filters_before: Vec<Value>,
    /// `failure_policy` of the Wasm filter.
    pub failure_policy: String,
    /// Extra fields merged into the HttpConnectionManager.
    pub hcm_extra: Value,
    /// Hand connections to workers in strict rotation (exact balance), so a test
    /// with several connections provably loads every worker.
    pub balanced: bool,
    /// Serve the listener over file-based LDS (`lds.json` next to the bootstrap) so
    /// a test can change the plugin config of a running Envoy.
    pub dynamic: bool,
    /// Another wasm than the default build (the trap-drill build).
    pub wasm: Option<std::path::PathBuf>,
}

impl Bootstrap {
    /// A bootstrap with one listener (`main`), meshguard with `plugin_config`, the router.
    pub fn new(plugin_config: &str) -> Self {
        Bootstrap {
            plugin_config: plugin_config.to_string(),
            clusters: Vec::new(),
            grpc_clusters: Vec::new(),
            node: None,
            routes: Vec::new(),
            filters_before: Vec::new(),
            failure_policy: "FAIL_CLOSED".into(),
            hcm_extra: json!({}),
            balanced: false,
            dynamic: false,
            wasm: None,
        }
    }

    /// Adds an upstream cluster.
    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.push((name.to_string(), addr));
        self
    }

    /// Adds an HTTP/2 cluster (a gRPC service such as the rate limit service).
    pub fn grpc_cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.grpc_clusters.push((name.to_string(), vec![addr]));
        self
    }

    /// Adds an HTTP/2 cluster over several endpoints (replicas of a service,
    /// taken in turn).
    pub fn grpc_cluster_of(mut self, name: &str, addrs: &[SocketAddr]) -> Self {
        self.grpc_clusters.push((name.to_string(), addrs.to_vec()));
        self
    }

    /// Sets Envoy's node id.
    pub fn node(mut self, id: &str) -> Self {
        self.node = Some(id.to_string());
        self
    }

    /// Adds an Envoy route (a `config.route.v3.Route` as JSON).
    pub fn route(mut self, route: Value) -> Self {
        self.routes.push(route);
        self
    }

    /// Adds an HTTP filter in front of meshguard.
    pub fn filter_before(mut self, filter: Value) -> Self {
        self.filters_before.push(filter);
        self
    }

    /// Routes for canary tests: a `cluster_header` route taken when meshguard set the
    /// cluster header, else the default cluster. Envoy must re-pick the route after
    /// meshguard sets the header for the canary to be reached.
    pub fn canary_routes(self, cluster_header: &str, default_cluster: &str) -> Self {
        self.route(serde_json::json!({
            "match": {"prefix": "/", "headers": [{"name": cluster_header, "present_match": true}]},
            "route": {"cluster_header": cluster_header}
        }))
        .route(serde_json::json!({"match": {"prefix": "/"}, "route": {"cluster": default_cluster}}))
    }

    /// Serve the listener through file-based LDS (see [`crate::envoy::Envoy::reload`]).
    pub fn dynamic(mut self) -> Self {
        self.dynamic = true;
        self
    }

    /// Spread connections over workers exactly (round robin).
    pub fn balanced(mut self) -> Self {
        self.balanced = true;
        self
    }

    /// Merges fields into the HttpConnectionManager config.
    pub fn hcm(mut self, extra: Value) -> Self {
        self.hcm_extra = extra;
        self
    }

    /// Uses `path` as the filter's code.
    pub fn wasm_file(mut self, path: std::path::PathBuf) -> Self {
        self.wasm = Some(path);
        self
    }

    /// The meshguard HTTP filter entry: the Wasm filter, or with
    /// `MESHGUARD_HOST=native` the dynamic module (found on
    /// `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`, which the harness sets).
    pub fn wasm_filter(&self, wasm: &std::path::Path) -> Value {
        if crate::native() {
            return native_filter(&self.plugin_config);
        }
        let wasm = self.wasm.as_deref().unwrap_or(wasm);
        json!({
            "name": "meshguard",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "meshguard",
                    "root_id": "meshguard",
                    "failure_policy": self.failure_policy,
                    "vm_config": {
                        "vm_id": "meshguard",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": { "local": { "filename": wasm.display().to_string() } }
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": self.plugin_config
                    }
                }
            }
        })
    }

    /// The LDS file content: a discovery response holding the listener.
    pub fn lds_json(&self, wasm: &std::path::Path) -> Value {
        let mut listener = self.listener_json(wasm);
        listener["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
        json!({"version_info": "1", "resources": [listener]})
    }

    /// The full bootstrap as JSON; `dir` holds `lds.json` when dynamic.
    pub fn to_json(&self, wasm: &std::path::Path, dir: &std::path::Path) -> Value {
        let listener = self.listener_json(wasm);
        let clusters = self.clusters_json();
        let tags: Vec<Value> = meshguard_engine::metrics::stats_tags()
            .into_iter()
            .map(|(name, regex)| json!({"tag_name": name, "regex": regex}))
            .collect();
        let mut b = json!({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            // Histograms reach /stats/prometheus at each flush: flush often in tests.
            "stats_flush_interval": "1s",
            "stats_config": {
                "stats_tags": tags,
                "histogram_bucket_settings": if crate::native() {
                        meshguard_engine::metrics::native_histogram_buckets()
                    } else {
                        meshguard_engine::metrics::histogram_buckets()
                    }
                    .iter()
                    .map(|(prefix, b)| json!({"match": {"prefix": prefix}, "buckets": b}))
                    .collect::<Vec<_>>()
            },
            "static_resources": {"listeners": [listener], "clusters": clusters}
        });
        if let Some(id) = &self.node {
            b["node"] = json!({"id": id, "cluster": "meshguard-test"});
        }
        if self.dynamic {
            b["static_resources"]["listeners"] = json!([]);
            b["node"] = json!({"id": "meshguard-test", "cluster": "meshguard-test"});
            b["dynamic_resources"] = json!({"lds_config": {
                "resource_api_version": "V3",
                "path_config_source": {"path": dir.join("lds.json").display().to_string()}
            }});
        }
        b
    }

    fn listener_json(&self, wasm: &std::path::Path) -> Value {
        let routes = if self.routes.is_empty() {
            let first = self
                .clusters
                .first()
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| "none".into());
            vec![json!({"match": {"prefix": "/"}, "route": {"cluster": first}})]
        } else {
            self.routes.clone()
        };
        let mut filters = self.filters_before.clone();
        filters.push(self.wasm_filter(wasm));
        filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        let mut hcm = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "main",
            "route_config": {
                "name": "main",
                "virtual_hosts": [{"name": "main", "domains": ["*"], "routes": routes}]
            },
            "http_filters": filters
        });
        if let (Some(h), Some(extra)) = (hcm.as_object_mut(), self.hcm_extra.as_object()) {
            for (k, v) in extra {
                h.insert(k.clone(), v.clone());
            }
        }
        let mut listener = json!({
            "name": "main",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": hcm
            }]}]
        });
        if self.balanced {
            listener["enable_reuse_port"] = json!(false);
            listener["connection_balance_config"] = json!({"exact_balance": {}});
        }
        listener
    }

    fn clusters_json(&self) -> Vec<Value> {
        let h2 = self.grpc_clusters.iter().map(|(name, addrs)| {
            let mut c = Self::cluster_json(name, addrs);
            if addrs.len() > 1 {
                // Replicas: one that stops answering is set aside at its first
                // failed call (as a shipped fleet cluster does).
                c["outlier_detection"] = json!({
                    "consecutive_5xx": 1,
                    "consecutive_gateway_failure": 1,
                    "interval": "1s",
                    "base_ejection_time": "30s",
                    "max_ejection_percent": 100
                });
            }
            c["typed_extension_protocol_options"] = json!({
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            });
            c
        });
        self.clusters
            .iter()
            .map(|(name, addr)| Self::cluster_json(name, std::slice::from_ref(addr)))
            .chain(h2)
            .collect()
    }

    fn cluster_json(name: &str, addrs: &[SocketAddr]) -> Value {
        let endpoints: Vec<Value> = addrs
            .iter()
            .map(|addr| {
                json!({"endpoint": {"address": {"socket_address": {
                    "address": addr.ip().to_string(), "port_value": addr.port()
                }}}})
            })
            .collect();
        json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": endpoints}]
            }
        })
    }
}

/// The native build's filter entry with `plugin_config` (the same JSON the Wasm
/// filter takes), as `meshguard render --native` writes it.
pub fn native_filter(plugin_config: &str) -> Value {
    json!({
        "name": "meshguard",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "meshguard", "do_not_close": true},
            "filter_name": "meshguard",
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": plugin_config
            }
        }
    })
}
