//! End-to-end: every URL `scripts/run` prints answers 200 with an image, through the stack the
//! demo starts (Envoy, the filter, the sidecar serving `samples/`). The first link a newcomer
//! clicks must work.

use pixmesh_tests::demo::{directory_sidecar, example_paths, image_names, open_route};
use pixmesh_tests::{Stack, tools};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_url_the_demo_prints_is_an_image() {
    let samples = tools::workspace_root().join("samples");
    let names = image_names(&samples).unwrap();
    assert!(!names.is_empty(), "samples/ has images");
    let stack = Stack::builder(
        &open_route("samples", "https://images.example.com"),
        &directory_sidecar(&samples),
    )
    .start()
    .await;
    for name in names.iter().take(3) {
        for path in example_paths(name) {
            let r = stack.get(&path, &[]).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            image::load_from_memory(&r.body)
                .unwrap_or_else(|e| panic!("{path}: not an image: {e}"));
        }
    }
}
