//! Storage behaviour end to end against a real Garage: source change invalidation, write options
//! (storage class, ACL, tagging), expiration, result-storage write failures, fallbacks and the
//! `check` subcommand.
//!
//! Most tests call the sidecar's service in-process (no Envoy: the storage behaviour is the
//! sidecar's); the invalidation test goes through the whole stack.

use std::sync::Arc;
use std::time::Duration;

use image::GenericImageView;
use pixmesh_core::keys::SafeChars;
use pixmesh_core::render::result_key;
use pixmesh_proto::google::api::HttpBody;
use pixmesh_proto::v1;
use pixmesh_proto::v1::image_service_server::ImageService as _;
use pixmesh_sidecar::config::Config;
use pixmesh_sidecar::serving::{grpc::ImageService, state::Renderer};
use pixmesh_tests::{Garage, Stack, eventually, ports, tools};

const RESULTS_BUCKET: &str = "results";
const RESULTS_DIR: &str = "renditions";
/// `fit-in/100x100` of medium.jpg (1280x800) and of flower.webp (480x360).
const MEDIUM_100: (u32, u32) = (100, 63);
const FLOWER_100: (u32, u32) = (100, 75);

/// `[storages.NAME]` for `bucket` on `garage` with the given key, plus `extra` lines.
fn s3_storage(garage: &Garage, name: &str, bucket: &str, key: (&str, &str), extra: &str) -> String {
    format!(
        "[storages.{name}]\ntype = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{}\"\n\
         region = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n{extra}\n",
        garage.endpoint(),
        garage.region(),
        key.0,
        key.1,
    )
}

/// The default key of `garage`.
fn default_key(garage: &Garage) -> (&str, &str) {
    (garage.access_key(), garage.secret_key())
}

/// A sidecar config: storage `photos` on the default bucket, storage `results` on
/// [`RESULTS_BUCKET`] with `results_extra`, and `[result_storage]` with `result_extra`.
fn config(garage: &Garage, results_extra: &str, result_extra: &str) -> String {
    format!(
        "[limits]\nstorage_timeout_ms = 5000\n{}{}\
         [result_storage]\nstorage = \"results\"\nbase_dir = \"{RESULTS_DIR}\"\n{result_extra}\n",
        photos(garage),
        s3_storage(
            garage,
            "results",
            RESULTS_BUCKET,
            default_key(garage),
            results_extra
        ),
    )
}

/// `[storages.results]` on [`RESULTS_BUCKET`] with a new key that may read but not write it,
/// and that key's secret.
async fn read_only_results(garage: &Garage) -> (String, String) {
    let (key, secret) = garage.create_key("results-read-only").await;
    garage.allow(RESULTS_BUCKET, &key, true, false).await;
    let fragment = s3_storage(garage, "results", RESULTS_BUCKET, (&key, &secret), "");
    (fragment, secret)
}

/// `[storages.photos]` on the default bucket with the default key.
fn photos(garage: &Garage) -> String {
    s3_storage(
        garage,
        "photos",
        garage.default_bucket(),
        default_key(garage),
        "",
    )
}

/// The in-process service for `toml`, and its renderer (for its counters).
async fn service(toml: &str) -> (ImageService, Arc<Renderer>) {
    let config = Config::from_toml(toml).unwrap_or_else(|e| panic!("config: {e}\n{toml}"));
    let renderer = Arc::new(
        pixmesh_sidecar::serving::renderer(&config)
            .await
            .expect("renderer"),
    );
    (
        pixmesh_tests::vouch::service(Arc::clone(&renderer)),
        renderer,
    )
}

/// `fit-in/100x100` of `storage`/`key`.
fn request(storage: &str, key: &str) -> v1::RenderRequest {
    v1::RenderRequest {
        storage: storage.into(),
        key: key.into(),
        width: 100,
        height: 100,
        fit: v1::Fit::FitIn.into(),
        ..Default::default()
    }
}

