//! `meshguard render`: deployment manifests with the validated config embedded,
//! so an operator writes the config once. Only ever given a config that passed
//! validation.

use serde_json::{json, Value};

use crate::telemetry::{native_stats_config_json, stats_config_json};

/// Where the manifests are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An Envoy bootstrap fragment: the HTTP filter entry and `stats_config`.
    Envoy,
    /// Istio: a WasmPlugin and the stats EnvoyFilter.
    Istio,
    /// Envoy Gateway: an EnvoyExtensionPolicy, and an EnvoyProxy whose bootstrap
    /// merge carries meshguard's `stats_config`.
    EnvoyGateway,
}

impl Target {
    /// Parses `envoy`, `istio`, `envoy-gateway`.
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "envoy" => Some(Target::Envoy),
            "istio" => Some(Target::Istio),
            "envoy-gateway" => Some(Target::EnvoyGateway),
            _ => None,
        }
    }
}

/// Render options (CLI flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// Target.
    pub target: Target,
    /// Resource name (Istio, Envoy Gateway).
    pub name: String,
    /// Namespace (Istio, Envoy Gateway).
    pub namespace: String,
    /// OCI image of the plugin (`oci://host/repo:tag`).
    pub image: String,
    /// Image digest to pin, 64 lowercase hex digits.
    pub sha256: Option<String>,
    /// Path of the wasm file for a plain Envoy.
    pub wasm_file: String,
    /// Istio workload selector `key=value`, or none (whole namespace).
    pub selector: Option<(String, String)>,
    /// Envoy Gateway: the Gateway the policy attaches to.
    pub gateway: String,
    /// meshguard native (`libmeshguard.so`, an Envoy dynamic module) instead of
    /// the Wasm filter: plain Envoy and Envoy Gateway only.
    pub native: bool,
    /// Where the proxy finds `libmeshguard.so` (Envoy Gateway's EnvoyProxy
    /// registers it by path; plain Envoy finds it on
    /// `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`).
    pub module_file: String,
    /// `host:port` of the fleet service (`meshguard-rls`), for the cluster
    /// `fleetService.cluster` names; a DNS name gives each replica's address.
    pub fleet_address: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: Target::Envoy,
            name: "meshguard".into(),
            namespace: "default".into(),
            image: "oci://127.0.0.1:5000/meshguard:0.1.0".into(),
            sha256: None,
            wasm_file: "/etc/envoy/meshguard.wasm".into(),
            selector: None,
            gateway: "eg".into(),
            native: false,
            module_file: "/usr/lib/envoy/libmeshguard.so".into(),
            fleet_address: "meshguard-rls.meshguard.svc.cluster.local:8081".into(),
        }
    }
}

/// Checks an image digest: 64 lowercase hex digits (what Istio's schema requires).
pub fn check_sha256(s: &str) -> Result<(), String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    if hex.len() == 64
        && hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        Ok(())
    } else {
        Err(format!(
            "--sha256 must be 64 lowercase hex digits, got {s:?}"
        ))
    }
}

/// The manifests for `config` (the raw config as JSON), as YAML documents.
pub fn render(config: &Value, o: &Options) -> Vec<(String, Value)> {
    let mut docs = render_filter(config, o);
    if let Some(cluster) = fleet_cluster(config, o) {
        add_fleet_cluster(&mut docs, cluster, o);
    }
    docs
}

/// The Envoy cluster of the fleet service `config` names (`fleetService`), if
/// any: HTTP/2, one host per address the name resolves to, and a replica that
/// stops answering set aside at its first failed sync.
pub fn fleet_cluster(config: &Value, o: &Options) -> Option<Value> {
    let name = config.pointer("/fleetService/cluster")?.as_str()?;
    let (host, port) = o.fleet_address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    Some(json!({
        "name": name,
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        },
        "outlier_detection": {
            "consecutive_5xx": 1,
            "consecutive_gateway_failure": 1,
            "interval": "1s",
            "base_ejection_time": "30s",
            "max_ejection_percent": 100
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": host, "port_value": port
            }}}}]}]
        }
    }))
}

