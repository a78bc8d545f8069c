//! Key mapping and bucket routing end to end against a real Garage: escaped source keys
//! (imagor's S3 loader, ImageKit's "encode keys"), safe characters, a route's path prefix, the
//! wildcard bucket `*`, imagor's bucket routing file (rules, default, fallback, per-bucket
//! credentials), and result keys in both path styles.
//!
//! Through the whole stack where the filter takes part (path prefix, the seed's
//! `image+example.jpg`); the sidecar's service in-process for what is the sidecar's alone.

use std::sync::Arc;

use pixmesh_core::keys::SafeChars;
use pixmesh_core::render::{digest_result_key, result_key};
use pixmesh_proto::google::api::HttpBody;
use pixmesh_proto::v1;
use pixmesh_proto::v1::image_service_server::ImageService as _;
use pixmesh_sidecar::config::Config;
use pixmesh_sidecar::serving::{grpc::ImageService, state::Renderer};
use pixmesh_tests::{Garage, Stack, eventually, tools};

const RESULTS_BUCKET: &str = "results";
const RESULTS_DIR: &str = "renditions";

/// `[storages.NAME]` on `garage` for `bucket` with the default key, plus `extra` lines.
fn s3_storage(garage: &Garage, name: &str, bucket: &str, extra: &str) -> String {
    s3_storage_with_key(
        garage,
        name,
        bucket,
        (garage.access_key(), garage.secret_key()),
        extra,
    )
}

/// `[storages.NAME]` on `garage` for `bucket` with `key`, plus `extra` lines.
fn s3_storage_with_key(
    garage: &Garage,
    name: &str,
    bucket: &str,
    key: (&str, &str),
    extra: &str,
) -> String {
    format!(
        "[storages.{name}]\ntype = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{}\"\n\
         region = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n{extra}\n",
        garage.endpoint(),
        garage.region(),
        key.0,
        key.1,
    )
}

