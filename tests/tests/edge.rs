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

/// Reads an HTTP/1.1 response from `conn` at about `rate` bytes a second until it is whole
/// (chunked, or with a content length) or the server closes; returns the status line and the
/// body if it arrived whole, else `None`.
fn read_slowly(conn: &mut TcpStream, rate: usize) -> (String, Option<Vec<u8>>) {
    let step = Duration::from_millis(50);
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; (rate / 20).max(1)];
    loop {
        if let Some((status, Some(body))) = parse_response(&raw) {
            return (status, Some(body));
        }
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            // A reset ends the response as a close does: it is whole or it is not.
            Err(_) => break,
        }
        std::thread::sleep(step);
    }
    parse_response(&raw).unwrap_or_default()
}

/// The status line of the response in `raw` and its body if whole; `None` before the end of
/// the headers.
fn parse_response(raw: &[u8]) -> Option<(String, Option<Vec<u8>>)> {
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
    let status = head.lines().next().unwrap_or_default().to_owned();
    let mut rest = &raw[at + 4..];
    if !head.contains("transfer-encoding: chunked") {
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let body = length
            .filter(|&n| rest.len() >= n)
            .map(|n| rest[..n].to_vec());
        return Some((status, body));
    }
    let mut body = Vec::new();
    loop {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Some((status, None));
        };
        let size = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size else {
            return Some((status, None));
        };
        rest = &rest[end + 2..];
        if size == 0 {
            return Some((status, Some(body)));
        }
        if rest.len() < size + 2 {
            return Some((status, None));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// A large rendition read by a slow but steady client takes longer than the route's deadline.
/// Before, the route timeout bounded the whole upstream response, so Envoy cut such a download
/// off once it passed (30 s in the shipped configuration, 10 s here) with more left than its
/// buffers hold (measured: 504 "UT" after 10 s, 11 of 19 MB sent); now the deadline is an
/// idle timeout, which the sidecar's bytes moving reset: the client gets every byte, and a
/// client that stops reading altogether is still cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_steady_reader_gets_a_large_rendition_whole() {
    // 4096×1536 of noise as a PNG: about 19 MB that no compression shrinks, quick to render,
    // and far more than every buffer between the sidecar and the client holds (the sidecar
    // cluster's 1 MiB stream window, Envoy's connection buffer, the kernel's socket buffers:
    // about 6 MB here), so the sidecar still sends long after the deadline.
    let (width, height) = (4096, 1536);
    let mut state = 0x9e37_79b9_u32;
    let noise = image::RgbImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [r, g, b, _] = state.to_le_bytes();
        image::Rgb([r, g, b])
    });
    let dir = tempfile::tempdir().unwrap();
    noise.save(dir.path().join("noise.png")).unwrap();
    let sidecar = format!(
        "[storages.photos]\ntype = \"local\"\nroot = {:?}\n",
        dir.path().display().to_string()
    );
    let stack = Stack::builder(&filter_config(), &sidecar)
        .route_timeout("10s")
        .start()
        .await;
    let addr = format!("127.0.0.1:{}", stack.envoy.port());
    let (status, body, elapsed) = tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(&addr).expect("connect to Envoy");
        // A small receive buffer, so the client's kernel does not read ahead for it.
        let small: libc::c_int = 64 * 1024;
        // SAFETY: a valid socket, and a c_int option of its size.
        let set = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&conn),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "SO_RCVBUF");
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let started = Instant::now();
        conn.write_all(b"GET /open/unsafe/noise.png HTTP/1.1\r\nHost: images\r\n\r\n")
            .unwrap();
        let (status, body) = read_slowly(&mut conn, 1 << 20);
        (status, body, started.elapsed())
    })
    .await
    .unwrap();
    eprintln!(
        "{status}; {} bytes after {elapsed:?}",
        body.as_ref().map_or(0, Vec::len)
    );
    assert!(status.starts_with("http/1.1 200"), "{status}");
    let body = body.expect("the whole rendition, not cut off at the route's deadline");
    let png = image::load_from_memory(&body).expect("a whole PNG");
    assert_eq!((png.width(), png.height()), (width, height));
}