/// Puts the fleet service's cluster where each target takes clusters: the
/// plain Envoy fragment's `clusters`, an Istio EnvoyFilter that adds it, or
/// the Envoy Gateway proxy's bootstrap.
fn add_fleet_cluster(docs: &mut Vec<(String, Value)>, cluster: Value, o: &Options) {
    match o.target {
        Target::Envoy => {
            if let Some(obj) = docs.first_mut().and_then(|(_, d)| d.as_object_mut()) {
                obj.insert("clusters".into(), json!([cluster]));
            }
        }
        Target::Istio => docs.push((
            "The fleet service's cluster in every sidecar the plugin runs in (canary.fleet)."
                .into(),
            json!({
                "apiVersion": "networking.istio.io/v1alpha3",
                "kind": "EnvoyFilter",
                "metadata": {"name": format!("{}-fleet", o.name), "namespace": o.namespace},
                "spec": {"configPatches": [{
                    "applyTo": "CLUSTER",
                    "patch": {"operation": "ADD", "value": cluster}
                }]}
            }),
        )),
        Target::EnvoyGateway => {
            // The EnvoyProxy's bootstrap merge (a YAML string) gains the cluster.
            for (_, doc) in docs.iter_mut() {
                if doc.get("kind").and_then(Value::as_str) != Some("EnvoyProxy") {
                    continue;
                }
                let Some(value) = doc.pointer_mut("/spec/bootstrap/value") else {
                    continue;
                };
                let merged = value
                    .as_str()
                    .and_then(|v| serde_yaml_ng::from_str::<Value>(v).ok())
                    .and_then(|mut v| {
                        let obj = v.as_object_mut()?;
                        obj.insert(
                            "static_resources".into(),
                            json!({"clusters": [cluster.clone()]}),
                        );
                        serde_yaml_ng::to_string(&v).ok()
                    });
                if let Some(m) = merged {
                    *value = json!(m);
                }
            }
        }
    }
}

fn render_filter(config: &Value, o: &Options) -> Vec<(String, Value)> {
    let sha = o
        .sha256
        .as_deref()
        .map(|s| s.strip_prefix("sha256:").unwrap_or(s).to_string());
    if o.native {
        return render_native(config, o);
    }
    match o.target {
        Target::Envoy => vec![(
            "Put `http_filters` into your HttpConnectionManager (meshguard before the router),\n\
             `stats_config` at the top level of the bootstrap and `clusters` (if any) into\n\
             static_resources.clusters. FAIL_RELOAD: see docs/src/operations.md."
                .into(),
            json!({
                "http_filters": [
                    {
                        "name": "meshguard",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                            "config": {
                                "name": o.name,
                                "root_id": "meshguard",
                                "failure_policy": "FAIL_RELOAD",
                                "vm_config": {
                                    "vm_id": "meshguard",
                                    "runtime": "envoy.wasm.runtime.v8",
                                    "code": {"local": {"filename": o.wasm_file}}
                                },
                                "configuration": {
                                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                                    "value": config.to_string()
                                }
                            }
                        }
                    },
                    {
                        "name": "envoy.filters.http.router",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                    }
                ],
                "stats_config": stats_config_json()
            }),
        )],
        Target::Istio => {
            let mut spec = json!({
                "url": o.image,
                "imagePullPolicy": "IfNotPresent",
                "pluginName": "meshguard",
                "phase": "AUTHZ",
                "priority": 100,
                "failStrategy": "FAIL_RELOAD",
                "type": "HTTP",
                "pluginConfig": config
            });
            if let Some(s) = &sha {
                if let Some(obj) = spec.as_object_mut() {
                    obj.insert("sha256".into(), json!(s));
                }
            }
            if let Some((k, v)) = &o.selector {
                if let Some(obj) = spec.as_object_mut() {
                    obj.insert("selector".into(), json!({"matchLabels": {k: v}}));
                }
            }
            vec![
                (
                    "meshguard as an Istio WasmPlugin. AUTHZ phase: after authentication, before routing,\n\
                     so canary decisions steer VirtualService header matches. FAIL_RELOAD: see docs/src/operations.md."
                        .into(),
                    json!({
                        "apiVersion": "extensions.istio.io/v1alpha1",
                        "kind": "WasmPlugin",
                        "metadata": {"name": o.name, "namespace": o.namespace},
                        "spec": spec
                    }),
                ),
                (
                    "Stats tags and buckets for meshguard's metrics in every sidecar (Istio root namespace).\n\
                     Also include the stats: proxyStatsMatcher.inclusionPrefixes [\"wasmcustom.meshguard\"]."
                        .into(),
                    json!({
                        "apiVersion": "networking.istio.io/v1alpha3",
                        "kind": "EnvoyFilter",
                        "metadata": {"name": "meshguard-stats", "namespace": "istio-system"},
                        "spec": {"configPatches": [{
                            "applyTo": "BOOTSTRAP",
                            "patch": {"operation": "MERGE", "value": {"stats_config": stats_config_json()}}
                        }]}
                    }),
                ),
            ]
        }
        Target::EnvoyGateway => {
            let mut image = json!({"url": o.image});
            if let Some(s) = &sha {
                if let Some(obj) = image.as_object_mut() {
                    obj.insert("sha256".into(), json!(s));
                }
            }
            // Envoy Gateway merges a YAML string into its own bootstrap.
            let stats = serde_yaml_ng::to_string(&json!({"stats_config": stats_config_json()}))
                .unwrap_or_default();
            let proxy = format!("{}-stats", o.name);
            vec![(
                "meshguard at an Envoy Gateway edge. failOpen: false (Envoy Gateway offers no reload policy).\n\
                 Labelled metrics: the EnvoyProxy below, referenced by the Gateway (spec.infrastructure.parametersRef)."
                    .into(),
                json!({
                    "apiVersion": "gateway.envoyproxy.io/v1alpha1",
                    "kind": "EnvoyExtensionPolicy",
                    "metadata": {"name": o.name, "namespace": o.namespace},
                    "spec": {
                        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": o.gateway}],
                        "wasm": [{
                            "name": "meshguard",
                            "rootID": "meshguard",
                            "code": {"type": "Image", "image": image},
                            "config": config,
                            "failOpen": false
                        }]
                    }
                }),
            ), (
                format!(
                    "Stats tags and buckets for meshguard's metrics, merged into the gateway's Envoy bootstrap.\n\
                     Reference it from the Gateway: spec.infrastructure.parametersRef\n\
                     {{group: gateway.envoyproxy.io, kind: EnvoyProxy, name: {proxy}}}."
                ),
                json!({
                    "apiVersion": "gateway.envoyproxy.io/v1alpha1",
                    "kind": "EnvoyProxy",
                    "metadata": {"name": proxy, "namespace": o.namespace},
                    "spec": {"bootstrap": {"type": "Merge", "value": stats}}
                }),
            )]
        }
    }
}

