//! End-to-end through Envoy, with Garage: a thumbor route with `"result_keys": "imagor"` finds
//! the renditions an imagor deployment stored, under the keys imagor gave them, in both of
//! imagor's result path styles (`IMAGOR_RESULT_STORAGE_PATH_STYLE` unset and `digest`), and
//! stores its own there. The expected keys are imagor's: the path after `unsafe/` as
//! received, or the SHA-1 of it split `ab/cd/ef…` (`printf %s PATH | sha1sum`), with
//! `format(webp)` added where imagor's `IMAGOR_AUTO_WEBP` adds it. A rendition imagor stored
//! carries none of pixmesh's metadata: it is current unless older than the source, as imagor's
//! `IMAGOR_MODIFIED_TIME_CHECK` decides. With `plus_as_space` a `+` in the image is a space, as
//! imagor reads it.

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use pixmesh_tests::{Garage, Stack, tools};

const RESULTS_BUCKET: &str = "results";
const RESULTS_DIR: &str = "imagor-results";
const WEBP_ACCEPT: &str = "image/avif,image/webp,*/*;q=0.8";

/// The result key of `path` in imagor's layout, for each path style: `digest`, or the path
/// escaped as imagor's S3 storage escapes keys (`imagorpath.Normalize` with its default safe
/// characters `!"()*`: `:` is `%3A`) for the unset style (pixmesh's `default`).
fn imagor_key(style: &str, path: &str) -> String {
    let (digest, escaped) = match path {
        "300x200/a.jpg" => ("a5/a6/aa5c5c538873b8f9087f34802689cdc973c8", path),
        "fit-in/200x200/filters:format(webp)/a.jpg" => (
            "25/0b/ff459e0fa6708959f839c7bda77df141302e",
            "fit-in/200x200/filters%3Aformat(webp)/a.jpg",
        ),
        "100x100/a.jpg" => ("0d/68/c738c0d2b1e17b38ab4db059eb2621688df6", path),
        other => panic!("no key written down for {other}"),
    };
    match style {
        "digest" => format!("{RESULTS_DIR}/{digest}"),
        _ => format!("{RESULTS_DIR}/{escaped}"),
    }
}

struct World {
    garage: Garage,
    stack: Stack,
}

impl World {
    async fn start(style: &str, call_mode: bool) -> World {
        let garage = Garage::start().await;
        garage.create_bucket(RESULTS_BUCKET).await;
        let sidecar = format!(
            "[storages.photos]\n{}\n[storages.results]\n{}\n\
             [result_storage]\nstorage = \"results\"\nbase_dir = \"{RESULTS_DIR}\"\n\
             path_style = \"{style}\"\n",
            garage.storage_toml(garage.default_bucket()),
            garage.storage_toml(RESULTS_BUCKET),
        );
        let filter = serde_json::json!({ "routes": [
            { "prefix": "/im/", "storage": "photos", "allow_unsafe": true,
              "result_keys": "imagor", "auto_format": true, "plus_as_space": true },
            { "prefix": "/th/", "storage": "photos", "allow_unsafe": true },
        ]});
        let mut builder = Stack::builder(&filter.to_string(), &sidecar);
        if call_mode {
            builder = builder.call_mode();
        }
        let stack = builder.start().await;
        World { garage, stack }
    }

    async fn put_source(&self) {
        let jpeg = tools::test_image("medium.jpg");
        (self.garage)
            .put(self.garage.default_bucket(), "a.jpg", jpeg)
            .await;
    }

    /// What imagor would have stored: an image with its content type and no pixmesh metadata.
    async fn put_imagor_rendition(&self, key: &str, png: Vec<u8>) {
        (self.garage.s3_client().put_object())
            .bucket(RESULTS_BUCKET)
            .key(key)
            .content_type("image/png")
            .body(ByteStream::from(png))
            .send()
            .await
            .unwrap();
    }

    async fn stored(&self, key: &str) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(bytes) = self.garage.get(RESULTS_BUCKET, key).await {
                return bytes;
            }
            let keys = self.garage.list(RESULTS_BUCKET, "").await;
            assert!(Instant::now() < deadline, "{key} never stored; {keys:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A small PNG that no render of the source could produce.
fn marker_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(7, 5, image::Rgb([255, 0, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// S3's modification times are whole seconds: wait for the next one.
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

async fn imagor_renditions_are_found(style: &str, call_mode: bool) {
    let w = World::start(style, call_mode).await;
    w.put_source().await;
    next_second().await;

    // A rendition imagor stored after the source: served as stored.
    let stored = marker_png();
    let key = imagor_key(style, "300x200/a.jpg");
    w.put_imagor_rendition(&key, stored.clone()).await;
    let r = w.stack.get("/im/unsafe/300x200/a.jpg", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert!(
        r.body == stored,
        "{key}: rendered instead of read from result storage"
    );

    // A miss with auto WebP is stored under the name imagor's AUTO_WEBP gives it.
    let accept = [("accept", WEBP_ACCEPT)];
    let r = w
        .stack
        .get("/im/unsafe/fit-in/200x200/a.jpg", &accept)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/webp"));
    let key = imagor_key(style, "fit-in/200x200/filters:format(webp)/a.jpg");
    assert!(w.stored(&key).await == r.body, "{key} holds another image");

    // A rendition imagor stored before the source changed: rendered again.
    let key = imagor_key(style, "100x100/a.jpg");
    w.put_imagor_rendition(&key, stored.clone()).await;
    next_second().await;
    w.put_source().await;
    let r = w.stack.get("/im/unsafe/100x100/a.jpg", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    let img = image::load_from_memory(&r.body).unwrap();
    assert_eq!((img.width(), img.height()), (100, 100));
}

/// imagor reads a `+` in the image as a space (its loader query-unescapes the path); a route
/// with `plus_as_space` reads the same object, and names the rendition as imagor does, where
/// thumbor's reading (a `+`) finds another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plus_in_the_image_reads_the_object_imagor_reads() {
    let w = World::start("digest", false).await;
    let jpeg = tools::test_image("medium.jpg");
    (w.garage)
        .put(w.garage.default_bucket(), "a copy.jpg", jpeg)
        .await;
    let accept = [("accept", WEBP_ACCEPT)];
    let r = w.stack.get("/im/unsafe/300x200/a+copy.jpg", &accept).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // `printf %s '300x200/filters:format(webp)/a copy.jpg' | sha1sum`
    let key = format!("{RESULTS_DIR}/f1/33/7605ebe8aa119a792a58c82f0b4a0826d921");
    assert!(w.stored(&key).await == r.body, "{key} holds another image");
    let r = w.stack.get("/th/unsafe/300x200/a+copy.jpg", &[]).await;
    assert_eq!(r.status, 404, "thumbor's reading: the object a+copy.jpg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imagor_digest_renditions_are_found_and_stored_under_imagors_keys() {
    imagor_renditions_are_found("digest", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imagor_path_renditions_are_found_and_stored_under_imagors_keys() {
    imagor_renditions_are_found("default", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imagor_renditions_are_found_in_call_mode() {
    imagor_renditions_are_found("digest", true).await;
}
