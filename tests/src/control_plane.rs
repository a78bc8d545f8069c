//! Simulated control planes: the Envoy configuration Istio and Envoy Gateway generate from
//! pixmesh's resources (`k8s/istio/`, `k8s/envoy-gateway/`), so a real Envoy can run the real
//! filter the way those gateways run it. Each translation follows what the control plane does
//! (`testdata/crds/README.md`; for Envoy Gateway the listener, route and cluster shapes are
//! read from the reference xDS in `testdata/crds/reference/`):
//!
//! - Istio: the WasmPlugin becomes an ECDS `Wasm` filter named `<namespace>.<name>` (served here
//!   from a file instead of istiod), `root_id` = `pluginName`, the V8 runtime, the
//!   `pluginConfig` as a JSON `StringValue`, `vmConfig.env` as `host_env_keys` /`key_values`;
//!   the code as a local file (istio-agent downloads it, checking `sha256`); the listener
//!   normalises paths (`normalize_path: true`, the mesh default `BASE`); clusters are named
//!   `outbound|PORT||SERVICE.NAMESPACE.svc.cluster.local`, HTTP/2 for gRPC ports.
//! - Envoy Gateway: each wasm entry of the EnvoyExtensionPolicy becomes a filter
//!   `envoy.filters.http.wasm/envoyextensionpolicy/<ns>/<policy>/wasm/<n>`, `disabled: true` on
//!   the listener and switched on by `typed_per_filter_config` on the routes of the targeted
//!   HTTPRoutes only; code by `remote` HTTP with `sha256` (from Envoy Gateway's cache, here a
//!   local HTTP server); `env.hostKeys` as `host_env_keys`; the listener's HTTP settings and the
//!   router are the reference listener's; routes are `httproute/<ns>/<name>/rule/<i>/match/<j>/…`
//!   and their clusters `httproute/<ns>/<name>/rule/<i>`, HTTP/2 for `kubernetes.io/h2c`.
//!
//! What is not simulated: mTLS between the proxies (Istio) and TLS to Envoy Gateway's wasm
//! cache; discovery (clusters are static, with the endpoints given).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::tools;

/// `k8s/<sub>` of the workspace.
pub fn k8s_dir(sub: &str) -> PathBuf {
    tools::workspace_root().join("k8s").join(sub)
}

/// The `*.yaml` files of `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every YAML document of `path`, as JSON.
pub fn objects(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// The object of `kind` called `name` among `objects`.
pub fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name:?}"))
}

/// Runs `scripts/validate-k8s` on `files` with the venv's Python.
pub fn validate_k8s(files: &[PathBuf]) -> Output {
    Command::new(tools::python())
        .arg(tools::workspace_root().join("scripts/validate-k8s"))
        .args(files)
        .output()
        .expect("run scripts/validate-k8s")
}