/// The dynamic-module filter entry of meshguard native with `config`.
fn native_filter(config: &Value, o: &Options) -> Value {
    json!({
        "name": "meshguard",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "meshguard", "do_not_close": true},
            "filter_name": o.name,
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": config.to_string()
            }
        }
    })
}

/// meshguard native's manifests (`render --native`; Istio loads only Wasm, which
/// the CLI says before it gets here).
fn render_native(config: &Value, o: &Options) -> Vec<(String, Value)> {
    match o.target {
        Target::Envoy | Target::Istio => vec![(
            "meshguard native (Envoy 1.40 exactly: the module is built for its dynamic-module ABI v0.2.0).\n\
             Put `http_filters` into your HttpConnectionManager (meshguard before the router) and\n\
             `stats_config` at the top level of the bootstrap; start Envoy with\n\
             ENVOY_DYNAMIC_MODULES_SEARCH_PATH set to the folder holding libmeshguard.so."
                .into(),
            json!({
                "http_filters": [
                    native_filter(config, o),
                    {
                        "name": "envoy.filters.http.router",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                    }
                ],
                "stats_config": native_stats_config_json()
            }),
        )],
        Target::EnvoyGateway => {
            let stats = serde_yaml_ng::to_string(&json!({"stats_config": native_stats_config_json()}))
                .unwrap_or_default();
            let proxy = format!("{}-native", o.name);
            vec![
                (
                    format!(
                        "meshguard native at an Envoy Gateway edge: the module registered in the EnvoyProxy\n\
                         below ({proxy}), which the Gateway must reference (spec.infrastructure.parametersRef)."
                    ),
                    json!({
                        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
                        "kind": "EnvoyExtensionPolicy",
                        "metadata": {"name": o.name, "namespace": o.namespace},
                        "spec": {
                            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": o.gateway}],
                            "dynamicModule": [{
                                "name": "meshguard",
                                "filterName": o.name,
                                "config": config
                            }]
                        }
                    }),
                ),
                (
                    format!(
                        "Registers libmeshguard.so (put it at {} in the proxy image, built for the\n\
                         gateway's Envoy 1.40) and merges the histogram buckets into the bootstrap.",
                        o.module_file
                    ),
                    json!({
                        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
                        "kind": "EnvoyProxy",
                        "metadata": {"name": proxy, "namespace": o.namespace},
                        "spec": {
                            "dynamicModules": [{
                                "name": "meshguard",
                                "source": {"type": "Local", "local": {"path": o.module_file}},
                                "doNotClose": true
                            }],
                            "bootstrap": {"type": "Merge", "value": stats}
                        }
                    }),
                ),
            ]
        }
    }
}
