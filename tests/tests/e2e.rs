//! End-to-end: a real Envoy running the real wasm filter and transcoder, the sidecar, and a real
//! Garage S3 server, all on 127.0.0.1. Images come from testdata/images.
//!
//! Every test builds its own [`World`] so tests can run in parallel and mutate their buckets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use image::GenericImageView;
use pixmesh_core::keys::SafeChars;
use pixmesh_core::render::{RenderRequest, result_key};
use pixmesh_core::sign::{HashAlg, ThumborSigner};
use pixmesh_core::thumbor::ThumborPath;
use pixmesh_proto::google::api::HttpBody;
use pixmesh_tests::http::Response;
use pixmesh_tests::{Garage, Stack, ports, tools};

const SECRET: &str = "e2e-secret";
const CANONICAL_BASE: &str = "https://images.example.com";
const RESULTS_BUCKET: &str = "results";
const RESULTS_DIR: &str = "renditions";

/// Garage with the test images uploaded, and the pixmesh stack in front of it.
struct World {
    garage: Garage,
    stack: Stack,
}

impl World {
    async fn start() -> World {
        let garage = Garage::start().await;
        garage.create_bucket(RESULTS_BUCKET).await;
        let (no_rights_key, no_rights_secret) = garage.create_key("no-rights").await;
        for name in ["medium.jpg", "flower.webp", "alpha.png"] {
            garage
                .put(garage.default_bucket(), name, tools::test_image(name))
                .await;
        }
        let s3 = |bucket: &str, endpoint: &str, key: &str, secret: &str| {
            format!(
                "type = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\n\
                 region = \"{}\"\naccess_key_id = \"{key}\"\nsecret_access_key = \"{secret}\"\n",
                garage.region()
            )
        };
        let (ep, key, secret) = (garage.endpoint(), garage.access_key(), garage.secret_key());
        let closed = format!("http://127.0.0.1:{}", ports::free_port());
        let sidecar = format!(
            "[limits]\nstorage_timeout_ms = 3000\n\
             [storages.photos]\n{}\n[storages.results]\n{}\n\
             [storages.denied]\n{}\n[storages.down]\n{}\n\
             [result_storage]\nstorage = \"results\"\nbase_dir = \"{RESULTS_DIR}\"\n",
            s3(garage.default_bucket(), &ep, key, secret),
            s3(RESULTS_BUCKET, &ep, key, secret),
            s3(
                garage.default_bucket(),
                &ep,
                &no_rights_key,
                &no_rights_secret
            ),
            s3(garage.default_bucket(), &closed, key, secret),
        );
        let filter = serde_json::json!({ "routes": [
            { "prefix": "/img/", "storage": "photos", "secret": SECRET,
              "canonical_base_url": CANONICAL_BASE },
            { "prefix": "/open/", "storage": "photos", "allow_unsafe": true },
            { "prefix": "/denied/", "storage": "denied", "allow_unsafe": true },
            { "prefix": "/down/", "storage": "down", "allow_unsafe": true },
            { "prefix": "/nowhere/", "storage": "no-such-storage", "allow_unsafe": true },
        ]});
        let stack = Stack::builder(&filter.to_string(), &sidecar).start().await;
        World { garage, stack }
    }

    /// `/img/<signature>/<signed>`.
    fn signed(signed: &str) -> String {
        let sig = ThumborSigner::new(SECRET, HashAlg::Sha1, None).sign(signed);
        format!("/img/{sig}/{signed}")
    }

    async fn get(&self, path: &str) -> Response {
        self.stack.get(path, &[]).await
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.garage
            .put(self.garage.default_bucket(), key, bytes)
            .await;
    }
}

fn decode(r: &Response) -> image::DynamicImage {
    image::load_from_memory(&r.body).unwrap_or_else(|e| {
        panic!(
            "status {} body is not an image ({e}): {}",
            r.status,
            r.text()
        )
    })
}

fn assert_image(r: &Response, content_type: &str, dims: (u32, u32)) {
    assert_eq!(r.status, 200, "body: {}", r.text());
    assert_eq!(r.header("content-type"), Some(content_type));
    assert_eq!(decode(r).dimensions(), dims);
    assert_eq!(r.header("grpc-status"), None, "leaked gRPC status");
    assert_eq!(r.header("x-http-status"), None, "leaked internal status");
}

