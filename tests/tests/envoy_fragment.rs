//! pixmesh added to an Envoy that is not pixmesh's: a foreign configuration with Envoy's default
//! listener settings, serving a direct response and a proxied upstream, gets
//! `pixmesh-sidecar envoy fragment`'s output merged in the way README's "An existing Envoy"
//! says (filters before its router, routes first in its virtual host, clusters appended).
//! Against Garage, for both fragments (transcoder mode and call mode): every grammar answers
//! exactly as pixmesh's own Envoy does (status, body bytes, headers), and every foreign route
//! answers exactly as before the merge.

use std::sync::atomic::Ordering;

use pixmesh_core::config::FilterConfig;
use pixmesh_core::router::Router;
use pixmesh_sidecar::envoy_config::{self, Endpoint, Fragment, InlineSecrets};
use pixmesh_tests::foreign::{Req, essentials, get, merge, send, start_app};
use pixmesh_tests::{Envoy, Garage, Sidecar, Stack, tools, vouch};

/// The secrets the filter reads from Envoy's environment, and their values.
const SECRETS: &[(&str, &str)] = &[
    ("THUMBOR_KEY", "thumbor-secret"),
    ("IMGPROXY_KEY", "736563726574"),
    ("IMGPROXY_SALT", "68656C6C6F"),
    ("IMAGEKIT_KEY", "private_imagekit"),
    ("QUERY_KEY", "query-secret"),
];

/// Every grammar, each route signed with a key from the environment.
fn filter_config(call: bool) -> String {
    let mut json = serde_json::json!({ "routes": [
        { "prefix": "/img/", "storage": "photos", "secret": { "env": "THUMBOR_KEY" },
          "canonical_base_url": "https://images.example.com/img" },
        { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos",
          "keys": [ { "key": { "env": "IMGPROXY_KEY" }, "salt": { "env": "IMGPROXY_SALT" } } ] },
        { "prefix": "/ik/", "grammar": "imagekit", "storage": "photos",
          "secret": { "env": "IMAGEKIT_KEY" }, "cache_key_headers": ["X-Device"] },
        { "prefix": "/v1/ex/", "grammar": "query", "storage": "photos",
          "secret": { "env": "QUERY_KEY" }, "auto_format": true },
    ]});
    if call {
        json["call"] = serde_json::json!({ "cluster": "images_sidecar" });
    }
    json.to_string()
}

/// Envoy's environment: the secrets and the render key the sidecar shares.
fn envoy_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = SECRETS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push((
        pixmesh_core::config::RENDER_KEY_ENV.to_owned(),
        vouch::render_key().to_owned(),
    ));
    env
}