/// Runs `scripts/build-wasm-oci --wasm <the built filter> OUT` and returns OUT.
pub fn build_wasm_oci(out: &Path) -> Output {
    Command::new(tools::python())
        .arg(tools::workspace_root().join("scripts/build-wasm-oci"))
        .arg("--wasm")
        .arg(tools::filter_wasm())
        .arg(out)
        .output()
        .expect("run scripts/build-wasm-oci")
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tiny HTTP/1.1 server on 127.0.0.1: `files` by path, and for any other path
/// `200 app saw <METHOD> <PATH>` with `x-upstream: app` (the application behind the gateway).
/// One request per connection. Stops when dropped.
pub struct Upstream {
    port: u16,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Starts it.
    pub async fn start(files: Vec<(String, Vec<u8>)>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let files: std::sync::Arc<BTreeMap<String, Vec<u8>>> =
            std::sync::Arc::new(files.into_iter().collect());
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let files = files.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let mut line = head.lines().next().unwrap_or_default().split(' ');
                    let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                    let (kind, body) = match files.get(path) {
                        Some(bytes) => ("application/wasm", bytes.clone()),
                        None => (
                            "text/plain",
                            format!("app saw {method} {path}").into_bytes(),
                        ),
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\nx-upstream: app\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.write_all(&body).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Upstream { port, task }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A simulated control plane's Envoy bootstrap, and the files it names.
pub struct Simulated {
    /// The bootstrap (JSON, which Envoy reads as YAML).
    pub bootstrap: String,
    _dir: TempDir,
}

/// Where a Service's port really listens, in this test: `(namespace, service, port) → local
/// port on 127.0.0.1`.
pub type Endpoints = BTreeMap<(String, String, u16), u16>;

fn str_at<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

/// Whether Service port `port` of `service` is HTTP/2 in Istio (protocol by `appProtocol` or
/// the port's name prefix).
fn istio_h2(port: &Value) -> bool {
    let proto = port["appProtocol"]
        .as_str()
        .or_else(|| {
            port["name"]
                .as_str()
                .map(|n| n.split('-').next().unwrap_or(n))
        })
        .unwrap_or("");
    matches!(proto, "grpc" | "grpc-web" | "http2" | "kubernetes.io/h2c")
}

/// The Service port `number` of `service`.
fn service_port(service: &Value, number: u64) -> &Value {
    service["spec"]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["port"] == number))
        .unwrap_or_else(|| {
            panic!(
                "Service {} has no port {number}",
                service["metadata"]["name"]
            )
        })
}

fn static_cluster(name: &str, port: u16, h2: Option<Value>) -> Value {
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "10s",
        "load_assignment": { "cluster_name": name, "endpoints": [ { "lb_endpoints": [
            { "endpoint": { "address": { "socket_address":
                { "address": "127.0.0.1", "port_value": port } } } } ] } ] },
    });
    if let Some(options) = h2 {
        cluster["typed_extension_protocol_options"] = options;
    }
    cluster
}

fn h2_options() -> Value {
    json!({ "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": { "http2_protocol_options": {} } } })
}

fn bootstrap(listener: Value, clusters: Vec<Value>) -> String {
    json!({
        // What a control plane's proxy is started with (ECDS needs it).
        "node": { "id": "router~127.0.0.1~gateway-0.gateways~gateways.svc.cluster.local",
                  "cluster": "gateways" },
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "static_resources": { "listeners": [listener], "clusters": clusters },
    })
    .to_string()
}