/// The in-process service for `toml`.
async fn service(toml: &str) -> ImageService {
    let config = Config::from_toml(toml).unwrap_or_else(|e| panic!("config: {e}\n{toml}"));
    let renderer: Arc<Renderer> = Arc::new(
        pixmesh_sidecar::serving::renderer(&config)
            .await
            .expect("renderer"),
    );
    pixmesh_tests::vouch::service(renderer)
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

/// The content type of a rendition of `storage`/`key` (it tells which source was read: the
/// sources here are a JPEG, a WebP and a PNG), or the HTTP status it failed with.
async fn source_type(svc: &ImageService, storage: &str, key: &str) -> Result<String, String> {
    match render(svc, storage, key).await {
        Ok(body) => Ok(body.content_type),
        Err(status) => Err(status
            .metadata()
            .get("x-http-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()),
    }
}

fn ok(content_type: &str) -> Result<String, String> {
    Ok(content_type.to_owned())
}

fn status(code: &str) -> Result<String, String> {
    Err(code.to_owned())
}

/// The seed's ImageKit example through the whole stack: with "encode keys" on, the URL's
/// `image+example.jpg` finds the object `image%2Bexample.jpg`; without, it does not. A route's
/// path prefix is required, stripped and the rest joined under its base dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_keys_and_path_prefixes_through_the_stack() {
    let garage = Garage::start().await;
    let bucket = garage.default_bucket();
    garage
        .put(
            bucket,
            "image%2Bexample.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    garage
        .put(
            bucket,
            "source/user-1.jpg",
            tools::test_image("flower.webp"),
        )
        .await;
    // What imagor's S3 loader wrote for `my photo.jpg` (imagorpath.Normalize: a space is `+`).
    garage
        .put(bucket, "my+photo.jpg", tools::test_image("medium.jpg"))
        .await;
    let sidecar = format!(
        "{}{}",
        s3_storage(&garage, "encoded", bucket, "escape_keys = true"),
        s3_storage(&garage, "plain", bucket, ""),
    );
    let filter = serde_json::json!({ "routes": [
        { "prefix": "/ik/", "grammar": "imagekit", "storage": "encoded", "allow_unsafe": true },
        { "prefix": "/ik-plain/", "grammar": "imagekit", "storage": "plain", "allow_unsafe": true },
        { "prefix": "/img/", "storage": "encoded", "allow_unsafe": true },
        { "prefix": "/pp/", "storage": "plain", "allow_unsafe": true,
          "base_dir": "source", "path_prefix": "avatars" },
    ]});
    let stack = Stack::builder(&filter.to_string(), &sidecar).start().await;

    let found = stack.get("/ik/tr:w-100/image+example.jpg", &[]).await;
    assert_eq!(found.status, 200, "{}", found.text());
    assert_eq!(found.header("content-type"), Some("image/jpeg"));
    let plain = stack.get("/ik-plain/tr:w-100/image+example.jpg", &[]).await;
    assert_eq!(plain.status, 404, "without encoding the key is read as is");
    let spaced = stack
        .get("/img/unsafe/fit-in/100x100/my%20photo.jpg", &[])
        .await;
    assert_eq!(
        spaced.status,
        200,
        "imagor's key for a space: {}",
        spaced.text()
    );

    let avatar = stack
        .get("/pp/unsafe/fit-in/100x100/avatars/user-1.jpg", &[])
        .await;
    assert_eq!(avatar.status, 200, "{}", avatar.text());
    assert_eq!(avatar.header("content-type"), Some("image/webp"));
    let outside = stack.get("/pp/unsafe/fit-in/100x100/user-1.jpg", &[]).await;
    assert_eq!(outside.status, 400);
    assert!(
        outside.text().contains("not under avatars/"),
        "{}",
        outside.text()
    );
}

/// Safe characters: `images/aa[1].gif` is found only with `safe_chars = "[]"` (the seed's
/// example); `--` reads keys unescaped; non-ASCII keys are escaped as UTF-8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_characters_choose_which_object_a_key_reads() {
    let garage = Garage::start().await;
    let bucket = garage.default_bucket();
    garage
        .put(bucket, "images/aa[1].gif", tools::test_image("anim.gif"))
        .await;
    garage
        .put(
            bucket,
            "images/aa%5B1%5D.gif",
            tools::test_image("medium.jpg"),
        )
        .await;
    garage
        .put(
            bucket,
            "%C3%BC/caf%C3%A9.png",
            tools::test_image("alpha.png"),
        )
        .await;
    let svc = service(&format!(
        "{}{}{}",
        s3_storage(&garage, "default", bucket, "escape_keys = true"),
        s3_storage(
            &garage,
            "brackets",
            bucket,
            "escape_keys = true\nsafe_chars = \"[]\""
        ),
        s3_storage(
            &garage,
            "none",
            bucket,
            "escape_keys = true\nsafe_chars = \"--\""
        ),
    ))
    .await;
    assert_eq!(
        source_type(&svc, "default", "images/aa[1].gif").await,
        ok("image/jpeg")
    );
    assert_eq!(
        source_type(&svc, "brackets", "images/aa[1].gif").await,
        ok("image/gif")
    );
    assert_eq!(
        source_type(&svc, "none", "images/aa[1].gif").await,
        ok("image/gif")
    );
    assert_eq!(
        source_type(&svc, "default", "ü/café.png").await,
        ok("image/png")
    );
    assert_eq!(source_type(&svc, "none", "ü/café.png").await, status("404"));
}

/// `bucket = "*"`: the first key segment is the bucket, with the storage's endpoint and
/// credentials, among `allowed_buckets`. An invalid bucket name is 400; a bucket that does not
/// exist, or is not allowed, is 404 (the credentials could read it: before, any was read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wildcard_bucket_is_the_first_key_segment() {
    const TENANTS: &str = "allowed_buckets = [\"tenant-a\", \"tenant-b\", \"no-such-bucket\"]";
    let garage = Garage::start().await;
    for bucket in ["tenant-a", "tenant-b", "not-a-tenant"] {
        garage.create_bucket(bucket).await;
    }
    garage
        .put(
            "not-a-tenant",
            "images/photo.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    garage
        .put(
            "tenant-a",
            "images/photo.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    garage
        .put(
            "tenant-b",
            "images/photo.jpg",
            tools::test_image("flower.webp"),
        )
        .await;
    garage
        .put("tenant-b", "a+b.png", tools::test_image("alpha.png"))
        .await;
    garage
        .put("tenant-b", "a%2Bb.png", tools::test_image("medium.jpg"))
        .await;
    let svc = service(&format!(
        "{}{}",
        s3_storage(&garage, "any", "*", TENANTS),
        s3_storage(
            &garage,
            "any-escaped",
            "*",
            &format!("escape_keys = true\n{TENANTS}")
        ),
    ))
    .await;
    let cases = [
        ("tenant-a/images/photo.jpg", ok("image/jpeg")),
        ("tenant-b/images/photo.jpg", ok("image/webp")),
        ("tenant-b/a+b.png", ok("image/png")),
        ("tenant-a/images/missing.jpg", status("404")),
        ("no-such-bucket/images/photo.jpg", status("404")),
        ("not-a-tenant/images/photo.jpg", status("404")),
        ("Tenant_A/images/photo.jpg", status("400")),
        ("photo.jpg", status("400")),
    ];
    for (key, want) in cases {
        assert_eq!(source_type(&svc, "any", key).await, want, "{key}");
    }
    // Escaping applies to the object key, not to the bucket.
    assert_eq!(
        source_type(&svc, "any-escaped", "tenant-b/a+b.png").await,
        ok("image/jpeg")
    );
}

/// imagor's `S3_LOADER_BUCKET=*` with `S3_LOADER_BASE_DIR` through the stack: the bucket is
/// the path's first segment and the base dir applies inside it (a route `wildcard_bucket`);
/// a segment that is no bucket name is 400 from the filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_bucket_route_reads_its_base_dir_inside_the_named_bucket() {
    let garage = Garage::start().await;
    let images = garage.default_bucket();
    for bucket in ["tenant-a", "tenant-b"] {
        garage.create_bucket(bucket).await;
    }
    let put = [
        ("tenant-a", "images/photo.jpg", "medium.jpg"),
        ("tenant-b", "images/photo.jpg", "flower.webp"),
        // Where the base dir would be read as the bucket without wildcard_bucket.
        (images, "tenant-a/photo.jpg", "alpha.png"),
    ];
    for (bucket, key, image) in put {
        garage.put(bucket, key, tools::test_image(image)).await;
    }
    let sidecar = s3_storage(
        &garage,
        "any",
        "*",
        &format!("allowed_buckets = [\"tenant-a\", \"tenant-b\", \"{images}\"]"),
    );
    let filter = serde_json::json!({ "routes": [
        { "prefix": "/w/", "storage": "any", "allow_unsafe": true, "wildcard_bucket": true,
          "base_dir": images },
    ]});
    let stack = Stack::builder(&filter.to_string(), &sidecar).start().await;
    for (path, status, content_type) in [
        ("tenant-a/photo.jpg", 200, Some("image/jpeg")),
        ("tenant-b/photo.jpg", 200, Some("image/webp")),
        ("tenant-c/photo.jpg", 404, None),
        ("Tenant_A/photo.jpg", 400, None),
    ] {
        let r = stack
            .get(&format!("/w/unsafe/fit-in/100x100/{path}"), &[])
            .await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        if content_type.is_some() {
            assert_eq!(r.header("content-type"), content_type, "{path}");
        }
    }
}

/// imagor's bucket routing file: rules, the default bucket, a fallback tried when an object is
/// not found, and a rule bucket reached with its own credentials (the storage's own key may not
/// read it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_file_routes_keys_to_buckets_with_fallbacks() {
    let garage = Garage::start().await;
    for bucket in ["route-sg", "route-default", "route-archive"] {
        garage.create_bucket(bucket).await;
    }
    // The storage's own key reads the default and archive buckets but not route-sg; the SG
    // rule carries a key that reads route-sg only.
    let (global, global_secret) = garage.create_key("routing-global").await;
    garage.allow("route-default", &global, true, false).await;
    garage.allow("route-archive", &global, true, false).await;
    let (sg_key, sg_secret) = garage.create_key("routing-sg").await;
    garage.allow("route-sg", &sg_key, true, false).await;
    garage
        .put("route-sg", "photo.jpg", tools::test_image("medium.jpg"))
        .await;
    garage
        .put(
            "route-default",
            "photo.jpg",
            tools::test_image("flower.webp"),
        )
        .await;
    garage
        .put("route-archive", "old.png", tools::test_image("alpha.png"))
        .await;

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bucket-routing.yaml");
    std::fs::write(
        &file,
        format!(
            "routing_pattern: \"^(?P<bucket>[A-Z]{{2}})/(?P<path>.+)$\"\n\
             default_bucket:\n  name: route-default\n\
             fallback_buckets:\n  - name: route-archive\n\
             rules:\n  - match: SG\n    bucket:\n      name: route-sg\n      region: {}\n      \
             access_key_id: {sg_key}\n      secret_access_key: {sg_secret}\n",
            garage.region()
        ),
    )
    .unwrap();
    let svc = service(&s3_storage_with_key(
        &garage,
        "routed",
        "*",
        (&global, &global_secret),
        &format!("routing_file = {:?}", file.display().to_string()),
    ))
    .await;
    let cases = [
        // The SG rule, with its own key.
        ("SG/photo.jpg", ok("image/jpeg")),
        // No rule for US: the default bucket; a key the pattern does not match: the default.
        ("US/photo.jpg", ok("image/webp")),
        ("photo.jpg", ok("image/webp")),
        // Not in the routed bucket: the fallback.
        ("SG/old.png", ok("image/png")),
        ("US/old.png", ok("image/png")),
        ("SG/missing.jpg", status("404")),
    ];
    for (key, want) in cases {
        assert_eq!(source_type(&svc, "routed", key).await, want, "{key}");
    }
    let lines = pixmesh_sidecar::storage::check::check(
        &Config::from_toml(&s3_storage_with_key(
            &garage,
            "routed",
            "*",
            (&global, &global_secret),
            &format!("routing_file = {:?}", file.display().to_string()),
        ))
        .unwrap(),
    )
    .await;
    assert!(lines.iter().all(|l| l.ok), "{lines:?}");
    let text = format!("{lines:?}");
    assert!(
        text.contains("route-sg") && !text.contains(&sg_secret),
        "{text}"
    );
}

/// Result keys: the default path style honours the result storage's safe characters, and the
/// digest style stores renditions at the SHA-1 of the canonical request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_keys_follow_the_path_style_and_safe_characters() {
    let garage = Garage::start().await;
    garage.create_bucket(RESULTS_BUCKET).await;
    garage
        .put(
            garage.default_bucket(),
            "a b.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    let with_results = |results_extra: &str, result_extra: &str| {
        format!(
            "{}{}[result_storage]\nstorage = \"results\"\nbase_dir = \"{RESULTS_DIR}\"\n{result_extra}\n",
            s3_storage(&garage, "photos", garage.default_bucket(), ""),
            s3_storage(&garage, "results", RESULTS_BUCKET, results_extra),
        )
    };
    let canonical = pixmesh_sidecar::serving::wire::to_core(v1::RenderRequest {
        format: v1::Format::Png.into(),
        ..request("photos", "a b.jpg")
    })
    .unwrap()
    .canonical();
    let render_png = |svc: ImageService| async move {
        svc.render_unary(pixmesh_tests::vouch::vouched(v1::RenderRequest {
            format: v1::Format::Png.into(),
            ..request("photos", "a b.jpg")
        }))
        .await
        .expect("render");
    };

    for (results_extra, result_extra, key) in [
        (
            "safe_chars = \"--\"",
            "",
            result_key(RESULTS_DIR, &canonical, &SafeChars::All),
        ),
        (
            "safe_chars = \":\"",
            "",
            result_key(
                RESULTS_DIR,
                &canonical,
                &SafeChars::from_setting(":").unwrap(),
            ),
        ),
        (
            "",
            "path_style = \"digest\"",
            digest_result_key(RESULTS_DIR, &canonical),
        ),
    ] {
        let svc = service(&with_results(results_extra, result_extra)).await;
        render_png(svc).await;
        eventually(&format!("rendition at {key}"), || async {
            garage.get(RESULTS_BUCKET, &key).await.is_some()
        })
        .await;
    }
    // The keys differ from one another and from the default style's.
    let all = garage.list(RESULTS_BUCKET, RESULTS_DIR).await;
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(
        all.iter()
            .any(|k| k.contains("filters:format(png)/-/a b.jpg")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|k| k.contains("filters:format(png)/-/a+b.jpg")),
        "{all:?}"
    );
    let default = result_key(RESULTS_DIR, &canonical, &SafeChars::default());
    assert!(!all.contains(&default), "{all:?}");
}