/// A router that signs as a client with the keys would.
fn signer() -> Router {
    let env = |name: &str| {
        SECRETS
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let cfg = FilterConfig::from_json_with_env(filter_config(false).as_bytes(), &env).unwrap();
    Router::new(cfg)
}

/// The foreign site's requests: none is an image URL.
fn foreign_requests() -> Vec<Req> {
    let mut requests = vec![
        get("/healthz"),
        get("/teapot/pot"),
        get("/"),
        get("/app/page?q=1&r=%7E"),
        get("/imgs/medium.jpg"),
        get("/img"),
        get("/ipx/insecure/rs:fill:10:10/plain/medium.jpg"),
        get("/static/a%20b/../c.css"),
    ];
    let mut with_header = get("/app/with-header");
    with_header.headers.push(("x-device", "tablet".into()));
    requests.push(with_header);
    requests.push(Req {
        method: "POST",
        path: "/app/form".into(),
        headers: vec![("content-type", "application/x-www-form-urlencoded".into())],
        body: b"a=1&b=two".to_vec(),
    });
    requests.push(Req {
        method: "HEAD",
        path: "/app/head".into(),
        headers: Vec::new(),
        body: Vec::new(),
    });
    requests
}

/// Image requests in every grammar, signed; with the statuses they must have.
fn image_requests(router: &Router) -> Vec<(Req, u16)> {
    let sign = |url: &str| router.sign(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let mut list = vec![
        (
            get(&sign(
                "/img/unsafe/fit-in/300x200/filters:format(webp)/medium.jpg",
            )),
            200,
        ),
        (get(&sign("/img/unsafe/200x200/smart/alpha.png")), 200),
        (
            get(&sign("/ip/insecure/rs:fill:200:200/plain/flower.webp@png")),
            200,
        ),
        (get(&sign("/ik/tr:w-300:rt-90/medium.jpg")), 200),
        (get(&sign("/v1/ex/photos/medium.jpg?w=300")), 200),
        (get(&sign("/img/unsafe/100x100/missing.jpg")), 404),
        // Signed for another image.
        (
            get(&sign("/img/unsafe/100x100/medium.jpg").replace("medium", "alpha")),
            403,
        ),
        (get("/img/unsafe/100x100/medium.jpg"), 403),
        // Internal paths are never reachable by clients.
        (get("/pixmesh.v1.ImageService/Render"), 404),
        (
            get("/_pixmesh/v1/render?storage=photos&key=medium.jpg"),
            404,
        ),
    ];
    let mut ik = get(&sign("/ik/tr:w-200/alpha.png"));
    ik.headers.push(("x-device", "phone".into()));
    list.push((ik, 200));
    let mut negotiated = get(&sign("/v1/ex/photos/alpha.png?w=120"));
    negotiated
        .headers
        .push(("accept", "image/avif,image/webp,*/*".into()));
    list.push((negotiated, 200));
    let mut head = get(&sign("/img/unsafe/fit-in/120x120/medium.jpg"));
    head.method = "HEAD";
    list.push((head, 200));
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_fragment_serves_images_and_leaves_the_site_alone() {
    let garage = Garage::start().await;
    let bucket = garage.default_bucket().to_owned();
    for name in ["medium.jpg", "alpha.png", "flower.webp"] {
        garage.put(&bucket, name, tools::test_image(name)).await;
    }
    let sidecar = Sidecar::start(&format!(
        "[storages.photos]\n{}",
        garage.storage_toml(&bucket)
    ))
    .await;
    let (app_port, app_requests) = start_app().await;
    let foreign = pixmesh_tests::foreign::config(app_port, "");
    let env = envoy_env();
    let args = ["--concurrency", "1"];
    let before = Envoy::start_with_env(&foreign, &args, &env).await;
    // pixmesh's own Envoy: the reference for every image answer.
    let mut own = Stack::builder(&filter_config(false), "").external_sidecar(sidecar.addr().port());
    for (k, v) in &env {
        own = own.envoy_env(k, v);
    }
    let own = own.start().await;

    let router = signer();
    let wasm = tools::filter_wasm().display().to_string();
    for call in [false, true] {
        let fragment = envoy_config::fragment(&Fragment {
            filter_config: filter_config(call),
            filter_wasm: wasm.clone(),
            sidecar: Endpoint::loopback(sidecar.addr().port()),
            cluster: None,
            route_timeout: "30s".into(),
            inline_secrets: InlineSecrets::Refuse,
        })
        .unwrap();
        let merged = Envoy::start_with_env(&merge(&foreign, &fragment), &args, &env).await;
        let mode = if call { "call mode" } else { "transcoder mode" };

        for req in foreign_requests() {
            let was = send(&before, &req).await;
            let is = send(&merged, &req).await;
            assert_eq!(
                essentials(&is),
                essentials(&was),
                "{mode}: {} {} answers as before the merge\nnow: {}\nbefore: {}",
                req.method,
                req.path,
                is.text(),
                was.text()
            );
        }

        for (req, status) in image_requests(&router) {
            let reference = send(&own.envoy, &req).await;
            assert_eq!(
                reference.status,
                status,
                "pixmesh's own Envoy: {} {}: {}",
                req.method,
                req.path,
                reference.text()
            );
            let is = send(&merged, &req).await;
            assert_eq!(
                essentials(&is),
                essentials(&reference),
                "{mode}: {} {} answers as pixmesh's own Envoy does",
                req.method,
                req.path,
            );
            if status == 200 && req.method == "GET" {
                let content_type = is.header("content-type").unwrap_or_default();
                assert!(content_type.starts_with("image/"), "{mode}: {content_type}");
            }
        }
    }
    // Every proxied foreign request reached the application once per Envoy it was sent to (the
    // one before the merge, in each mode, and the merged one), and no image request did.
    let proxied = foreign_requests()
        .iter()
        .filter(|r| !r.path.starts_with("/healthz") && !r.path.starts_with("/teapot"))
        .count();
    assert_eq!(app_requests.load(Ordering::SeqCst), proxied * 4);
}

#[test]
fn the_fragment_needs_no_file_but_the_wasm_and_validates() {
    let wasm = tools::filter_wasm().display().to_string();
    let owned = envoy_env();
    let env: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for call in [false, true] {
        let fragment = envoy_config::fragment(&Fragment {
            filter_config: filter_config(call),
            filter_wasm: wasm.clone(),
            // A Kubernetes Service's name: a DNS cluster.
            sidecar: "pixmesh-sidecar.images.svc.cluster.local:50051"
                .parse()
                .unwrap(),
            cluster: None,
            route_timeout: "30s".into(),
            inline_secrets: InlineSecrets::Refuse,
        })
        .unwrap();
        for (name, _) in SECRETS {
            assert!(fragment.contains(name), "host_env_keys lists {name}");
        }
        for (_, value) in SECRETS {
            assert!(!fragment.contains(value), "no secret in the fragment");
        }
        pixmesh_tests::envoy::validate_with_env(
            &merge(&pixmesh_tests::foreign::config(8080, ""), &fragment),
            &env,
        )
        .unwrap();
    }
}
