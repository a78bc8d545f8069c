//! End-to-end: what the security review did to pixmesh, through the shipped Envoy config, the
//! real filter and sidecar, and Garage, and what each attack now gets.
//!
//! - A request body on an image URL: Envoy's transcoder merged it into the render request, so a
//!   signed URL for a public image read any key of any storage. Now the filter refuses the body
//!   (400) and the sidecar renders only what the filter vouched for: a call that skips the
//!   filter, or changes what it asked, is 403.
//! - A header with a byte that is not UTF-8 panicked the wasm VM for every request on its
//!   worker. Now such a value counts as absent and the worker keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use image::GenericImageView;
use pixmesh_core::router::Router;
use pixmesh_core::vouch::{HEADER, Voucher};
use pixmesh_proto::v1::image_service_client::ImageServiceClient;
use pixmesh_proto::v1::{Fit, RenderRequest};
use pixmesh_tests::{Garage, Stack, tools};
use tonic::metadata::MetadataValue;

/// The public image every route may serve, under the routes' base dir.
const PUBLIC: &str = "public/a.jpg";
/// An object outside every route's base dir.
const PRIVATE: &str = "private/secret.jpg";

/// One signed route per grammar, all on the `public` base dir of storage `photos`.
fn filter_config() -> String {
    serde_json::json!({ "routes": [
        { "prefix": "/img/", "storage": "photos", "base_dir": "public",
          "secret": "thumbor-secret" },
        { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos", "base_dir": "public",
          "keys": [ { "key": "736563726574", "salt": "68656C6C6F" } ] },
        { "prefix": "/ik/", "grammar": "imagekit", "storage": "photos", "base_dir": "public",
          "secret": "imagekit-private-key" },
        { "prefix": "/v1/ex/", "grammar": "query", "storage": "photos", "base_dir": "public",
          "secret": "query-secret", "handles": { "h": "photos" } },
        { "prefix": "/open/", "storage": "photos", "base_dir": "public", "allow_unsafe": true },
    ]})
    .to_string()
}

/// The same image, 100 wide, in every grammar (unsigned forms).
const URLS: [&str; 5] = [
    "/img/unsafe/100x0/a.jpg",
    "/ip/insecure/rs:fit:100:0/plain/a.jpg",
    "/ik/tr:w-100/a.jpg",
    "/v1/ex/h/a.jpg?w=100",
    "/open/unsafe/100x0/a.jpg",
];

struct World {
    _garage: Garage,
    stack: Stack,
    router: Router,
}

impl World {
    async fn start() -> World {
        let garage = Garage::start().await;
        let photo = tools::test_image("medium.jpg");
        garage
            .put(garage.default_bucket(), PUBLIC, photo.clone())
            .await;
        garage.put(garage.default_bucket(), PRIVATE, photo).await;
        let sidecar = format!(
            "[storages.photos]\n{}",
            garage.storage_toml(garage.default_bucket())
        );
        let filter = filter_config();
        let stack = Stack::builder(&filter, &sidecar).start().await;
        let router = Router::from_json(filter.as_bytes()).expect("filter config");
        World {
            _garage: garage,
            stack,
            router,
        }
    }

    /// Every grammar's signed URL for [`URLS`].
    fn signed_urls(&self) -> Vec<String> {
        URLS.iter()
            .map(|u| {
                if u.starts_with("/open/") {
                    (*u).to_owned()
                } else {
                    self.router.sign(u).unwrap_or_else(|e| panic!("{u}: {e}"))
                }
            })
            .collect()
    }

    /// Sends `request` (raw HTTP/1.1 bytes) to Envoy's listener; the status and the raw
    /// response.
    async fn raw(&self, request: Vec<u8>) -> (u16, Vec<u8>) {
        let addr = self
            .stack
            .envoy
            .base_url()
            .trim_start_matches("http://")
            .to_owned();
        tokio::task::spawn_blocking(move || raw_http(&addr, &request))
            .await
            .expect("raw request task")
    }
}

/// Writes `request` to `addr` and reads the response until the server closes.
fn raw_http(addr: &str, request: &[u8]) -> (u16, Vec<u8>) {
    let mut conn = TcpStream::connect(addr).expect("connect to Envoy");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    conn.write_all(request).expect("write the request");
    let mut response = Vec::new();
    let _ = conn.read_to_end(&mut response);
    let status = std::str::from_utf8(&response[..response.len().min(12)])
        .ok()
        .and_then(|line| line.get(9..12))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {:?}", String::from_utf8_lossy(&response)));
    (status, response)
}