/// What Istio's ingress gateway runs for `plugin` (a WasmPlugin) with the code in `wasm`, the
/// Istio `gateway`'s hosts, every other path routed to the `app` cluster
/// `outbound|8080||web.default.svc.cluster.local`, and `services` (the Services the plugin's
/// configuration may call) reachable at `endpoints`.
pub fn istio(
    plugin: &Value,
    gateway: &Value,
    services: &[&Value],
    endpoints: &Endpoints,
    app_port: u16,
    wasm: &Path,
) -> Simulated {
    let dir = tempfile::Builder::new()
        .prefix("pixmesh-istio-")
        .tempdir()
        .expect("tempdir");
    let spec = &plugin["spec"];
    let ns = str_at(&plugin["metadata"]["namespace"], "WasmPlugin namespace");
    let name = str_at(&plugin["metadata"]["name"], "WasmPlugin name");
    let filter_name = format!("{ns}.{name}");
    // istio-agent refuses code whose sha256 differs.
    if let Some(want) = spec["sha256"].as_str().filter(|s| !s.is_empty()) {
        let code = std::fs::read(wasm).expect("read the wasm");
        assert_eq!(
            want,
            sha256_hex(&code),
            "the WasmPlugin's sha256 is not the module's"
        );
    }
    let mut host_keys = Vec::new();
    let mut key_values = serde_json::Map::new();
    for env in spec["vmConfig"]["env"].as_array().into_iter().flatten() {
        let var = str_at(&env["name"], "vmConfig.env[].name").to_owned();
        if env["valueFrom"] == "HOST" {
            host_keys.push(Value::String(var));
        } else {
            key_values.insert(var, env["value"].clone());
        }
    }
    let mut config = json!({
        "name": filter_name,
        "root_id": spec["pluginName"].as_str().unwrap_or(""),
        "configuration": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": spec["pluginConfig"].to_string(),
        },
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": { "local": { "filename": wasm.display().to_string() } },
            "environment_variables": { "host_env_keys": host_keys, "key_values": key_values },
        },
    });
    match spec["failStrategy"].as_str() {
        Some("FAIL_OPEN") => config["fail_open"] = json!(true),
        Some("FAIL_RELOAD") => config["failure_policy"] = json!("FAIL_RELOAD"),
        _ => {}
    }
    let ecds = json!({ "resources": [ {
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": filter_name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": config,
        },
    } ] });
    let ecds_path = dir.path().join("ecds.json");
    std::fs::write(&ecds_path, ecds.to_string()).expect("write the ECDS file");

    let mut clusters = vec![static_cluster(
        "outbound|8080||web.default.svc.cluster.local",
        app_port,
        None,
    )];
    for service in services {
        let svc_ns = str_at(&service["metadata"]["namespace"], "Service namespace");
        let svc = str_at(&service["metadata"]["name"], "Service name");
        for port in service["spec"]["ports"].as_array().into_iter().flatten() {
            let number = port["port"].as_u64().expect("a port number") as u16;
            let local = endpoints[&(svc_ns.to_owned(), svc.to_owned(), number)];
            clusters.push(static_cluster(
                &format!("outbound|{number}||{svc}.{svc_ns}.svc.cluster.local"),
                local,
                istio_h2(port).then(h2_options),
            ));
        }
    }
    let hosts: Vec<Value> = gateway["spec"]["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["hosts"].as_array().cloned().unwrap_or_default())
        .flat_map(|h| {
            let h = str_at(&h, "Gateway host").to_owned();
            [json!(h.clone()), json!(format!("{h}:*"))]
        })
        .collect();
    let listener = json!({
        "name": "0.0.0.0_8080",
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
        "filter_chains": [ { "filters": [ {
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "outbound_0.0.0.0_8080",
                "use_remote_address": true,
                // The mesh default path normalisation, BASE.
                "normalize_path": true,
                "route_config": {
                    "name": "http.8080",
                    "virtual_hosts": [ {
                        "name": "images:80",
                        "domains": hosts,
                        "routes": [ {
                            "name": "web",
                            "match": { "prefix": "/" },
                            "route": { "cluster": "outbound|8080||web.default.svc.cluster.local" },
                        } ],
                    } ],
                },
                "http_filters": [
                    {
                        "name": filter_name,
                        "config_discovery": {
                            "config_source": { "path_config_source": {
                                "path": ecds_path.display().to_string() } },
                            "type_urls": [ "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm" ],
                        },
                    },
                    { "name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } },
                ],
            },
        } ] } ],
    });
    Simulated {
        bootstrap: bootstrap(listener, clusters),
        _dir: dir,
    }
}

/// A reference xDS file of `testdata/crds/reference/`, as JSON.
pub fn reference(file: &str) -> Value {
    let path = tools::workspace_root()
        .join("testdata/crds/reference")
        .join(file);
    let mut docs = objects(&path);
    assert_eq!(docs.len(), 1, "{}: one document", path.display());
    docs.remove(0)
}

/// The Gateway (namespace, name, listener section) the HTTPRoutes attach to, and its host.
pub struct EgGateway<'a> {
    /// Namespace of the Gateway.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// The listener's section name.
    pub listener: &'a str,
}

