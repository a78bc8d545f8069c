//! pixmesh's Istio and Envoy Gateway resources (`k8s/istio/`, `k8s/envoy-gateway/`) stay valid:
//! every object against its schema (`scripts/validate-k8s`: Kubernetes' own for built-in kinds,
//! the CRDs in `testdata/crds/` for the rest, unknown fields refused), the filter configuration
//! they embed and the sidecar configuration they mount parse with pixmesh's own parsers, and
//! `scripts/build-wasm-oci` writes an OCI layout whose digests hold and https examples whose
//! sha256 is the module's.

use std::path::{Path, PathBuf};

use pixmesh_core::config::FilterConfig;
use pixmesh_core::router::Router;
use pixmesh_tests::control_plane::{
    build_wasm_oci, k8s_dir, object, objects, sha256_hex, validate_k8s, yaml_files,
};
use pixmesh_tests::tools;
use serde_json::Value;

fn all_files() -> Vec<PathBuf> {
    let mut files = yaml_files(&k8s_dir("istio"));
    files.extend(yaml_files(&k8s_dir("envoy-gateway")));
    files
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn every_resource_validates_against_its_schema() {
    let files = all_files();
    let kinds: Vec<String> = files
        .iter()
        .flat_map(|f| objects(f))
        .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    for kind in [
        "WasmPlugin",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "Gateway",
        "EnvoyExtensionPolicy",
        "HTTPRoute",
        "Deployment",
        "Service",
        "ServiceAccount",
        "ConfigMap",
        "NetworkPolicy",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {files:?}");
    }
    let output = validate_k8s(&files);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains(&format!("{} object(s) valid", kinds.len())),
        "{}",
        text(&output)
    );
}

/// `file`'s text with `from` replaced by `to` (which must occur), written to a temporary file.
fn broken(dir: &Path, file: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", file.display());
    let out = dir.join(file.file_name().unwrap());
    std::fs::write(&out, text.replacen(from, to, 1)).unwrap();
    out
}

#[test]
fn a_broken_resource_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let istio = k8s_dir("istio");
    let eg = k8s_dir("envoy-gateway");
    let cases = [
        // A misspelled field of a custom resource (WasmPlugin.spec.vmConfig.env[]).
        (
            istio.join("wasmplugin.yaml"),
            "valueFrom: HOST }",
            "valueFrm: HOST }",
            "'valueFrm' was unexpected",
        ),
        // A misspelled field deep in another CRD (EnvoyExtensionPolicy wasm env).
        (
            eg.join("extension-policy.yaml"),
            "hostKeys:",
            "hostkeys:",
            "'hostkeys' was unexpected",
        ),
        // A value outside a CRD's enum.
        (
            istio.join("security.yaml"),
            "mode: STRICT",
            "mode: STRIKT",
            "'STRIKT' is not one of",
        ),
        // A sha256 that is not 64 hex digits.
        (
            istio.join("wasmplugin-https.yaml"),
            "sha256: \"0000",
            "sha256: \"zz00",
            "does not match",
        ),
        // A misspelled field of a built-in kind (Deployment container securityContext).
        (
            istio.join("sidecar.yaml"),
            "readOnlyRootFilesystem",
            "readOnlyRootFileSystem",
            "'readOnlyRootFileSystem' was unexpected",
        ),
        // A misspelled metadata field of a custom resource.
        (
            eg.join("httproute.yaml"),
            "  namespace: pixmesh\n",
            "  namespaces: pixmesh\n",
            "'namespaces' was unexpected",
        ),
        // A CRD's CEL rule (Istio's url scheme, Kubernetes' url() functions).
        (
            istio.join("wasmplugin.yaml"),
            "url: oci://",
            "url: ftp://",
            "url must have schema one of",
        ),
        // A CRD's CEL rule over two fields (Envoy Gateway: the code type names its field).
        (
            eg.join("extension-policy.yaml"),
            "type: Image",
            "type: HTTP",
            "If type is HTTP, http field needs to be set.",
        ),
        // A kind no schema knows.
        (
            eg.join("httproute.yaml"),
            "kind: HTTPRoute",
            "kind: HTTPRoutes",
            "no CRD defines HTTPRoutes",
        ),
    ];
    for (file, from, to, message) in cases {
        let bad = broken(dir.path(), &file, from, to);
        let output = validate_k8s(std::slice::from_ref(&bad));
        assert_eq!(
            output.status.code(),
            Some(1),
            "{from:?} → {to:?} in {} passed: {}",
            file.display(),
            text(&output)
        );
        assert!(
            text(&output).contains(message),
            "{from:?} → {to:?}: {}",
            text(&output)
        );
    }
}

