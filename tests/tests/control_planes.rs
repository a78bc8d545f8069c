//! End-to-end: pixmesh as Istio and as Envoy Gateway run it. A real Envoy is configured the way
//! each control plane configures it from the shipped resources (`k8s/istio/`,
//! `k8s/envoy-gateway/`; translated by `pixmesh_tests::control_plane`, which says what is
//! simulated): the filter in call mode with the resource's configuration as a JSON
//! `StringValue`, its keys from Envoy's environment (host env keys), Istio's ECDS filter and
//! path normalisation and `outbound|…` cluster, Envoy Gateway's filter disabled on the listener
//! and enabled per route, its `httproute/…` clusters and its listener settings (from the
//! reference xDS), no gRPC-JSON transcoder. Behind it the real sidecar, configured from the
//! shipped ConfigMap, reads from Garage. Every grammar answers with decodable images; paths that
//! are not images still reach the application.

use std::collections::BTreeMap;

use pixmesh_core::config::FilterConfig;
use pixmesh_core::router::Router;
use pixmesh_tests::control_plane::{
    self, EgGateway, Endpoints, Upstream, k8s_dir, object, objects, sha256_hex,
};
use pixmesh_tests::http::{self, Response};
use pixmesh_tests::{Envoy, Garage, Sidecar, tools};
use serde_json::Value;

const HOST: &str = "images.example.com";

/// Garage with the test images in the shipped sidecar's buckets, the sidecar configured from
/// `k8s/<dir>/sidecar.yaml`'s ConfigMap (its storages pointed at Garage), the application
/// upstream, and the values of the keys the resource passes to the VM.
struct World {
    _garage: Garage,
    sidecar: Sidecar,
    app: Upstream,
    env: Vec<(String, String)>,
    router: Router,
}

impl World {
    async fn start(
        dir: &str,
        filter_config: &Value,
        env_keys: &[String],
        files: Vec<(String, Vec<u8>)>,
    ) -> World {
        let garage = Garage::start().await;
        let objs = objects(&k8s_dir(dir).join("sidecar.yaml"));
        let toml = object(&objs, "ConfigMap", "pixmesh-sidecar")["data"]["sidecar.toml"]
            .as_str()
            .unwrap()
            .to_owned();
        for bucket in ["images", "images-renditions"] {
            assert!(toml.contains(&format!("bucket = \"{bucket}\"")), "{toml}");
            if bucket != garage.default_bucket() {
                garage.create_bucket(bucket).await;
            }
        }
        for name in ["medium.jpg", "alpha.png", "flower.webp"] {
            garage.put("images", name, tools::test_image(name)).await;
        }
        let region = "region = \"us-east-1\"\n";
        assert!(toml.contains(region), "{toml}");
        let toml = toml.replace(
            region,
            &format!(
                "region = \"{}\"\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                garage.region(),
                garage.endpoint(),
                garage.access_key(),
                garage.secret_key()
            ),
        );
        let sidecar = Sidecar::start(&toml).await;
        let app = Upstream::start(files).await;
        let env: Vec<(String, String)> = env_keys
            .iter()
            .map(|k| {
                let value = match k.as_str() {
                    pixmesh_core::config::RENDER_KEY_ENV => {
                        pixmesh_tests::vouch::render_key().to_owned()
                    }
                    "PIXMESH_IMGPROXY_KEY" => {
                        "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881".into()
                    }
                    "PIXMESH_IMGPROXY_SALT" => {
                        "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5".into()
                    }
                    other => format!("{other}-{}", sha256_hex(other.as_bytes())),
                };
                (k.clone(), value)
            })
            .collect();
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let parsed =
            FilterConfig::from_json_with_env(filter_config.to_string().as_bytes(), &lookup)
                .expect("the resource's filter config");
        World {
            _garage: garage,
            sidecar,
            app,
            env,
            router: Router::new(parsed),
        }
    }

