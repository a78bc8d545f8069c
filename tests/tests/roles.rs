//! The storage roles against a real Garage: the source storage (imagor's `S3_STORAGE_*`: a copy
//! of each source, read before the loader) and the per-role `path_prefix` of the result and
//! source storages (whole segments of the source key, stripped, the rest under the base dir).
//!
//! The sidecar's service is called in-process: the roles are the sidecar's.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use image::GenericImageView;
use pixmesh_core::keys::SafeChars;
use pixmesh_core::render::result_key;
use pixmesh_proto::google::api::HttpBody;
use pixmesh_proto::v1;
use pixmesh_proto::v1::image_service_server::ImageService as _;
use pixmesh_sidecar::config::Config;
use pixmesh_sidecar::serving::{grpc::ImageService, state::Renderer};
use pixmesh_tests::{Garage, eventually, tools};

const COPIES: &str = "copies";
const RESULTS: &str = "results";

/// `[storages.NAME]` for `bucket` on `garage` with `key`.
fn s3_storage(garage: &Garage, name: &str, bucket: &str, key: (&str, &str)) -> String {
    format!(
        "[storages.{name}]\ntype = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{}\"\n\
         region = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        garage.endpoint(),
        garage.region(),
        key.0,
        key.1,
    )
}

/// Storages `photos` (the default bucket), `copies` and `results`, all with the default key,
/// then `roles` (the `[source_storage]` / `[result_storage]` tables).
fn config(garage: &Garage, roles: &str) -> String {
    let key = (garage.access_key(), garage.secret_key());
    format!(
        "[limits]\nstorage_timeout_ms = 5000\n{}{}{}{roles}",
        s3_storage(garage, "photos", garage.default_bucket(), key),
        s3_storage(garage, "copies", COPIES, key),
        s3_storage(garage, "results", RESULTS, key),
    )
}

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

fn request(key: &str, size: u32) -> v1::RenderRequest {
    v1::RenderRequest {
        storage: "photos".into(),
        key: key.into(),
        width: size,
        height: size,
        fit: v1::Fit::FitIn.into(),
        ..Default::default()
    }
}

/// Renders `photos`/`key` at `fit-in/SIZExSIZE`.
async fn render(svc: &ImageService, key: &str, size: u32) -> Result<HttpBody, tonic::Status> {
    svc.render_unary(pixmesh_tests::vouch::vouched(request(key, size)))
        .await
        .map(tonic::Response::into_inner)
}

fn dims(bytes: &[u8]) -> (u32, u32) {
    image::load_from_memory(bytes)
        .expect("an image")
        .dimensions()
}

/// Garage with buckets [`COPIES`] and [`RESULTS`], medium.jpg at `uploads/a.jpg` and
/// `static/b.jpg`.
async fn garage() -> Garage {
    let garage = Garage::start().await;
    for bucket in [COPIES, RESULTS] {
        garage.create_bucket(bucket).await;
    }
    for key in ["uploads/a.jpg", "static/b.jpg"] {
        garage
            .put(
                garage.default_bucket(),
                key,
                tools::test_image("medium.jpg"),
            )
            .await;
    }
    garage
}

async fn delete(garage: &Garage, bucket: &str, key: &str) {
    garage
        .s3_client()
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("delete");
}