/// The keys the resources read from the environment, with test values.
fn test_env(name: &str) -> Option<String> {
    match name {
        "PIXMESH_IMGPROXY_KEY" | "PIXMESH_IMGPROXY_SALT" => Some("0123456789abcdef".into()),
        n if n.starts_with("PIXMESH_") => Some(format!("test value of {n}")),
        _ => None,
    }
}

/// The filter configurations the resources embed: Istio's `pluginConfig`, Envoy Gateway's
/// `config`, by file.
fn embedded_filter_configs() -> Vec<(String, Value, Vec<String>)> {
    let mut configs = Vec::new();
    for file in yaml_files(&k8s_dir("istio")) {
        for o in objects(&file).iter().filter(|o| o["kind"] == "WasmPlugin") {
            let env = o["spec"]["vmConfig"]["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect();
            configs.push((
                file.display().to_string(),
                o["spec"]["pluginConfig"].clone(),
                env,
            ));
        }
    }
    for file in yaml_files(&k8s_dir("envoy-gateway")) {
        for o in objects(&file)
            .iter()
            .filter(|o| o["kind"] == "EnvoyExtensionPolicy")
        {
            for wasm in o["spec"]["wasm"].as_array().unwrap() {
                let env = wasm["env"]["hostKeys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e.as_str().unwrap().to_owned())
                    .collect();
                configs.push((file.display().to_string(), wasm["config"].clone(), env));
            }
        }
    }
    configs
}

/// The `{"env": NAME}` names of a filter configuration.
fn env_names(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let (1, Some(Value::String(name))) = (map.len(), map.get("env")) {
                out.push(name.clone());
            }
            map.values().for_each(|v| env_names(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| env_names(v, out)),
        _ => {}
    }
}

#[test]
fn embedded_filter_configs_parse_in_call_mode_with_their_keys_from_the_environment() {
    let configs = embedded_filter_configs();
    assert_eq!(configs.len(), 4, "two WasmPlugins, two policies");
    for (file, config, env) in &configs {
        let json = config.to_string();
        let parsed = FilterConfig::from_json_with_env(json.as_bytes(), &test_env)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let call = parsed
            .call
            .clone()
            .unwrap_or_else(|| panic!("{file}: not in call mode"));
        assert_eq!(call.problem(), None, "{file}");
        Router::new(parsed);
        // Every secret comes from the environment the resource passes to the VM, and so does
        // the render key; no secret is written in the resource.
        let mut wanted = vec![pixmesh_core::config::RENDER_KEY_ENV.to_owned()];
        env_names(config, &mut wanted);
        for name in &wanted {
            assert!(env.contains(name), "{file}: {name} is not passed to the VM");
        }
        assert!(config.get("render_key").is_none(), "{file}");
        // Without the variables, the filter refuses to start.
        let missing = FilterConfig::from_json_with_env(json.as_bytes(), &|_| None);
        assert!(missing.is_err(), "{file}");
    }
    // Each gateway's two examples differ only in where the code comes from.
    assert_eq!(configs[0].1, configs[1].1);
    assert_eq!(configs[2].1, configs[3].1);
    let cluster = |i: usize| configs[i].1["call"]["cluster"].as_str().unwrap().to_owned();
    assert_eq!(
        cluster(0),
        "outbound|50051||pixmesh-sidecar.pixmesh.svc.cluster.local"
    );
    assert_eq!(cluster(2), "httproute/pixmesh/pixmesh/rule/0");
}

#[test]
fn call_clusters_name_the_shipped_sidecar_services() {
    // Istio: outbound|PORT||SERVICE.NAMESPACE.svc.cluster.local of a gRPC port.
    let istio = objects(&k8s_dir("istio").join("sidecar.yaml"));
    let service = object(&istio, "Service", "pixmesh-sidecar");
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["appProtocol"], "grpc");
    let name = format!(
        "outbound|{}||{}.{}.svc.cluster.local",
        port["port"],
        service["metadata"]["name"].as_str().unwrap(),
        service["metadata"]["namespace"].as_str().unwrap()
    );
    let plugin = objects(&k8s_dir("istio").join("wasmplugin.yaml"));
    let plugin = object(&plugin, "WasmPlugin", "pixmesh");
    assert_eq!(plugin["spec"]["pluginConfig"]["call"]["cluster"], name);
    // The call's :authority is the Service's host and port (the cluster name is no authority).
    let authority = format!(
        "{}.{}.svc.cluster.local:{}",
        service["metadata"]["name"].as_str().unwrap(),
        service["metadata"]["namespace"].as_str().unwrap(),
        port["port"]
    );
    assert_eq!(
        plugin["spec"]["pluginConfig"]["call"]["authority"],
        authority.as_str()
    );
    // The AuthorizationPolicy admits the gateway's service account.
    let gateway = objects(&k8s_dir("istio").join("ingress-gateway.yaml"));
    let deployment = object(&gateway, "Deployment", "istio-ingressgateway");
    let principal = format!(
        "cluster.local/ns/{}/sa/{}",
        deployment["metadata"]["namespace"].as_str().unwrap(),
        deployment["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap()
    );
    let security = objects(&k8s_dir("istio").join("security.yaml"));
    let policy = object(&security, "AuthorizationPolicy", "pixmesh-sidecar");
    assert_eq!(
        policy["spec"]["rules"][0]["from"][0]["source"]["principals"][0],
        principal.as_str()
    );
    // Envoy Gateway: httproute/NAMESPACE/NAME/rule/N of the rule whose backend is the sidecar.
    let route = objects(&k8s_dir("envoy-gateway").join("httproute.yaml"));
    let route = object(&route, "HTTPRoute", "pixmesh");
    let rule = route["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| r["backendRefs"][0]["name"] == "pixmesh-sidecar")
        .unwrap();
    let eg = objects(&k8s_dir("envoy-gateway").join("extension-policy.yaml"));
    let eg = object(&eg, "EnvoyExtensionPolicy", "pixmesh");
    assert_eq!(
        eg["spec"]["wasm"][0]["config"]["call"]["cluster"],
        format!("httproute/pixmesh/pixmesh/rule/{rule}")
    );
    let sidecar = objects(&k8s_dir("envoy-gateway").join("sidecar.yaml"));
    let service = object(&sidecar, "Service", "pixmesh-sidecar");
    assert_eq!(
        service["spec"]["ports"][0]["appProtocol"],
        "kubernetes.io/h2c"
    );
    assert_eq!(
        eg["spec"]["wasm"][0]["config"]["call"]["authority"],
        format!(
            "pixmesh-sidecar.pixmesh.svc.cluster.local:{}",
            service["spec"]["ports"][0]["port"]
        )
    );
}

#[test]
fn mounted_sidecar_configs_parse_and_listen_beyond_the_pod() {
    for dir in ["istio", "envoy-gateway"] {
        let objs = objects(&k8s_dir(dir).join("sidecar.yaml"));
        let map = object(&objs, "ConfigMap", "pixmesh-sidecar");
        let toml = map["data"]["sidecar.toml"].as_str().unwrap();
        let config = pixmesh_sidecar::config::Config::from_toml(toml)
            .unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert!(
            config.listen.ip().is_unspecified(),
            "{dir}: a Service's pods listen on all"
        );
        assert_eq!(config.listen.port(), 50051);
        assert!(
            config.render_key.is_none(),
            "{dir}: the key is the pod's environment's"
        );
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The blob a descriptor names, its digest and size checked.
fn blob(layout: &Path, descriptor: &Value) -> Vec<u8> {
    let digest = descriptor["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(sha256_hex(&bytes), hex, "blob {digest}");
    assert_eq!(descriptor["size"], bytes.len(), "size of {digest}");
    bytes
}

#[test]
fn the_wasm_oci_layout_holds_the_built_module() {
    let out = tempfile::tempdir().unwrap();
    let output = build_wasm_oci(out.path());
    assert!(output.status.success(), "{}", text(&output));
    let wasm = std::fs::read(tools::filter_wasm()).unwrap();
    let digest = sha256_hex(&wasm);

    // The bare module and its digest in sha256sum's format.
    assert!(std::fs::read(out.path().join("pixmesh_filter.wasm")).unwrap() == wasm);
    assert_eq!(
        std::fs::read_to_string(out.path().join("pixmesh_filter.wasm.sha256")).unwrap(),
        format!("{digest}  pixmesh_filter.wasm\n")
    );

    // The layout: both images, every digest and size.
    let layout = out.path().join("oci");
    assert_eq!(
        read_json(&layout.join("oci-layout")),
        serde_json::json!({ "imageLayoutVersion": "1.0.0" })
    );
    let index = read_json(&layout.join("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().unwrap();
    let tags: Vec<&str> = manifests
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(tags, [version.to_owned(), format!("{version}-image")]);
    for descriptor in manifests {
        assert_eq!(
            descriptor["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        let manifest: Value = serde_json::from_slice(&blob(&layout, descriptor)).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], descriptor["mediaType"]);
        let config = blob(&layout, &manifest["config"]);
        serde_json::from_slice::<Value>(&config).expect("a JSON config");
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        let layer = blob(&layout, &layers[0]);
        match manifest["config"]["mediaType"].as_str().unwrap() {
            // The Wasm OCI artifact: the layer is the module.
            "application/vnd.module.wasm.config.v1+json" => {
                assert_eq!(
                    layers[0]["mediaType"],
                    "application/vnd.module.wasm.content.layer.v1+wasm"
                );
                assert!(
                    layer == wasm,
                    "the artifact's layer is not the built module"
                );
            }
            // FROM scratch + COPY plugin.wasm ./: a tar holding plugin.wasm.
            "application/vnd.oci.image.config.v1+json" => {
                assert_eq!(
                    layers[0]["mediaType"],
                    "application/vnd.oci.image.layer.v1.tar"
                );
                let config: Value = serde_json::from_slice(&config).unwrap();
                assert_eq!(
                    config["rootfs"]["diff_ids"][0], layers[0]["digest"],
                    "an uncompressed layer's diff_id is its digest"
                );
                assert_eq!(tar_file(&layer, "plugin.wasm"), Some(wasm.clone()));
            }
            other => panic!("unexpected config media type {other}"),
        }
    }

    // The https examples, rendered with the module's sha256: valid, and otherwise unchanged.
    for (shipped, rendered) in [
        (
            k8s_dir("istio").join("wasmplugin-https.yaml"),
            "wasmplugin-https.yaml",
        ),
        (
            k8s_dir("envoy-gateway").join("extension-policy-https.yaml"),
            "extension-policy-https.yaml",
        ),
    ] {
        let rendered = out.path().join(rendered);
        let rendered_text = std::fs::read_to_string(&rendered).unwrap();
        let shipped_text = std::fs::read_to_string(&shipped).unwrap();
        let zeros = "0".repeat(64);
        assert!(shipped_text.contains(&format!("sha256: \"{zeros}\"")));
        assert!(!rendered_text.contains(&zeros), "{}", rendered.display());
        let sha = |v: &Value| {
            let spec = &v["spec"];
            spec["sha256"]
                .as_str()
                .or(spec["wasm"][0]["code"]["http"]["sha256"].as_str())
                .unwrap()
                .to_owned()
        };
        assert_eq!(sha(&objects(&rendered)[0]), digest);
        let mut expected = objects(&shipped);
        let mut got = objects(&rendered);
        for v in expected.iter_mut().chain(got.iter_mut()) {
            let spec = v["spec"].as_object_mut().unwrap();
            spec.remove("sha256");
            if let Some(w) = spec.get_mut("wasm") {
                w[0]["code"]["http"]
                    .as_object_mut()
                    .unwrap()
                    .remove("sha256");
            }
        }
        assert_eq!(
            expected,
            got,
            "{} changed beyond its sha256",
            rendered.display()
        );
        let output = validate_k8s(std::slice::from_ref(&rendered));
        assert!(output.status.success(), "{}", text(&output));
    }
}

/// The content of `name` in an uncompressed tar, read by the format (ustar headers, PAX
/// extended headers skipped).
fn tar_file(tar: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut at = 0;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|&b| b == 0) {
            return None;
        }
        let field = |from: usize, len: usize| {
            let raw = &header[from..from + len];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(len);
            String::from_utf8_lossy(&raw[..end]).trim().to_owned()
        };
        let size = usize::from_str_radix(&field(124, 12), 8).ok()?;
        let kind = header[156];
        let start = at + 512;
        if (kind == b'0' || kind == 0) && field(0, 100) == name {
            return tar.get(start..start + size).map(<[u8]>::to_vec);
        }
        at = start + size.div_ceil(512) * 512;
    }
    None
}