fn assert_status(r: &Response, status: u16, body_contains: &str) {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert!(
        r.text().contains(body_contains),
        "expected {body_contains:?} in the {status} body, got {:?}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resizes_with_fit_in_fill_and_stretch_and_never_upscales() {
    let w = World::start().await;
    let r = w.get("/open/unsafe/fit-in/320x320/medium.jpg").await;
    assert_image(&r, "image/jpeg", (320, 200));
    let r = w.get("/open/unsafe/200x200/medium.jpg").await;
    assert_image(&r, "image/jpeg", (200, 200));
    let r = w.get("/open/unsafe/stretch/100x300/medium.jpg").await;
    assert_image(&r, "image/jpeg", (100, 300));
    let r = w.get("/open/unsafe/fit-in/1000x1000/flower.webp").await;
    assert_image(&r, "image/webp", (480, 360));
    let r = w
        .get("/open/unsafe/fit-in/1000x1000/filters:upscale()/flower.webp")
        .await;
    assert_image(&r, "image/webp", (1000, 750));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converts_formats_with_quality() {
    let w = World::start().await;
    let r = w
        .get("/open/unsafe/fit-in/240x0/filters:format(png)/flower.webp")
        .await;
    assert_image(&r, "image/png", (240, 180));
    let r = w
        .get("/open/unsafe/300x200/filters:format(webp):quality(60)/medium.jpg")
        .await;
    assert_image(&r, "image/webp", (300, 200));
    let low = w
        .get("/open/unsafe/300x200/filters:quality(20)/medium.jpg")
        .await;
    let high = w
        .get("/open/unsafe/300x200/filters:quality(95)/medium.jpg")
        .await;
    assert_image(&low, "image/jpeg", (300, 200));
    assert!(
        low.body.len() < high.body.len(),
        "quality changes the encoding"
    );
    let r = w.get("/open/unsafe/fit-in/192x192/alpha.png").await;
    assert_image(&r, "image/png", (192, 120));
    assert!(
        decode(&r).color().has_alpha(),
        "PNG keeps its alpha channel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_get_the_canonical_link_header() {
    let w = World::start().await;
    let r = w.get(&World::signed("fit-in/320x320/medium.jpg")).await;
    assert_image(&r, "image/jpeg", (320, 200));
    assert_eq!(
        r.header("link"),
        Some("<https://images.example.com/medium.jpg>; rel=\"canonical\"")
    );
    assert!(r.header("etag").is_some_and(|e| e.starts_with('"')));
    assert_eq!(r.header("cache-control"), Some("public, max-age=31536000"));
    assert!(
        r.header("last-modified")
            .is_some_and(|v| v.ends_with(" GMT"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_unsigned_badly_signed_and_malformed_urls() {
    let w = World::start().await;
    let r = w.get("/img/unsafe/fit-in/320x320/medium.jpg").await;
    assert_status(&r, 403, "unsigned URLs are not allowed");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let tampered = World::signed("fit-in/320x320/medium.jpg").replace("320x320", "640x640");
    assert_status(&w.get(&tampered).await, 403, "invalid signature");
    assert_status(
        &w.get("/open/unsafe/filters:format(webp/medium.jpg").await,
        400,
        "balanced",
    );
    assert_status(&w.get("/open/unsafe/../medium.jpg").await, 400, "..");
    assert_status(
        &w.get("/open/unsafe/filters:equalize()/medium.jpg").await,
        501,
        "filter equalize",
    );
    assert_status(
        &w.get("/_pixmesh/v1/render?storage=photos&key=medium.jpg")
            .await,
        404,
        "not found",
    );
    assert_status(
        &w.get("/pixmesh.v1.ImageService/Health").await,
        404,
        "not found",
    );
    assert_status(&w.get("/elsewhere").await, 404, "not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_storage_failures_to_statuses() {
    let w = World::start().await;
    assert_status(
        &w.get("/open/unsafe/300x300/missing.jpg").await,
        404,
        "not found",
    );
    assert_status(
        &w.get("/denied/unsafe/300x300/medium.jpg").await,
        403,
        "denied",
    );
    let started = Instant::now();
    assert_status(
        &w.get("/down/unsafe/300x300/medium.jpg").await,
        503,
        "unreachable",
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no retry storm"
    );
    assert_status(
        &w.get("/nowhere/unsafe/a.jpg").await,
        400,
        "unknown storage",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_unsupported_and_corrupt_images() {
    let w = World::start().await;
    w.put(
        "noise.jpg",
        (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
    )
    .await;
    assert_status(&w.get("/open/unsafe/100x100/noise.jpg").await, 415, "");
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&[0; 64]);
    w.put("scan.tif", tiff).await;
    assert_status(&w.get("/open/unsafe/100x100/scan.tif").await, 415, "");
    w.put("broken.png", corrupt_png()).await;
    assert_status(&w.get("/open/unsafe/100x100/broken.png").await, 422, "");
}

/// A PNG whose header is valid and whose pixel data is not.
fn corrupt_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 0]));
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let idat = png.windows(4).position(|w| w == b"IDAT").unwrap();
    for b in &mut png[idat + 6..idat + 40] {
        *b ^= 0x5a;
    }
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_renditions_to_result_storage_and_serves_them_from_there() {
    let w = World::start().await;
    let jpeg = std::fs::read(tools::testdata_images().join("medium.jpg")).unwrap();
    w.put("cached.jpg", jpeg).await;
    let path = "fit-in/320x320/filters:format(webp)/cached.jpg";
    let first = w.get(&format!("/open/unsafe/{path}")).await;
    assert_image(&first, "image/webp", (320, 200));

    let transform = ThumborPath::parse(&format!("unsafe/{path}"))
        .unwrap()
        .to_transform()
        .unwrap();
    let canonical = RenderRequest {
        storage: "photos".into(),
        key: "cached.jpg".into(),
        version: None,
        cache_key: None,
        transform,
        watermark: None,
        result_path: None,
    }
    .canonical();
    let key = result_key(RESULTS_DIR, &canonical, &SafeChars::default());
    assert_eq!(
        key,
        "renditions/photos/fit-in/320x320/filters%3Aformat(webp)/-/cached.jpg"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        if let Some(bytes) = w.garage.get(RESULTS_BUCKET, &key).await {
            break bytes;
        }
        assert!(
            Instant::now() < deadline,
            "rendition never reached result storage"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(
        stored, first.body,
        "result storage holds exactly what was served"
    );

    // With the source gone, the rendition still comes from result storage.
    w.garage
        .s3_client()
        .delete_object()
        .bucket(w.garage.default_bucket())
        .key("cached.jpg")
        .send()
        .await
        .unwrap();
    let again = w.get(&format!("/open/unsafe/{path}")).await;
    assert_image(&again, "image/webp", (320, 200));
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_status(
        &w.get("/open/unsafe/fit-in/321x321/cached.jpg").await,
        404,
        "",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_and_head_requests() {
    let w = World::start().await;
    let path = World::signed("fit-in/320x320/medium.jpg");
    let first = w.get(&path).await;
    assert_image(&first, "image/jpeg", (320, 200));
    let etag = first.header("etag").unwrap().to_owned();

    let r = w.stack.get(&path, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304, "body: {}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("content-type"), None);
    assert!(r.header("link").is_some(), "304 keeps the Link header");

    let r = w.stack.get(&path, &[("if-none-match", "\"other\"")]).await;
    assert_image(&r, "image/jpeg", (320, 200));

    let r = w.stack.head(&path).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_down_is_503() {
    let stack = Stack::builder(
        r#"{"routes":[{"prefix":"/open/","storage":"photos","allow_unsafe":true}]}"#,
        "",
    )
    .external_sidecar(ports::free_port())
    .start()
    .await;
    let r = stack.get("/open/unsafe/10x10/a.jpg", &[]).await;
    assert_eq!(r.status, 503, "body: {}", r.text());
}

#[test]
fn shipped_envoy_template_validates() {
    let config = Stack::builder(
        r#"{"routes":[{"prefix":"/img/","storage":"samples","allow_unsafe":true}]}"#,
        "",
    )
    .envoy_config(50051);
    pixmesh_tests::envoy::validate(&config).unwrap();
}

/// A sidecar that streams one chunk and then fails, as a storage dying mid-read would. Counts
/// the calls it gets, so the test knows the failure came from mid-stream and not from routing.
struct FailsMidStream {
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl pixmesh_proto::v1::image_service_server::ImageService for FailsMidStream {
    type RenderStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<HttpBody, tonic::Status>> + Send>>;

    async fn render(
        &self,
        _request: tonic::Request<pixmesh_proto::v1::RenderRequest>,
    ) -> Result<tonic::Response<Self::RenderStream>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let chunk = HttpBody {
            content_type: "image/jpeg".into(),
            data: vec![0xff; 256 * 1024].into(),
            extensions: Vec::new(),
        };
        let items = vec![
            Ok(chunk),
            Err(tonic::Status::internal("source read failed")),
        ];
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn render_unary(
        &self,
        _request: tonic::Request<pixmesh_proto::v1::RenderRequest>,
    ) -> Result<tonic::Response<HttpBody>, tonic::Status> {
        Err(tonic::Status::internal("source read failed"))
    }

    async fn render_call(
        &self,
        _request: tonic::Request<pixmesh_proto::v1::RenderRequest>,
    ) -> Result<tonic::Response<pixmesh_proto::v1::CallResponse>, tonic::Status> {
        Err(tonic::Status::internal("source read failed"))
    }

    async fn health(
        &self,
        _request: tonic::Request<pixmesh_proto::v1::HealthRequest>,
    ) -> Result<tonic::Response<pixmesh_proto::v1::HealthResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_after_the_first_chunk_is_never_a_complete_200() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicUsize::new(0));
    let sidecar = FailsMidStream {
        calls: Arc::clone(&calls),
    };
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pixmesh_proto::v1::image_service_server::ImageServiceServer::new(sidecar))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let stack = Stack::builder(
        r#"{"routes":[{"prefix":"/open/","storage":"photos","allow_unsafe":true}]}"#,
        "",
    )
    .external_sidecar(port)
    .start()
    .await;
    let outcome = stack.try_get("/open/unsafe/10x10/a.jpg").await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the render call reached the sidecar"
    );
    // The status line and the first chunk are already downstream, so the only honest signal left
    // is a reset: the client must see an incomplete response, never a complete 200.
    if let Ok(r) = outcome {
        panic!(
            "a truncated image was served as a complete response: status {}, {} bytes",
            r.status,
            r.body.len()
        );
    }
    server.abort();
}