    fn signed(&self, url: &str) -> String {
        self.router
            .sign(url)
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn endpoints(&self, namespace: &str, service: &str, port: u16) -> Endpoints {
        let mut endpoints = BTreeMap::new();
        endpoints.insert(
            (namespace.to_owned(), service.to_owned(), port),
            self.sidecar.addr().port(),
        );
        endpoints
    }
}

/// GET through Envoy with `Host: host`.
async fn get(envoy: &Envoy, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let url = format!("{}{path}", envoy.base_url());
    let mut all: Vec<(String, String)> = vec![("host".into(), host.into())];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        http::get(&url, &h)
    })
    .await
    .unwrap()
}

/// An image of `content_type` whose dimensions satisfy `dims`.
fn assert_image(what: &str, r: &Response, content_type: &str, dims: impl Fn(u32, u32) -> bool) {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some(content_type), "{what}");
    let image = image::load_from_memory(&r.body).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        dims(image.width(), image.height()),
        "{what}: {}x{}",
        image.width(),
        image.height()
    );
    assert!(r.header("etag").is_some(), "{what}");
}

/// Every grammar through `envoy` in call mode, the filter's own errors, and the application
/// behind the same host.
async fn serves_every_grammar(w: &World, envoy: &Envoy) {
    let thumbor = w.signed("/img/unsafe/fit-in/300x200/filters:format(webp)/medium.jpg");
    let r = get(envoy, HOST, &thumbor, &[]).await;
    assert_image("thumbor", &r, "image/webp", |x, y| {
        x <= 300 && y <= 200 && (x == 300 || y == 200)
    });
    assert!(
        r.header("link")
            .is_some_and(|l| l.contains("rel=\"canonical\"")),
        "{:?}",
        r.headers
    );
    let etag = r.header("etag").unwrap().to_owned();
    let r = get(envoy, HOST, &thumbor, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304, "{}", r.text());

    let r = get(
        envoy,
        HOST,
        &w.signed("/ip/insecure/rs:fill:200:200/plain/flower.webp@png"),
        &[],
    )
    .await;
    assert_image("imgproxy", &r, "image/png", |x, y| (x, y) == (200, 200));

    let r = get(envoy, HOST, &w.signed("/ik/tr:w-300/alpha.png"), &[]).await;
    assert_image("imagekit", &r, "image/png", |x, _| x == 300);

    let query = w.signed("/v1/ex/images/medium.jpg?w=200");
    let r = get(
        envoy,
        HOST,
        &query,
        &[("accept", "image/avif,image/webp,*/*")],
    )
    .await;
    assert_image("query, negotiated", &r, "image/webp", |x, _| x == 200);
    assert!(
        r.header("vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("accept"))
    );
    let r = get(envoy, HOST, &query, &[("accept", "image/jpeg")]).await;
    assert_image("query", &r, "image/jpeg", |x, _| x == 200);

    // The filter's and the sidecar's errors.
    let r = get(envoy, HOST, "/img/unsafe/100x100/medium.jpg", &[]).await;
    assert_eq!(r.status, 403, "unsigned URL: {}", r.text());
    let r = get(
        envoy,
        HOST,
        &w.signed("/img/unsafe/100x100/missing.jpg"),
        &[],
    )
    .await;
    assert_eq!(r.status, 404, "missing source: {}", r.text());
    // Clients never reach the sidecar's gRPC path through the gateway.
    let r = get(envoy, HOST, "/pixmesh.v1.ImageService/RenderCall", &[]).await;
    assert_eq!(r.status, 404, "{}", r.text());

    // Not an image: proxied to the application as before.
    let r = get(envoy, HOST, "/app/hello?x=1", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("app"));
    assert_eq!(r.text(), "app saw GET /app/hello?x=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_serves_every_grammar_in_call_mode() {
    let dir = k8s_dir("istio");
    let plugin = objects(&dir.join("wasmplugin.yaml"));
    let plugin = object(&plugin, "WasmPlugin", "pixmesh");
    let gateway = objects(&dir.join("ingress-gateway.yaml"));
    let gateway = object(&gateway, "Gateway", "pixmesh");
    let sidecar = objects(&dir.join("sidecar.yaml"));
    let service = object(&sidecar, "Service", "pixmesh-sidecar");
    let env_keys: Vec<String> = plugin["spec"]["vmConfig"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    let w = World::start("istio", &plugin["spec"]["pluginConfig"], &env_keys, vec![]).await;
    let sim = control_plane::istio(
        plugin,
        gateway,
        &[service],
        &w.endpoints("pixmesh", "pixmesh-sidecar", 50051),
        w.app.port(),
        &tools::filter_wasm(),
    );
    let envoy = Envoy::start_with_env(&sim.bootstrap, &["--concurrency", "1"], &w.env).await;
    serves_every_grammar(&w, &envoy).await;
    // Istio's listener normalises paths before any filter (BASE): the application sees the
    // normalised path.
    let r = get(&envoy, HOST, "/app/x/../hello", &[]).await;
    assert_eq!(r.text(), "app saw GET /app/hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gateway_serves_every_grammar_in_call_mode() {
    // The policy with code by https:// and its sha256 as scripts/build-wasm-oci renders it:
    // Envoy fetches the module (from "Envoy Gateway's cache", here a local server) and
    // checks that sha256.
    let out = tempfile::tempdir().unwrap();
    let build = control_plane::build_wasm_oci(out.path());
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let policy = objects(&out.path().join("extension-policy-https.yaml"));
    let policy = object(&policy, "EnvoyExtensionPolicy", "pixmesh");
    let dir = k8s_dir("envoy-gateway");
    let route = objects(&dir.join("httproute.yaml"));
    let route = object(&route, "HTTPRoute", "pixmesh");
    let sidecar = objects(&dir.join("sidecar.yaml"));
    let service = object(&sidecar, "Service", "pixmesh-sidecar");
    // The application: everything else on the image host and all of www.example.com, on
    // routes the policy does not target.
    let app_route: Value = serde_json::json!({
        "kind": "HTTPRoute",
        "metadata": { "name": "web", "namespace": "default" },
        "spec": {
            "hostnames": [HOST, "www.example.com"],
            "rules": [ { "matches": [ { "path": { "type": "PathPrefix", "value": "/" } } ],
                         "backendRefs": [ { "name": "web", "port": 8080 } ] } ],
        },
    });
    let app_service: Value = serde_json::json!({
        "kind": "Service",
        "metadata": { "name": "web", "namespace": "default" },
        "spec": { "ports": [ { "name": "http", "port": 8080 } ] },
    });
    let wasm_entry = &policy["spec"]["wasm"][0];
    let env_keys: Vec<String> = wasm_entry["env"]["hostKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    let wasm = std::fs::read(out.path().join("pixmesh_filter.wasm")).unwrap();
    let digest = sha256_hex(&wasm);
    let w = World::start(
        "envoy-gateway",
        &wasm_entry["config"],
        &env_keys,
        vec![(format!("/{digest}.wasm"), wasm.clone())],
    )
    .await;
    let mut endpoints = w.endpoints("pixmesh", "pixmesh-sidecar", 50051);
    endpoints.insert(("default".into(), "web".into(), 8080), w.app.port());
    let sim = control_plane::envoy_gateway(
        &EgGateway {
            namespace: "default",
            name: "eg",
            listener: "http",
        },
        policy,
        &[route, &app_route],
        &[service, &app_service],
        &endpoints,
        w.app.port(),
        &wasm,
    );
    let envoy = Envoy::start_with_env(&sim.bootstrap, &["--concurrency", "1"], &w.env).await;
    serves_every_grammar(&w, &envoy).await;
    // The filter runs on the policy's routes only: the same image path on another host's
    // route goes to the application untouched.
    let thumbor = w.signed("/img/unsafe/fit-in/300x200/medium.jpg");
    let r = get(&envoy, "www.example.com", &thumbor, &[]).await;
    assert_eq!(
        r.header("x-upstream"),
        Some("app"),
        "{} {:?}: the filter answered on another route",
        r.status,
        r.header("content-type")
    );
    assert_eq!(r.text(), format!("app saw GET {thumbor}"));
    // Envoy Gateway's listener merges slashes before any filter.
    let r = get(&envoy, HOST, "/app//hello", &[]).await;
    assert_eq!(r.text(), "app saw GET /app/hello");
}
