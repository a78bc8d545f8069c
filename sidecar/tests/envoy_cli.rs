//! `pixmesh-sidecar envoy bootstrap` and `envoy fragment`, the real binary: what they write is
//! what the library renders (the e2e tests start Envoy with that), the real Envoy accepts the
//! bootstrap, and a refused filter configuration or inline secrets write nothing and exit 1.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use pixmesh_sidecar::envoy_config::{self, Bootstrap, Endpoint, Fragment, InlineSecrets};

const FILTER: &str = r#"{"routes":[
    {"prefix":"/img/","storage":"photos","secret":{"env":"THUMBOR_KEY"}},
    {"prefix":"/v1/ex/","grammar":"query","storage":"photos","allow_unsafe":true}]}"#;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pixmesh-sidecar"))
        .args(args)
        .env_clear()
        .output()
        .expect("run pixmesh-sidecar")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn bootstrap_writes_what_the_library_renders_and_envoy_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let filter = dir.path().join("filter.json");
    std::fs::write(&filter, FILTER).unwrap();
    let out = dir.path().join("envoy.yaml");
    let wasm = pixmesh_tests::tools::filter_wasm();
    let wasm = path(&wasm);
    let args = [
        "envoy",
        "bootstrap",
        "--filter-config",
        path(&filter),
        "--wasm",
        wasm,
        "--listen",
        "127.0.0.1:0",
        "--admin-port",
        "0",
        "--sidecar",
        "127.0.0.1:50051",
        "--route-timeout",
        "20s",
        "--out",
        path(&out),
    ];
    ok(&run(&args));
    let written = std::fs::read_to_string(&out).unwrap();
    let expected = envoy_config::bootstrap(&Bootstrap {
        filter_config: FILTER.into(),
        filter_wasm: wasm.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_port: 0,
        stats_port: 9902,
        health_path: "/healthz".into(),
        sidecar: Endpoint::loopback(50051),
        route_timeout: "20s".into(),
        inline_secrets: InlineSecrets::Refuse,
    })
    .unwrap();
    assert_eq!(written, expected);
    // No secret in it: the output is an ordinary file.
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o044, 0o044, "{mode:o}");
    pixmesh_tests::envoy::validate_with_env(
        &written,
        &[
            ("THUMBOR_KEY", "a-key"),
            (
                pixmesh_core::config::RENDER_KEY_ENV,
                pixmesh_tests::vouch::render_key(),
            ),
        ],
    )
    .unwrap();
    // Standard output without --out; the defaults are the pod's.
    let stdout = ok(&run(&[
        "envoy",
        "bootstrap",
        "-c",
        path(&filter),
        "--wasm",
        "/opt/pixmesh/pixmesh_filter.wasm",
    ]));
    assert!(stdout.contains("port_value: 8080") && stdout.contains("port_value: 9901"));
}

#[test]
fn fragment_writes_what_the_library_renders() {
    let dir = tempfile::tempdir().unwrap();
    let filter = dir.path().join("filter.json");
    std::fs::write(&filter, FILTER).unwrap();
    let stdout = ok(&run(&[
        "envoy",
        "fragment",
        "--filter-config",
        path(&filter),
        "--wasm",
        "/wasm/pixmesh_filter.wasm",
        "--sidecar",
        "pixmesh.images.svc:50051",
        "--cluster",
        "images",
    ]));
    let expected = envoy_config::fragment(&Fragment {
        filter_config: FILTER.into(),
        filter_wasm: "/wasm/pixmesh_filter.wasm".into(),
        sidecar: "pixmesh.images.svc:50051".parse().unwrap(),
        cluster: Some("images".into()),
        route_timeout: "30s".into(),
        inline_secrets: InlineSecrets::Refuse,
    })
    .unwrap();
    assert_eq!(stdout, expected);
}

#[test]
fn refused_configurations_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("envoy.yaml");
    let cases: &[(&str, &str)] = &[
        (
            r#"{"routes":[{"prefix":"/img/","storage":"photos"}]}"#,
            "set signing keys",
        ),
        (
            r#"{"routes":[{"prefix":"/img/","storage":"photos","secret":"inline-url-key"}]}"#,
            "routes[0].secret",
        ),
        (r#"{"routes":"#, "invalid filter config"),
    ];
    for (config, message) in cases {
        let filter = dir.path().join("filter.json");
        std::fs::write(&filter, config).unwrap();
        for sub in ["bootstrap", "fragment"] {
            let result = run(&[
                "envoy",
                sub,
                "-c",
                path(&filter),
                "--wasm",
                "f.wasm",
                "--out",
                path(&out),
            ]);
            assert_eq!(result.status.code(), Some(1), "{sub} {config}");
            let stderr = String::from_utf8_lossy(&result.stderr);
            assert!(stderr.contains(message), "{sub} {config}: {stderr}");
            assert!(!stderr.contains("inline-url-key"), "{stderr}");
            assert!(!out.exists(), "{sub} {config}: nothing written");
        }
    }
    let bad_sidecar = run(&[
        "envoy",
        "fragment",
        "-c",
        "x.json",
        "--wasm",
        "f.wasm",
        "--sidecar",
        "a b:1",
    ]);
    assert_eq!(
        bad_sidecar.status.code(),
        Some(2),
        "clap refuses the address"
    );
}

#[test]
fn inline_secrets_only_when_allowed_and_then_private() {
    let dir = tempfile::tempdir().unwrap();
    let filter = dir.path().join("filter.json");
    std::fs::write(
        &filter,
        r#"{"routes":[{"prefix":"/img/","storage":"photos","secret":"inline-url-key"}]}"#,
    )
    .unwrap();
    let out = dir.path().join("envoy.yaml");
    ok(&run(&[
        "envoy",
        "bootstrap",
        "-c",
        path(&filter),
        "--wasm",
        "f.wasm",
        "--allow-inline-secrets",
        "--out",
        path(&out),
    ]));
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("inline-url-key")
    );
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
