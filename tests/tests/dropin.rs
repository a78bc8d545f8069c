//! End-to-end: the peers' sizing modes, as their own test suites and documentation state them,
//! through Envoy in both modes (the transcoder and call mode). The source is a 2560×1600 photo
//! (`medium.jpg`), and a 1600×2560 one turned a quarter (`portrait.jpg`) for the adaptive modes.

use pixmesh_tests::{Stack, tools};

/// (path, width, height): what thumbor and imagor answer for each URL (thumbor's
/// `transformer.py`: fill enlarges unless `no_upscale()`, `full-fit-in` covers the box and
/// enlarges, `adaptive-` turns a box whose orientation differs from the source's).
const CASES: &[(&str, u32, u32)] = &[
    // Fill enlarges a small region to the box (was 190×127: never enlarged).
    ("/img/unsafe/10x10:200x200/300x200/a.jpg", 300, 200),
    ("/img/unsafe/4000x0/a.jpg", 4000, 2500),
    (
        "/img/unsafe/10x10:200x200/300x200/filters:no_upscale()/a.jpg",
        190,
        127,
    ),
    // fit-in never enlarges unless asked.
    ("/img/unsafe/fit-in/4000x4000/a.jpg", 2560, 1600),
    (
        "/img/unsafe/fit-in/4000x4000/filters:upscale()/a.jpg",
        4000,
        2500,
    ),
    // full-fit-in: each side at least the box's, nothing cropped.
    ("/img/unsafe/full-fit-in/300x300/a.jpg", 480, 300),
    ("/img/unsafe/full-fit-in/2000x2000/a.jpg", 3200, 2000),
    // adaptive: the portrait box turns for the landscape source, not for the portrait one.
    ("/img/unsafe/adaptive-fit-in/200x400/a.jpg", 320, 200),
    ("/img/unsafe/adaptive-fit-in/200x400/portrait.jpg", 200, 320),
    ("/img/unsafe/adaptive-full-fit-in/200x400/a.jpg", 400, 250),
    // ImageKit's c-at_least: the same cover.
    ("/ik/tr:w-300,h-300,c-at_least/a.jpg", 480, 300),
    // imgproxy's rt:auto (what its Python client writes by default): fill when the box and
    // the source have the same orientation, else fit.
    ("/ip/insecure/rs:auto:300:200/plain/a.jpg", 300, 200),
    ("/ip/insecure/rs:auto:200:300/plain/a.jpg", 200, 125),
    ("/ip/insecure/rs:auto:200:300/plain/portrait.jpg", 200, 300),
];

async fn stack(call_mode: bool) -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let photo = tools::testdata_images().join("medium.jpg");
    std::fs::copy(&photo, dir.path().join("a.jpg")).unwrap();
    let portrait = image::open(&photo).unwrap().rotate90();
    portrait.save(dir.path().join("portrait.jpg")).unwrap();
    let sidecar = format!(
        "[storages.photos]\ntype = \"local\"\nroot = {:?}\n",
        dir.path().display().to_string()
    );
    let filter = serde_json::json!({ "routes": [
        { "prefix": "/img/", "storage": "photos", "allow_unsafe": true },
        { "prefix": "/ik/", "grammar": "imagekit", "storage": "photos", "allow_unsafe": true },
        { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos", "allow_unsafe": true },
    ]});
    let mut builder = Stack::builder(&filter.to_string(), &sidecar);
    if call_mode {
        builder = builder.call_mode();
    }
    (builder.start().await, dir)
}

async fn sizes_as_the_peers_answer(call_mode: bool) {
    let (stack, _dir) = stack(call_mode).await;
    let mut failures = Vec::new();
    for &(path, width, height) in CASES {
        let r = stack.get(path, &[]).await;
        let got = match (r.status, image::load_from_memory(&r.body)) {
            (200, Ok(img)) => (img.width(), img.height()),
            (status, _) => {
                failures.push(format!("{path}: {status} {}", r.text().trim()));
                continue;
            }
        };
        if got != (width, height) {
            failures.push(format!("{path}: {}x{}, not {width}x{height}", got.0, got.1));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizing_modes_answer_as_thumbor_imagor_and_imagekit() {
    sizes_as_the_peers_answer(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizing_modes_answer_the_same_in_call_mode() {
    sizes_as_the_peers_answer(true).await;
}
