//! End-to-end: URLs built by the peers' own client libraries, signed with their own code,
//! through Envoy: imgproxy's Node SDK (`@imgproxy/imgproxy-node`), ImageKit's JavaScript SDK
//! (`@imagekit/javascript`) and thumbor's `libthumbor`, pinned and installed by
//! `scripts/setup`. Each URL must come back with the geometry and format the SDK's
//! documentation promises for what it was asked. The source is a 2560×1600 photo.

use std::process::Command;

use pixmesh_tests::{Stack, tools};

const THUMBOR_SECRET: &str = "libthumbor-secret";
const IMGPROXY_KEY: &str = "736563726574";
const IMGPROXY_SALT: &str = "68656C6C6F";

/// What each client's URL must give: (label, width, height, content type).
const EXPECTED: &[(&str, u32, u32, &str)] = &[
    ("imgproxy fit", 300, 188, "image/jpeg"),
    ("imgproxy fill webp", 300, 200, "image/webp"),
    ("imgproxy width, base64 source", 300, 188, "image/jpeg"),
    ("imgproxy quality png", 200, 125, "image/png"),
    ("imagekit box", 300, 200, "image/jpeg"),
    ("imagekit chain", 200, 300, "image/jpeg"),
    ("imagekit format", 300, 188, "image/webp"),
    ("thumbor fill", 300, 200, "image/jpeg"),
    ("thumbor fit-in webp", 300, 188, "image/webp"),
    ("thumbor smart", 300, 200, "image/jpeg"),
    ("thumbor flip", 200, 125, "image/jpeg"),
];

/// Runs `cmd`, returning its `LABEL<TAB>PATH` lines.
fn urls(mut cmd: Command) -> Vec<(String, String)> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (label, path) = l.split_once('\t').expect("LABEL<TAB>PATH");
            (label.to_owned(), path.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_from_the_peers_client_libraries_render_as_documented() {
    let clients = tools::workspace_root().join("tests/clients");
    let mut node = Command::new("node");
    node.arg(clients.join("sdk_urls.cjs"))
        .env("NODE_PATH", tools::sdk_modules())
        .env("IMGPROXY_KEY", IMGPROXY_KEY)
        .env("IMGPROXY_SALT", IMGPROXY_SALT);
    let mut python = Command::new(tools::python());
    python
        .arg(clients.join("thumbor_urls.py"))
        .env("THUMBOR_SECRET", THUMBOR_SECRET);
    let mut all = urls(node);
    all.extend(urls(python));

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        tools::testdata_images().join("medium.jpg"),
        dir.path().join("a.jpg"),
    )
    .unwrap();
    let sidecar = format!(
        "[storages.photos]\ntype = \"local\"\nroot = {:?}\n",
        dir.path().display().to_string()
    );
    let filter = serde_json::json!({ "routes": [
        { "prefix": "/img/", "storage": "photos", "secret": THUMBOR_SECRET },
        { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos",
          "keys": [ { "key": IMGPROXY_KEY, "salt": IMGPROXY_SALT } ] },
        // The JavaScript SDK signs no URL (that needs the private key, server-side).
        { "prefix": "/ik/", "grammar": "imagekit", "storage": "photos", "allow_unsafe": true },
    ]});
    let stack = Stack::builder(&filter.to_string(), &sidecar).start().await;

    assert_eq!(all.len(), EXPECTED.len(), "{all:?}");
    let mut failures = Vec::new();
    for (label, path) in &all {
        let &(_, width, height, content_type) = EXPECTED
            .iter()
            .find(|e| e.0 == label)
            .unwrap_or_else(|| panic!("no expectation for {label}"));
        let r = stack.get(path, &[]).await;
        let got = match (r.status, image::load_from_memory(&r.body)) {
            (200, Ok(img)) => format!(
                "{}x{} {}",
                img.width(),
                img.height(),
                r.header("content-type").unwrap_or_default()
            ),
            (status, _) => format!("{status} {}", r.text().trim()),
        };
        if got != format!("{width}x{height} {content_type}") {
            failures.push(format!("{label} ({path}): got {got}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