/// What Envoy Gateway gives its proxies for `policy` (an EnvoyExtensionPolicy targeting some of
/// `routes`), with `services` at `endpoints`; the wasm code is served by `code_server` at
/// `/<sha256>.wasm` (Envoy Gateway's cache) when `wasm` is its content.
pub fn envoy_gateway(
    gateway: &EgGateway,
    policy: &Value,
    routes: &[&Value],
    services: &[&Value],
    endpoints: &Endpoints,
    code_server_port: u16,
    wasm: &[u8],
) -> Simulated {
    let dir = tempfile::Builder::new()
        .prefix("pixmesh-eg-")
        .tempdir()
        .expect("tempdir");
    let pns = str_at(&policy["metadata"]["namespace"], "policy namespace");
    let pname = str_at(&policy["metadata"]["name"], "policy name");
    let digest = sha256_hex(wasm);

    // The wasm filters, disabled on the listener.
    let mut filters = Vec::new();
    for (n, entry) in policy["spec"]["wasm"]
        .as_array()
        .expect("spec.wasm")
        .iter()
        .enumerate()
    {
        let id = format!("envoyextensionpolicy/{pns}/{pname}/wasm/{n}");
        let code = &entry["code"];
        let given = match code["type"].as_str() {
            Some("HTTP") => code["http"]["sha256"].as_str(),
            Some("Image") => code["image"]["sha256"].as_str(),
            other => panic!("code type {other:?}"),
        };
        if let Some(want) = given {
            assert_eq!(want, digest, "the policy's sha256 is not the module's");
        }
        let mut config = json!({
            "name": entry["name"].as_str().unwrap_or(&id),
            "configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": if entry["config"].is_null() { String::new() } else { entry["config"].to_string() },
            },
            "vmConfig": {
                "vmId": id,
                "runtime": "envoy.wasm.runtime.v8",
                "code": { "remote": {
                    "httpUri": {
                        "cluster": "wasm_cluster",
                        "timeout": "10s",
                        "uri": format!("http://127.0.0.1:{code_server_port}/{digest}.wasm"),
                    },
                    "sha256": digest,
                    "retryPolicy": { "numRetries": 10,
                        "retryBackOff": { "baseInterval": "1s", "maxInterval": "30s" } },
                } },
            },
        });
        if let Some(root) = entry["rootID"].as_str() {
            config["rootId"] = json!(root);
        }
        if entry["failOpen"] == true {
            config["failOpen"] = json!(true);
        }
        if let Some(keys) = entry["env"]["hostKeys"].as_array() {
            config["vmConfig"]["environmentVariables"] = json!({ "hostEnvKeys": keys });
        }
        filters.push(json!({
            "disabled": true,
            "name": format!("envoy.filters.http.wasm/{id}"),
            "typedConfig": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": config,
            },
        }));
    }
    let per_route: serde_json::Map<String, Value> = filters
        .iter()
        .map(|f| {
            (
                str_at(&f["name"], "filter name").to_owned(),
                json!({ "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                        "config": {} }),
            )
        })
        .collect();
    let targets = |route: &Value| {
        policy["spec"]["targetRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| {
                t["kind"] == "HTTPRoute"
                    && t["name"] == route["metadata"]["name"]
                    && route["metadata"]["namespace"] == pns
            })
    };

    // Routes and their clusters.
    let mut clusters = Vec::new();
    let mut vhosts: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for route in routes {
        let rns = str_at(&route["metadata"]["namespace"], "HTTPRoute namespace");
        let rname = str_at(&route["metadata"]["name"], "HTTPRoute name");
        for (i, rule) in route["spec"]["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .enumerate()
        {
            let cluster = format!("httproute/{rns}/{rname}/rule/{i}");
            let backends = rule["backendRefs"].as_array().cloned().unwrap_or_default();
            if let Some(backend) = backends.first() {
                assert_eq!(backends.len(), 1, "one backend per rule is simulated");
                let svc_name = str_at(&backend["name"], "backendRef name");
                let number = backend["port"].as_u64().expect("backendRef port");
                let service = services
                    .iter()
                    .find(|s| {
                        s["metadata"]["name"] == svc_name && s["metadata"]["namespace"] == rns
                    })
                    .unwrap_or_else(|| panic!("no Service {rns}/{svc_name}"));
                let h2 = service_port(service, number)["appProtocol"] == "kubernetes.io/h2c";
                let local = endpoints[&(rns.to_owned(), svc_name.to_owned(), number as u16)];
                let mut c = static_cluster(&cluster, local, None);
                c["perConnectionBufferLimitBytes"] = json!(32768);
                if h2 {
                    // The shape of Envoy Gateway's HTTP/2 upstream options (reference clusters).
                    let reference = reference("envoy-gateway.wasm.clusters.yaml");
                    let wasm_cluster = reference
                        .as_array()
                        .and_then(|cs| cs.iter().find(|c| c["name"] == "wasm_cluster"))
                        .expect("the reference wasm_cluster");
                    c["typed_extension_protocol_options"] =
                        wasm_cluster["typedExtensionProtocolOptions"].clone();
                }
                clusters.push(c);
            }
            let hostnames = route["spec"]["hostnames"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for host in hostnames {
                let host = str_at(&host, "hostname").to_owned();
                for (j, m) in rule["matches"].as_array().into_iter().flatten().enumerate() {
                    let path = &m["path"];
                    let value = path["value"].as_str().unwrap_or("/");
                    let matcher = match path["type"].as_str().unwrap_or("PathPrefix") {
                        "Exact" => json!({ "path": value }),
                        "PathPrefix" if value == "/" => json!({ "prefix": "/" }),
                        "PathPrefix" => {
                            json!({ "pathSeparatedPrefix": value.trim_end_matches('/') })
                        }
                        other => panic!("path match type {other} is not simulated"),
                    };
                    let mut r = json!({
                        "name": format!("httproute/{rns}/{rname}/rule/{i}/match/{j}/{}",
                                        host.replace('.', "_")),
                        "match": matcher,
                    });
                    if backends.is_empty() {
                        r["directResponse"] = json!({ "status": 500 });
                    } else {
                        r["route"] = json!({ "cluster": cluster,
                            "upgradeConfigs": [ { "upgradeType": "websocket" } ] });
                    }
                    if targets(route) {
                        r["typedPerFilterConfig"] = Value::Object(per_route.clone());
                    }
                    vhosts.entry(host.clone()).or_default().push(r);
                }
            }
        }
    }
    let listener_name = format!(
        "{}/{}/{}",
        gateway.namespace, gateway.name, gateway.listener
    );
    let virtual_hosts: Vec<Value> = vhosts
        .into_iter()
        .map(|(host, routes)| {
            json!({ "name": format!("{listener_name}/{}", host.replace('.', "_")),
                    "domains": [host], "routes": routes })
        })
        .collect();

    // The reference listener's HTTP connection manager, with these filters and routes.
    let reference_listener = reference("envoy-gateway.wasm.listeners.yaml");
    let reference_listener = &reference_listener[0];
    let mut hcm = reference_listener["defaultFilterChain"]["filters"][0]["typedConfig"].clone();
    let router = hcm["httpFilters"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["name"] == "envoy.filters.http.router"))
        .expect("the reference router")
        .clone();
    filters.push(router);
    hcm["httpFilters"] = Value::Array(filters);
    let obj = hcm.as_object_mut().expect("an HCM");
    obj.remove("rds");
    obj.insert("statPrefix".into(), json!("http-10080"));
    obj.insert(
        "routeConfig".into(),
        json!({ "name": listener_name, "ignorePortInHostMatching": true,
                "virtualHosts": virtual_hosts }),
    );
    let listener = json!({
        "name": listener_name,
        "address": { "socketAddress": { "address": "127.0.0.1", "portValue": 0 } },
        "perConnectionBufferLimitBytes": reference_listener["perConnectionBufferLimitBytes"],
        "defaultFilterChain": { "filters": [ {
            "name": "envoy.filters.network.http_connection_manager",
            "typedConfig": hcm,
        } ] },
    });
    clusters.push(static_cluster("wasm_cluster", code_server_port, None));
    Simulated {
        bootstrap: bootstrap(listener, clusters),
        _dir: dir,
    }
}
