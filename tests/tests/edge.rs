//! End-to-end: the shipped Envoy configuration as the edge clients talk to, and a storage that
//! stalls, through the real filter and sidecar.
//!
//! - A client that sends part of its request headers and then nothing more had its connection
//!   held until Envoy's stream idle timeout, 5 minutes (the review held 500 of them open). Now
//!   Envoy answers 408 and closes once `request_headers_timeout` passes.
//! - A client's `grpc-timeout` reached the sidecar through the transcoder and tonic honoured it
//!   (`1n`: the render cancelled before it started). Now Envoy removes it; and no client is
//!   internal, so the x-envoy-* headers that would set Envoy's own upstream timeout are dropped:
//!   the route timeout is the only deadline.
//! - An S3 server that sends a response's headers and then stalls its body held the request until
//!   Envoy's route timeout, and the worker admission with it, so requests to every storage waited.
//!   Now the storage timeout bounds the whole read (504) and other requests are served.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pixmesh_tests::http::Response;
use pixmesh_tests::{Garage, Stack, ports, tools};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `request_headers_timeout` in `envoy/pixmesh.yaml.tmpl`.
const REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
/// The route timeout a [`Stack`] has unless told otherwise.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Routes to the Garage bucket (`photos`) and to a storage that stalls (`stalled`).
fn filter_config() -> String {
    serde_json::json!({ "routes": [
        { "prefix": "/open/", "storage": "photos", "allow_unsafe": true },
        { "prefix": "/stalled/", "storage": "stalled", "allow_unsafe": true },
    ]})
    .to_string()
}

/// Decodes an image response and returns its dimensions; panics with `what`, the status and the
/// body when it is not a 200 image.
fn image_dimensions(what: &str, r: &Response) -> (u32, u32) {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    let image = image::load_from_memory(&r.body)
        .unwrap_or_else(|e| panic!("{what}: not an image ({e}): {}", r.text()));
    (image.width(), image.height())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_headers_never_end_is_answered_408_and_closed() {
    // Envoy never reaches the sidecar here: a closed port stands in for it.
    let stack = Stack::builder(&filter_config(), "")
        .external_sidecar(ports::free_port())
        .start()
        .await;
    let addr = format!("127.0.0.1:{}", stack.envoy.port());
    // Without request_headers_timeout, Envoy waits for the rest of the headers until
    // request_timeout (30 s), without either until the stream idle timeout (5 min).
    let guard = REQUEST_HEADERS_TIMEOUT * 2;
    let (answer, elapsed) = tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(&addr).expect("connect to Envoy");
        conn.set_read_timeout(Some(guard)).unwrap();
        let started = Instant::now();
        conn.write_all(b"GET /open/unsafe/fit-in/100x100/medium.jpg HTTP/1.1\r\nHost: images\r\n")
            .expect("send the start of a request");
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match conn.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("the connection is still open after {guard:?}")
                }
                // A reset after the answer closes the connection too.
                Err(_) => break,
            }
        }
        (
            String::from_utf8_lossy(&answer).into_owned(),
            started.elapsed(),
        )
    })
    .await
    .unwrap();
    eprintln!("closed after {elapsed:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_timeouts_never_reach_the_sidecar_or_envoys_router() {
    let garage = Garage::start().await;
    garage
        .put(
            garage.default_bucket(),
            "medium.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    let sidecar = format!(
        "[storages.photos]\n{}",
        garage.storage_toml(garage.default_bucket())
    );
    let stack = Stack::builder(&filter_config(), &sidecar).start().await;
    let path = "/open/unsafe/fit-in/100x100/medium.jpg";
    let rendered = image_dimensions("no timeout header", &stack.get(path, &[]).await);
    assert_eq!(rendered.0, 100);
    // Each of these deadlines is over before a render could be: tonic would cancel the call
    // ("Timeout expired", 499) for the first, Envoy's router answer "upstream request timeout"
    // (504) to the others, also when the client claims to come from a private address.
    let deadlines: [&[(&str, &str)]; 3] = [
        &[("grpc-timeout", "1n")],
        &[("x-envoy-upstream-rq-timeout-ms", "1")],
        &[
            ("x-envoy-upstream-rq-timeout-ms", "1"),
            ("x-forwarded-for", "10.1.2.3"),
        ],
    ];
    for headers in deadlines {
        let r = stack.get(path, headers).await;
        assert_eq!(image_dimensions(&format!("{headers:?}"), &r), rendered);
    }
}

/// An S3 server on 127.0.0.1 that answers every request with `200`, `Content-Length: 1000` and
/// four bytes of body, then sends nothing more and holds the connection open until the test
/// ends. Returns its endpoint and how many requests it has answered.
async fn stalling_s3() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Type: image/jpeg\r\n\
                               Content-Length: 1000\r\n\r\n\xff\xd8\xff\xe0";
                if conn.write_all(answer).await.is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                // Keep the connection open, sending nothing, until the client gives up.
                let _ = conn.read(&mut chunk).await;
            });
        }
    });
    (endpoint, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_that_stalls_its_body_answers_504_and_other_requests_are_served() {
    let garage = Garage::start().await;
    garage
        .put(
            garage.default_bucket(),
            "medium.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    let (stalled, answered) = stalling_s3().await;
    let sidecar = format!(
        "[limits]\nstorage_timeout_ms = 300\n\
         [storages.photos]\n{}\n\
         [storages.stalled]\ntype = \"s3\"\nbucket = \"b\"\nendpoint = \"{stalled}\"\n\
         region = \"us-east-1\"\naccess_key_id = \"AKIDTEST\"\nsecret_access_key = \"s\"\n",
        garage.storage_toml(garage.default_bucket())
    );
    let stack = Arc::new(Stack::builder(&filter_config(), &sidecar).start().await);

    // Enough stalled reads of different sources to take every admission the sidecar has (two
    // per core), and two more waiting for one.
    let admissions = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
    let stalled_reads: Vec<_> = (0..admissions + 2)
        .map(|i| {
            let stack = Arc::clone(&stack);
            tokio::spawn(async move {
                let path = format!("/stalled/unsafe/fit-in/100x100/s{i}.jpg");
                stack.get(&path, &[]).await
            })
        })
        .collect();
    pixmesh_tests::eventually("the stalled storage holds every admission", || {
        let answered = answered.load(Ordering::SeqCst);
        async move { answered >= admissions }
    })
    .await;

    // Served while the stalled reads are in flight or queued: within a second or so (each
    // stalled read lets its admission go after 300 ms), not once Envoy's route timeout (30 s)
    // has ended the stalled reads.
    let started = Instant::now();
    let r = stack
        .get("/open/unsafe/fit-in/100x100/medium.jpg", &[])
        .await;
    let waited = started.elapsed();
    eprintln!("served beside the stalled reads after {waited:?}");
    assert_eq!(image_dimensions("beside the stalled reads", &r).0, 100);
    assert!(
        waited < ROUTE_TIMEOUT / 2,
        "served only after {waited:?}: the stalled reads held every admission"
    );
    for read in stalled_reads {
        let r = read.await.unwrap();
        // The sidecar's answer, not Envoy's route timeout ("upstream request timeout").
        assert_eq!(r.status, 504, "body: {}", r.text());
        assert!(r.text().contains("storage timed out"), "{}", r.text());
    }
}
