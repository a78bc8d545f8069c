//! The shipped Kubernetes manifests stay true to the code: `k8s/envoy.yaml` is the Envoy template
//! rendered for the pod in `k8s/deployment.yaml`, and Envoy, the filter and the sidecar all accept
//! the configuration files in `k8s/`.
//!
//! After changing the template or `k8s/filter.json`, regenerate `k8s/envoy.yaml` with
//! `PIXMESH_BLESS=1 cargo test -p pixmesh-tests --test k8s` (what
//! `pixmesh-sidecar envoy bootstrap --filter-config k8s/filter.json --wasm
//! /opt/pixmesh/pixmesh_filter.wasm` writes).

use std::path::PathBuf;

use pixmesh_core::router::Router;
use pixmesh_sidecar::config::Config;
use pixmesh_sidecar::envoy_config::{self, Bootstrap, Endpoint, InlineSecrets};
use pixmesh_tests::{envoy, tools};

/// Where the pod's init container puts the filter (the transcoder's descriptor is inline).
const WASM_IN_POD: &str = "/opt/pixmesh/pixmesh_filter.wasm";
/// The variable k8s/filter.json reads its URL-signing key from.
const URL_KEY_ENV: &str = "PIXMESH_URL_SIGNING_KEY";

fn k8s(file: &str) -> PathBuf {
    tools::workspace_root().join("k8s").join(file)
}

fn read(file: &str) -> String {
    let path = k8s(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `k8s/envoy.yaml` as the template renders it for the pod.
fn rendered_for_the_pod() -> String {
    let filter: serde_json::Value = serde_json::from_str(&read("filter.json")).unwrap();
    let sidecar = Config::from_toml(&read("sidecar.toml")).unwrap();
    envoy_config::bootstrap(&Bootstrap {
        filter_config: filter.to_string(),
        filter_wasm: WASM_IN_POD.into(),
        listen: "0.0.0.0:8080".parse().unwrap(),
        admin_port: 9901,
        sidecar: Endpoint::loopback(sidecar.listen.port()),
        route_timeout: "30s".into(),
        inline_secrets: InlineSecrets::Refuse,
    })
    .unwrap()
}

#[test]
fn envoy_yaml_is_the_rendered_template() {
    let expected = rendered_for_the_pod();
    if std::env::var_os("PIXMESH_BLESS").is_some() {
        std::fs::write(k8s("envoy.yaml"), &expected).unwrap();
    }
    assert!(
        read("envoy.yaml") == expected,
        "k8s/envoy.yaml is out of date; regenerate it with \
         PIXMESH_BLESS=1 cargo test -p pixmesh-tests --test k8s"
    );
}

#[test]
fn envoy_accepts_the_shipped_config() {
    // The same file with the pod's path pointing at this machine's build.
    let config =
        read("envoy.yaml").replace(WASM_IN_POD, &tools::filter_wasm().display().to_string());
    // The pod gives Envoy the render key from a Secret (deployment.yaml).
    envoy::validate_with_env(
        &config,
        &[
            (
                pixmesh_core::config::RENDER_KEY_ENV,
                pixmesh_tests::vouch::render_key(),
            ),
            (URL_KEY_ENV, "a-url-signing-key"),
        ],
    )
    .unwrap();
}

#[test]
fn filter_and_sidecar_accept_their_configs() {
    let env = |name: &str| (name == URL_KEY_ENV).then(|| "a-url-signing-key".to_owned());
    let filter = pixmesh_core::config::FilterConfig::from_json_with_env(
        read("filter.json").as_bytes(),
        &env,
    )
    .unwrap();
    Router::new(filter);
    assert!(
        !read("filter.json").contains("\"secret\": \""),
        "no secret is written in k8s/filter.json: the pod's environment has it"
    );
    let sidecar = Config::from_toml(&read("sidecar.toml")).unwrap();
    assert!(
        sidecar.listen.ip().is_loopback(),
        "the sidecar is only for the Envoy in its pod"
    );
}

#[test]
fn the_deployment_mounts_what_envoy_yaml_names() {
    let deployment = read("deployment.yaml");
    let kustomization = read("kustomization.yaml");
    for needle in [
        "/opt/pixmesh/pixmesh_filter.wasm",
        "mountPath: /opt/pixmesh",
        "/etc/envoy/envoy.yaml",
        "/etc/pixmesh/sidecar.toml",
        "containerPort: 8080",
        "name: PIXMESH_RENDER_KEY",
        "name: PIXMESH_URL_SIGNING_KEY",
    ] {
        assert!(
            deployment.contains(needle),
            "deployment.yaml lacks {needle}"
        );
    }
    for file in [
        "envoy.yaml",
        "sidecar.toml",
        "deployment.yaml",
        "service.yaml",
    ] {
        assert!(
            kustomization.contains(file),
            "kustomization.yaml lacks {file}"
        );
        assert!(k8s(file).is_file(), "k8s/{file} is missing");
    }
}