/// A GET of `path` with extra raw header lines and a body, closing the connection after it.
fn get_with(path: &str, headers: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut r =
        format!("GET {path} HTTP/1.1\r\nHost: images\r\nConnection: close\r\n").into_bytes();
    for h in headers {
        r.extend_from_slice(h);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

fn width_of(body: &[u8]) -> u32 {
    image::load_from_memory(body)
        .expect("an image")
        .dimensions()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_never_reaches_the_render_request() {
    let w = World::start().await;
    let body = format!(r#"{{"key":"{PRIVATE}","storage":"photos","width":4000}}"#);
    let content_length = format!("Content-Length: {}", body.len());
    for url in w.signed_urls() {
        let plain = w.stack.get(&url, &[]).await;
        assert_eq!(plain.status, 200, "{url}: {}", plain.text());
        assert_eq!(width_of(&plain.body), 100, "{url}");
        assert_eq!(plain.header("x-content-type-options"), Some("nosniff"));

        let sized = get_with(
            &url,
            &[content_length.as_bytes(), b"Content-Type: application/json"],
            body.as_bytes(),
        );
        let (status, response) = w.raw(sized).await;
        let text = String::from_utf8_lossy(&response);
        assert_eq!(status, 400, "{url} with a body: {text}");
        assert!(text.contains("image requests take no body"), "{text}");
        assert!(
            text.contains("x-content-type-options: nosniff"),
            "error bodies are never sniffed: {text}"
        );

        let chunked_body = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
        let chunked = get_with(
            &url,
            &[b"Transfer-Encoding: chunked"],
            chunked_body.as_bytes(),
        );
        let (status, response) = w.raw(chunked).await;
        assert_eq!(
            status,
            400,
            "{url} with a chunked body: {}",
            String::from_utf8_lossy(&response)
        );
    }
    // An empty body is no body.
    let (status, _) = w.raw(get_with(URLS[4], &[b"Content-Length: 0"], b"")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_renders_only_what_the_filter_vouched_for() {
    let w = World::start().await;
    let addr = w.stack.sidecar.as_ref().expect("in-process sidecar").addr();
    let mut client = ImageServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the sidecar");
    let private = RenderRequest {
        storage: "photos".into(),
        key: PRIVATE.into(),
        width: 100,
        fit: Fit::FitIn.into(),
        ..Default::default()
    };
    let refused = |r: Result<_, tonic::Status>, what: &str| {
        let status = r.expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{what}: {status:?}"
        );
        assert_eq!(
            status.metadata().get("x-http-status").unwrap(),
            "403",
            "{what}"
        );
    };

    // Straight to the sidecar, skipping the filter.
    refused(
        client.render_unary(private.clone()).await,
        "a call without proof",
    );
    let mut forged = tonic::Request::new(private.clone());
    let stranger = Voucher::new(b"not the key the filter and sidecar share").unwrap();
    let core = pixmesh_sidecar::serving::wire::to_core(private.clone()).unwrap();
    forged.metadata_mut().insert(
        HEADER,
        MetadataValue::try_from(stranger.vouch(&core, SystemTime::now())).unwrap(),
    );
    refused(
        client.render_unary(forged).await,
        "a proof made with another key",
    );

    // A proof for the public image does not cover the private one (what a body did).
    let public = RenderRequest {
        key: PUBLIC.into(),
        ..private.clone()
    };
    let proof = pixmesh_tests::vouch::voucher().vouch(
        &pixmesh_sidecar::serving::wire::to_core(public.clone()).unwrap(),
        SystemTime::now(),
    );
    let mut swapped = tonic::Request::new(private);
    swapped
        .metadata_mut()
        .insert(HEADER, MetadataValue::try_from(proof.as_str()).unwrap());
    refused(
        client.render_unary(swapped).await,
        "another request's proof",
    );
    let mut honest = tonic::Request::new(public);
    honest
        .metadata_mut()
        .insert(HEADER, MetadataValue::try_from(proof.as_str()).unwrap());
    let rendered = client
        .render_unary(honest)
        .await
        .expect("the vouched request renders")
        .into_inner();
    assert_eq!(width_of(&rendered.data), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_bytes_that_are_not_utf8_leave_the_worker_serving() {
    let w = World::start().await;
    let url = w.signed_urls()[0].clone();
    // One Envoy worker (the test stacks' default): a VM panic would fail what follows.
    let hostile: [&[u8]; 3] = [
        b"X-A: \xff",
        // A Latin-1 cookie, as old browsers and scripts send it.
        b"Cookie: name=caf\xe9",
        b"Accept: image/webp,\xfe/\xfe",
    ];
    for header in hostile {
        let (status, response) = w.raw(get_with(&url, &[header], b"")).await;
        assert_eq!(
            status,
            200,
            "{:?}: {}",
            String::from_utf8_lossy(header),
            String::from_utf8_lossy(&response)
        );
        let (status, _) = w.raw(get_with("/elsewhere", &[header], b"")).await;
        assert_eq!(status, 404, "not an image route: Envoy's own 404");
    }
    for i in 0..100 {
        let r = w.stack.get(&url, &[]).await;
        assert_eq!(r.status, 200, "request {i} after the hostile headers");
    }
}

/// No secret has to be written into the filter's configuration: a route's signing key written
/// `{"env": NAME}` is read from Envoy's environment (a Kubernetes Secret in a pod), the template
/// lists the variable in `vm_config.environment_variables`, and URLs signed with it verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_can_come_from_envoys_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        tools::testdata_images().join("flower.webp"),
        dir.path().join("a.webp"),
    )
    .unwrap();
    let sidecar = format!(
        "[storages.photos]\ntype = \"local\"\nroot = {:?}\n",
        dir.path().display().to_string()
    );
    let filter = serde_json::json!({ "routes": [
        { "prefix": "/img/", "storage": "photos", "secret": { "env": "PIXMESH_TEST_URL_KEY" } },
    ]});
    let stack = Stack::builder(&filter.to_string(), &sidecar)
        .envoy_env("PIXMESH_TEST_URL_KEY", "a-key-from-a-kubernetes-secret")
        .start()
        .await;
    let signer = pixmesh_core::sign::ThumborSigner::new(
        "a-key-from-a-kubernetes-secret",
        pixmesh_core::sign::HashAlg::Sha1,
        None,
    );
    let signed = format!("/img/{}/100x0/a.webp", signer.sign("100x0/a.webp"));
    let r = stack.get(&signed, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(width_of(&r.body), 100);
    let other =
        pixmesh_core::sign::ThumborSigner::new("another", pixmesh_core::sign::HashAlg::Sha1, None);
    let forged = format!("/img/{}/100x0/a.webp", other.sign("100x0/a.webp"));
    assert_eq!(stack.get(&forged, &[]).await.status, 403);
}