/// Renders `storage`/`key` at `fit-in/100x100`.
async fn render(svc: &ImageService, storage: &str, key: &str) -> Result<HttpBody, tonic::Status> {
    svc.render_unary(pixmesh_tests::vouch::vouched(request(storage, key)))
        .await
        .map(tonic::Response::into_inner)
}

/// The dimensions of a rendered image.
fn dims(bytes: &[u8]) -> (u32, u32) {
    image::load_from_memory(bytes)
        .expect("an image")
        .dimensions()
}

/// The `x-http-status` a failed render carries.
fn http_status(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("x-http-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The result-storage key of `fit-in/100x100` of `storage`/`key`.
fn stored_key(storage: &str, key: &str) -> String {
    let canonical = pixmesh_sidecar::serving::wire::to_core(request(storage, key))
        .expect("a valid request")
        .canonical();
    result_key(RESULTS_DIR, &canonical, &SafeChars::default())
}

/// The user metadata of `bucket`/`key`, `None` when it does not exist.
async fn metadata(
    garage: &Garage,
    bucket: &str,
    key: &str,
) -> Option<std::collections::HashMap<String, String>> {
    let out = garage
        .s3_client()
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .ok()?;
    Some(out.metadata().cloned().unwrap_or_default())
}

/// Garage with [`RESULTS_BUCKET`] and `medium.jpg` uploaded as `a.jpg`.
async fn garage() -> Garage {
    let garage = Garage::start().await;
    garage.create_bucket(RESULTS_BUCKET).await;
    garage
        .put(
            garage.default_bucket(),
            "a.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    garage
}

/// The source's current ETag in the default bucket.
async fn source_etag(garage: &Garage, key: &str) -> String {
    garage
        .s3_client()
        .head_object()
        .bucket(garage.default_bucket())
        .key(key)
        .send()
        .await
        .expect("head source")
        .e_tag()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until the rendition of `photos`/`key` in result storage was made from the source's
/// current ETag.
async fn wait_for_rendition_of_current_source(garage: &Garage, key: &str) {
    let etag = source_etag(garage, key).await;
    let stored = stored_key("photos", key);
    eventually(
        "rendition of the current source in result storage",
        || async {
            metadata(garage, RESULTS_BUCKET, &stored)
                .await
                .is_some_and(|m| m.get("pixmesh-source-etag") == Some(&etag))
        },
    )
    .await;
}

/// Renders `photos`/`a.jpg` (medium.jpg), waits until result storage holds the rendition, then
/// replaces the source with flower.webp.
async fn render_then_change_the_source(garage: &Garage, svc: &ImageService) {
    let first = render(svc, "photos", "a.jpg").await.expect("render");
    assert_eq!(dims(&first.data), MEDIUM_100);
    wait_for_rendition_of_current_source(garage, "a.jpg").await;
    garage
        .put(
            garage.default_bucket(),
            "a.jpg",
            tools::test_image("flower.webp"),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_source_is_rendered_again_through_the_stack() {
    let garage = garage().await;
    let filter = serde_json::json!({ "routes": [
        { "prefix": "/open/", "storage": "photos", "allow_unsafe": true },
    ]});
    let stack = Stack::builder(&filter.to_string(), &config(&garage, "", ""))
        .start()
        .await;
    let get = || stack.get("/open/unsafe/fit-in/100x100/a.jpg", &[]);

    let first = get().await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(dims(&first.body), MEDIUM_100);
    wait_for_rendition_of_current_source(&garage, "a.jpg").await;

    garage
        .put(
            garage.default_bucket(),
            "a.jpg",
            tools::test_image("flower.webp"),
        )
        .await;
    let second = get().await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(dims(&second.body), FLOWER_100, "stale rendition served");
    assert_ne!(first.header("etag"), second.header("etag"));
    // The stored rendition is overwritten with the new one.
    wait_for_rendition_of_current_source(&garage, "a.jpg").await;
    let stored = garage
        .get(RESULTS_BUCKET, &stored_key("photos", "a.jpg"))
        .await
        .expect("stored rendition");
    assert_eq!(dims(&stored), FLOWER_100);
    // A deleted source does not invalidate: the stored rendition is still served.
    garage
        .s3_client()
        .delete_object()
        .bucket(garage.default_bucket())
        .key("a.jpg")
        .send()
        .await
        .expect("delete source");
    let third = get().await;
    assert_eq!(third.status, 200, "{}", third.text());
    assert_eq!(dims(&third.body), FLOWER_100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_verify_source_a_changed_source_keeps_its_stored_rendition() {
    let garage = garage().await;
    let (svc, _) = service(&config(&garage, "", "verify_source = false")).await;
    render_then_change_the_source(&garage, &svc).await;
    let second = render(&svc, "photos", "a.jpg").await.expect("render");
    assert_eq!(dims(&second.data), MEDIUM_100, "served from result storage");
}

/// A 16×16 PNG of one opaque colour.
fn square(rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(16, 16, image::Rgb(rgb));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encode the square");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_watermark_is_rendered_again() {
    let garage = garage().await;
    let bucket = garage.default_bucket().to_owned();
    garage.put(&bucket, "wm.png", square([255, 0, 0])).await;
    let (svc, renderer) = service(&config(&garage, "", "report_errors = true")).await;
    // The watermark in the top-left corner of a PNG rendition.
    let req = v1::RenderRequest {
        watermark_storage: "photos".into(),
        watermark_key: "wm.png".into(),
        watermark_opacity: "1.0".into(),
        format: v1::Format::Png.into(),
        ..request("photos", "a.jpg")
    };
    let corner = || async {
        let body = svc
            .render_unary(pixmesh_tests::vouch::vouched(req.clone()))
            .await
            .expect("render")
            .into_inner();
        let img = image::load_from_memory(&body.data)
            .expect("a PNG")
            .to_rgb8();
        img.get_pixel(0, 0).0
    };
    let renders = || {
        renderer
            .stats
            .renders
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    assert_eq!(corner().await, [255, 0, 0]);
    assert_eq!(corner().await, [255, 0, 0], "served from result storage");
    assert_eq!(renders(), 1);

    garage.put(&bucket, "wm.png", square([0, 0, 255])).await;
    assert_eq!(corner().await, [0, 0, 255], "stale watermark served");
    assert_eq!(renders(), 2);
    assert_eq!(corner().await, [0, 0, 255]);
    assert_eq!(
        renders(),
        2,
        "the new rendition is served from result storage"
    );

    // A deleted watermark does not invalidate, as a deleted source does not.
    garage
        .s3_client()
        .delete_object()
        .bucket(&bucket)
        .key("wm.png")
        .send()
        .await
        .expect("delete the watermark");
    assert_eq!(corner().await, [0, 0, 255]);
    assert_eq!(renders(), 2);
}

/// The write options as a `[storages.*]` fragment.
const WRITE_OPTIONS: &str = "storage_class = \"STANDARD_IA\"\nacl = \"private\"\n\
                             tagging = \"source=pixmesh&lifecycle=derived\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renditions_are_written_with_storage_class_acl_and_tagging_garage_ignores() {
    let garage = garage().await;
    let (svc, renderer) = service(&config(&garage, WRITE_OPTIONS, "report_errors = true")).await;
    // With report_errors, a refused write would fail the render.
    let rendered = render(&svc, "photos", "a.jpg").await.expect("render");
    assert_eq!(dims(&rendered.data), MEDIUM_100);
    assert_eq!(renderer.result_write_failures(), 0);
    let key = stored_key("photos", "a.jpg");
    let stored = garage
        .s3_client()
        .head_object()
        .bucket(RESULTS_BUCKET)
        .key(&key)
        .send()
        .await
        .expect("rendition written");
    // Garage 2.5 accepts the three headers and keeps none of them: no storage class on HEAD,
    // and the tagging and ACL read APIs are not implemented (501). The request side is
    // unit-tested in pixmesh-sidecar (storage::tests), the round trip against moto (moto.rs).
    assert_eq!(stored.storage_class(), None);
    let tagging = garage
        .s3_client()
        .get_object_tagging()
        .bucket(RESULTS_BUCKET)
        .key(&key)
        .send()
        .await;
    let code = tagging
        .map(|_| ())
        .map_err(|e| e.raw_response().map(|r| r.status().as_u16()));
    assert_eq!(
        code,
        Err(Some(501)),
        "Garage now implements tagging: test it here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_renditions_count_as_missing() {
    let garage = garage().await;
    let fresh = "verify_source = false\nexpiration_secs = 3600";
    let (long, _) = service(&config(&garage, "", fresh)).await;
    let expiring = "verify_source = false\nexpiration_secs = 1";
    let (short, _) = service(&config(&garage, "", expiring)).await;
    // Without verify_source only expiration can tell the source changed.
    render_then_change_the_source(&garage, &short).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let kept = render(&long, "photos", "a.jpg").await.expect("render");
    assert_eq!(dims(&kept.data), MEDIUM_100, "younger than an hour: served");
    let renewed = render(&short, "photos", "a.jpg").await.expect("render");
    assert_eq!(
        dims(&renewed.data),
        FLOWER_100,
        "older than 1 s: rendered again"
    );
    // ... and overwritten, so the long-lived sidecar now serves the new rendition too.
    wait_for_rendition_of_current_source(&garage, "a.jpg").await;
    let now = render(&long, "photos", "a.jpg").await.expect("render");
    assert_eq!(dims(&now.data), FLOWER_100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_write_failures_are_counted_and_fail_only_with_report_errors() {
    let garage = garage().await;
    let (results, _) = read_only_results(&garage).await;
    let config = |report: bool| {
        format!(
            "{}{results}[result_storage]\nstorage = \"results\"\nreport_errors = {report}\n",
            photos(&garage),
        )
    };

    let (quiet, renderer) = service(&config(false)).await;
    let rendered = render(&quiet, "photos", "a.jpg")
        .await
        .expect("served anyway");
    assert_eq!(dims(&rendered.data), MEDIUM_100);
    eventually("the failed background write is counted", || async {
        renderer.result_write_failures() == 1
    })
    .await;

    let (loud, renderer) = service(&config(true)).await;
    let err = render(&loud, "photos", "a.jpg")
        .await
        .expect_err("reported");
    assert_eq!(http_status(&err), "502", "{err:?}");
    assert_eq!(
        err.message(),
        "result storage: access to the object was denied by the storage"
    );
    assert!(!err.message().contains("GK"), "no key IDs: {err:?}");
    assert_eq!(renderer.result_write_failures(), 1);
    assert_eq!(garage.list(RESULTS_BUCKET, "").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallbacks_are_tried_in_order_when_not_found() {
    let garage = garage().await;
    for bucket in ["archive", "attic"] {
        garage.create_bucket(bucket).await;
    }
    garage
        .put("archive", "a.jpg", tools::test_image("flower.webp"))
        .await;
    garage
        .put("archive", "b.jpg", tools::test_image("flower.webp"))
        .await;
    garage
        .put("attic", "b.jpg", tools::test_image("medium.jpg"))
        .await;
    garage
        .put("attic", "c.jpg", tools::test_image("medium.jpg"))
        .await;
    let (no_rights, no_rights_secret) = garage.create_key("no-rights").await;
    let fallbacks = "fallbacks = [\"archive\", \"attic\"]";
    let key = default_key(&garage);
    let toml = [
        s3_storage(&garage, "photos", garage.default_bucket(), key, fallbacks),
        s3_storage(&garage, "archive", "archive", key, ""),
        s3_storage(&garage, "attic", "attic", key, ""),
        s3_storage(
            &garage,
            "denied",
            garage.default_bucket(),
            (&no_rights, &no_rights_secret),
            fallbacks,
        ),
    ]
    .concat();
    let (svc, _) = service(&toml).await;
    let got = |key: &'static str| {
        let svc = &svc;
        async move { dims(&render(svc, "photos", key).await.expect(key).data) }
    };
    assert_eq!(got("a.jpg").await, MEDIUM_100, "the storage itself first");
    assert_eq!(got("b.jpg").await, FLOWER_100, "then the first fallback");
    assert_eq!(got("c.jpg").await, MEDIUM_100, "then the second");
    let missing = render(&svc, "photos", "d.jpg").await.expect_err("nowhere");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let archive_alone = render(&svc, "archive", "c.jpg")
        .await
        .expect_err("no fallbacks");
    assert_eq!(
        archive_alone.code(),
        tonic::Code::NotFound,
        "not transitive"
    );
    let denied = render(&svc, "denied", "b.jpg").await.expect_err("denied");
    assert_eq!(
        denied.code(),
        tonic::Code::PermissionDenied,
        "only not-found moves on to a fallback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_good_config_and_names_each_failure() {
    let garage = garage().await;
    let good = Config::from_toml(&config(&garage, WRITE_OPTIONS, "")).unwrap();
    let lines = pixmesh_sidecar::storage::check::check(&good).await;
    let shown: Vec<String> = lines.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{shown:#?}");
    assert!(lines.iter().all(|l| l.ok), "{shown:#?}");
    assert!(shown[2].starts_with("ok   result_storage results: bucket results: wrote and deleted probe object renditions/.pixmesh-check/"), "{shown:#?}");
    assert_eq!(
        garage.list(RESULTS_BUCKET, "").await,
        Vec::<String>::new(),
        "the probe object is deleted"
    );

    let (no_rights, no_rights_secret) = garage.create_key("no-rights").await;
    let (results, ro_secret) = read_only_results(&garage).await;
    let closed = format!("http://127.0.0.1:{}", ports::free_port());
    let bad = format!(
        "[limits]\nstorage_timeout_ms = 3000\n{}{}{}{}[result_storage]\nstorage = \"results\"\n",
        s3_storage(
            &garage,
            "denied",
            garage.default_bucket(),
            (&no_rights, &no_rights_secret),
            ""
        ),
        s3_storage(
            &garage,
            "down",
            garage.default_bucket(),
            default_key(&garage),
            ""
        )
        .replace(&garage.endpoint(), &closed),
        s3_storage(
            &garage,
            "nobucket",
            "no-such-bucket",
            default_key(&garage),
            ""
        ),
        results,
    );
    let lines = pixmesh_sidecar::storage::check::check(&Config::from_toml(&bad).unwrap()).await;
    let shown: Vec<String> = lines.iter().map(ToString::to_string).collect();
    let text = shown.join("\n");
    assert_eq!(lines.len(), 5, "{text}");
    for (line, prefix, reason) in [
        (
            &shown[0],
            "FAIL storage denied: bucket images: HeadBucket: ",
            "access denied",
        ),
        (
            &shown[1],
            "FAIL storage down: bucket images: HeadBucket: ",
            "unreachable",
        ),
        (
            &shown[2],
            "FAIL storage nobucket: bucket no-such-bucket: HeadBucket: ",
            "does not exist",
        ),
        (&shown[3], "ok   storage results: ", "readable"),
        (
            &shown[4],
            "FAIL result_storage results: bucket results: PutObject ",
            "access denied",
        ),
    ] {
        assert!(
            line.starts_with(prefix) && line.contains(reason),
            "{line}\n---\n{text}"
        );
    }
    for secret in [
        no_rights_secret.as_ref(),
        ro_secret.as_ref(),
        garage.secret_key(),
    ] {
        assert!(!text.contains(secret), "{text}");
    }
}