const SOURCE_ROLE: &str =
    "[source_storage]\nstorage = \"copies\"\nbase_dir = \"src\"\npath_prefix = \"uploads\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_copied_once_and_read_from_the_copy_when_the_original_is_gone() {
    let garage = garage().await;
    let (svc, renderer) = service(&config(&garage, SOURCE_ROLE)).await;
    let stats = &renderer.stats;

    // Outside the prefix: rendered, never copied.
    assert_eq!(
        dims(&render(&svc, "static/b.jpg", 100).await.unwrap().data),
        (100, 63)
    );
    let first = render(&svc, "uploads/a.jpg", 100).await.expect("render");
    assert_eq!(dims(&first.data), (100, 63));
    let medium = tools::test_image("medium.jpg");
    eventually(
        "the copy is written under base_dir, prefix stripped",
        || async { garage.get(COPIES, "src/a.jpg").await.as_ref() == Some(&medium) },
    )
    .await;
    assert_eq!(garage.list(COPIES, "").await, ["src/a.jpg"]);
    assert_eq!(stats.source_reads.load(Ordering::Relaxed), 2);
    assert_eq!(stats.source_copy_hits.load(Ordering::Relaxed), 0);

    delete(&garage, garage.default_bucket(), "uploads/a.jpg").await;
    let other = render(&svc, "uploads/a.jpg", 50)
        .await
        .expect("from the copy");
    assert_eq!(dims(&other.data), (50, 31));
    assert_eq!(stats.source_copy_hits.load(Ordering::Relaxed), 1);
    assert_eq!(
        stats.source_reads.load(Ordering::Relaxed),
        2,
        "the loader is not asked"
    );

    // Without the copy, the original is gone indeed; outside the prefix nothing is copied.
    delete(&garage, garage.default_bucket(), "static/b.jpg").await;
    let gone = render(&svc, "static/b.jpg", 50).await.expect_err("no copy");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let (plain, _) = service(&config(&garage, "")).await;
    let gone = render(&plain, "uploads/a.jpg", 50).await.expect_err("gone");
    assert_eq!(gone.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_copies_are_read_from_the_loader_again() {
    let garage = garage().await;
    let (long, _) = service(&config(
        &garage,
        &format!("{SOURCE_ROLE}expiration_secs = 3600\n"),
    ))
    .await;
    let (short, stats) = service(&config(
        &garage,
        &format!("{SOURCE_ROLE}expiration_secs = 1\n"),
    ))
    .await;
    render(&short, "uploads/a.jpg", 100).await.expect("render");
    let medium = tools::test_image("medium.jpg");
    eventually("the copy is written", || async {
        garage.get(COPIES, "src/a.jpg").await.as_ref() == Some(&medium)
    })
    .await;
    let flower = tools::test_image("flower.webp");
    garage
        .put(garage.default_bucket(), "uploads/a.jpg", flower.clone())
        .await;
    // A fresh copy is served as it is (a copy is not compared with its original).
    let kept = render(&long, "uploads/a.jpg", 50).await.expect("render");
    assert_eq!(dims(&kept.data), (50, 31), "younger than an hour: the copy");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let renewed = render(&short, "uploads/a.jpg", 60).await.expect("render");
    assert_eq!(dims(&renewed.data), (60, 45), "older than 1 s: the loader");
    assert_eq!(stats.stats.source_copy_hits.load(Ordering::Relaxed), 0);
    eventually("the copy is overwritten", || async {
        garage.get(COPIES, "src/a.jpg").await.as_ref() == Some(&flower)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_copy_is_counted_and_the_render_still_served() {
    let garage = garage().await;
    let (reader, secret) = garage.create_key("copies-read-only").await;
    garage.allow(COPIES, &reader, true, false).await;
    let key = (garage.access_key(), garage.secret_key());
    let toml = format!(
        "{}{}{SOURCE_ROLE}",
        s3_storage(&garage, "photos", garage.default_bucket(), key),
        s3_storage(&garage, "copies", COPIES, (&reader, &secret)),
    );
    let (svc, renderer) = service(&toml).await;
    let rendered = render(&svc, "uploads/a.jpg", 100).await.expect("served");
    assert_eq!(dims(&rendered.data), (100, 63));
    eventually("the failed copy is counted", || async {
        renderer
            .stats
            .source_copy_write_failures
            .load(Ordering::Relaxed)
            == 1
    })
    .await;
    assert_eq!(garage.list(COPIES, "").await, Vec::<String>::new());

    let lines = pixmesh_sidecar::storage::check::check(&Config::from_toml(&toml).unwrap()).await;
    let text: Vec<String> = lines.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{text:#?}");
    assert!(
        text[2].starts_with(
            "FAIL source_storage copies: bucket copies: PutObject src/.pixmesh-check/"
        ) && text[2].contains("access denied"),
        "{text:#?}"
    );
    assert!(!text.concat().contains(&secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_storage_keeps_only_sources_under_its_prefix_named_without_it() {
    let garage = garage().await;
    let roles = "[result_storage]\nstorage = \"results\"\nbase_dir = \"renditions\"\n\
                 path_prefix = \"uploads\"\nverify_source = false\nreport_errors = true\n";
    let (svc, _) = service(&config(&garage, roles)).await;
    render(&svc, "static/b.jpg", 100).await.expect("render");
    render(&svc, "uploads/a.jpg", 100).await.expect("render");
    // With report_errors the write is done before the answer: no waiting.
    let canonical = pixmesh_sidecar::serving::wire::to_core(request("a.jpg", 100))
        .unwrap()
        .canonical();
    let expected = result_key("renditions", &canonical, &SafeChars::default());
    assert_eq!(expected, "renditions/photos/fit-in/100x100/-/a.jpg");
    assert_eq!(
        garage.list(RESULTS, "").await,
        std::slice::from_ref(&expected)
    );

    // Served from there: replacing the stored rendition's bytes shows.
    garage
        .put(RESULTS, &expected, tools::test_image("flower.webp"))
        .await;
    let hit = render(&svc, "uploads/a.jpg", 100).await.expect("hit");
    assert_eq!(dims(&hit.data), (480, 360), "the stored object, as it is");
}
