//! `scripts/run`: pixmesh on this machine, serving a directory of images (default: samples/).
//!
//! Envoy runs the real wasm filter and transcoder; the sidecar runs in this process with a
//! local-directory storage. Unsigned URLs are allowed on the demo route.

use std::path::PathBuf;

use pixmesh_tests::{Stack, tools};

const ROUTE: &str = "/img/";

#[tokio::main]
async fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| tools::workspace_root().join("samples"));
    let dir = dir
        .canonicalize()
        .unwrap_or_else(|e| panic!("image directory {}: {e}", dir.display()));
    let port: u16 = match std::env::var("PIXMESH_PORT") {
        Ok(p) => p.parse().expect("PIXMESH_PORT must be a port number"),
        Err(_) => 8080,
    };
    let sidecar = format!(
        "[storages.samples]\ntype = \"local\"\nroot = {}\n",
        toml_string(&dir.display().to_string())
    );
    let filter = format!(
        r#"{{"routes":[{{"prefix":"{ROUTE}","storage":"samples","allow_unsafe":true,
             "canonical_base_url":"http://127.0.0.1:{port}/img/unsafe"}}]}}"#
    );
    let stack = Stack::builder(&filter, &sidecar)
        .listen_port(port)
        .start()
        .await;

    let base = stack.url(ROUTE);
    println!("pixmesh is serving {} at {base}", dir.display());
    let mut images: Vec<String> = std::fs::read_dir(&dir)
        .expect("read image directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            let n = n.to_ascii_lowercase();
            [".jpg", ".jpeg", ".png", ".webp"]
                .iter()
                .any(|ext| n.ends_with(ext))
        })
        .collect();
    images.sort();
    for name in images.iter().take(3) {
        println!("  {base}unsafe/fit-in/400x400/{name}");
        println!("  {base}unsafe/300x300/filters:format(webp):quality(70)/{name}");
        println!("  {base}unsafe/-200x0/filters:format(png)/{name}");
    }
    println!("Press Ctrl-C to stop.");
    let _ = tokio::signal::ctrl_c().await;
    drop(stack);
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}
