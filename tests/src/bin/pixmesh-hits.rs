//! `bench/load`'s result-storage phase: latency of renditions served from result storage.
//!
//! ```text
//! pixmesh-hits IMAGES_DIR [--requests N] [--concurrency C] IMAGE...
//! ```
//!
//! Starts Garage (sources and renditions in two buckets), Envoy with the real filter and the
//! sidecar in this process, renders `2 × C` distinct renditions of each IMAGE once (misses, which
//! write them to result storage), waits until every one is stored, then requests them again N
//! times over C keep-alive connections: every request a hit. With `verify_source` (a HEAD on
//! the source beside each result read, the default) and without, each twice: straight to
//! Garage, and through [`quick_ack_relay`]; then the same result reads without pixmesh, by the
//! S3 SDK alone ([`storage_alone`]). Prints a markdown table.
//! A benchmark, not a test: nothing here asserts a time.
//!
//! Why the relay: Garage does not set `TCP_NODELAY` and writes a GET's headers and body
//! separately, so the body waits (Nagle) for the ACK of the headers, which the reader delays
//! by 40 ms: every result read costs ≥ 40 ms on Linux loopback, whoever reads it (AWS S3 and
//! the Go servers, MinIO included, set `TCP_NODELAY`). The relay ACKs Garage at once, so its
//! rows show what pixmesh itself costs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use pixmesh_tests::load::get_jpegs;
use pixmesh_tests::{Garage, Stack, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RESULTS_BUCKET: &str = "results";

struct Args {
    dir: std::path::PathBuf,
    images: Vec<String>,
    requests: usize,
    concurrency: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: pixmesh-hits IMAGES_DIR [--requests N] [--concurrency C] IMAGE...")?;
    let (mut requests, mut concurrency, mut images) = (2000, 8, Vec::new());
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--requests" => requests = number("--requests")?,
            "--concurrency" => concurrency = number("--concurrency")?,
            _ => images.push(arg),
        }
    }
    if images.is_empty() || concurrency == 0 {
        return Err("name at least one image; concurrency must be positive".into());
    }
    Ok(Args {
        dir: dir.into(),
        images,
        requests,
        concurrency,
    })
}

/// The `n`th rendition path: a fit-in box from 200 to 200 + n px, JPEG q80.
fn path(images: &[String], n: usize) -> String {
    let side = 200 + n / images.len();
    let image = &images[n % images.len()];
    format!("/img/unsafe/fit-in/{side}x{side}/filters:format(jpeg):quality(80)/{image}")
}

struct Summary {
    rps: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

/// `total` GETs over `concurrency` keep-alive connections, cycling through `paths`.
fn load(base: &str, paths: &[String], total: usize, concurrency: usize) -> Summary {
    let (samples, wall) = get_jpegs(base, paths, total, concurrency, Duration::from_secs(30));
    Summary::of(samples.iter().map(|s| s.took).collect(), wall)
}

impl Summary {
    /// Throughput and latency quantiles of requests that took `latencies`, in `wall` in all.
    fn of(mut latencies: Vec<Duration>, wall: Duration) -> Summary {
        latencies.sort();
        let ms = |q: f64| {
            let i = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
            latencies[i].as_secs_f64() * 1000.0
        };
        Summary {
            rps: latencies.len() as f64 / wall.as_secs_f64(),
            p50: ms(0.50),
            p99: ms(0.99),
            max: ms(1.0),
        }
    }
}

/// The result reads of the hits without pixmesh: `total` GETs of the renditions under `prefix`,
/// `concurrency` at a time, by the S3 SDK in this process through a [`quick_ack_relay`], as
/// the sidecar reads them. What pixmesh adds is the difference to its own rows.
async fn storage_alone(garage: &Garage, prefix: &str, total: usize, concurrency: usize) -> Summary {
    let relay = relayed(garage).await;
    let config = pixmesh_tests::s3::config_builder(
        &relay,
        garage.region(),
        garage.access_key(),
        garage.secret_key(),
    )
    .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let keys = std::sync::Arc::new(garage.list(RESULTS_BUCKET, prefix).await);
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, keys, next) = (client.clone(), keys.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return latencies;
                    }
                    let key = &keys[i % keys.len()];
                    let begin = Instant::now();
                    let object = client
                        .get_object()
                        .bucket(RESULTS_BUCKET)
                        .key(key)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("GET {key}: {e}"));
                    let body = object.body.collect().await.expect("read the body");
                    assert!(body.into_bytes().starts_with(&[0xff, 0xd8]), "{key}");
                    latencies.push(begin.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for worker in workers {
        latencies.extend(worker.await.expect("a GET worker"));
    }
    Summary::of(latencies, start.elapsed())
}

/// A TCP relay to `upstream` on 127.0.0.1 that acknowledges what `upstream` sends at once
/// (`TCP_QUICKACK` after every read) instead of delaying the ACK, so a server without
/// `TCP_NODELAY` is not held back by Nagle's algorithm. Serves until the process ends.
async fn quick_ack_relay(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let addr = listener.local_addr().expect("relay address");
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (Ok(()), Ok(())) = (down.set_nodelay(true), up.set_nodelay(true)) else {
                    return;
                };
                let (mut down_read, mut down_write) = down.into_split();
                let (mut up_read, mut up_write) = up.into_split();
                let requests = tokio::io::copy(&mut down_read, &mut up_write);
                let responses = async {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = up_read.read(&mut buf).await?;
                        if n == 0 {
                            return down_write.shutdown().await;
                        }
                        quick_ack(up_read.as_ref());
                        down_write.write_all(&buf[..n]).await?;
                    }
                };
                let _ = tokio::join!(requests, responses);
            });
        }
    });
    addr
}

/// Garage's endpoint through a new [`quick_ack_relay`].
async fn relayed(garage: &Garage) -> String {
    let upstream = garage
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("Garage's address");
    format!("http://{}", quick_ack_relay(upstream).await)
}

/// Sends the pending ACK of `stream` now (Linux: `TCP_QUICKACK`, which the kernel clears again
/// by itself, hence after every read).
fn quick_ack(stream: &TcpStream) {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, an option value of the size passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

async fn measure(garage: &Garage, args: &Args, verify_source: bool, relay: bool) -> Summary {
    let endpoint = garage.endpoint();
    let via = if relay {
        relayed(garage).await
    } else {
        endpoint.clone()
    };
    let storage = |name: &str, bucket: &str| {
        format!("[storages.{name}]\n{}", garage.storage_toml(bucket)).replace(&endpoint, &via)
    };
    let base_dir = format!("verify-{verify_source}-relay-{relay}");
    let sidecar = format!(
        "{}{}[result_storage]\nstorage = \"results\"\nbase_dir = \"{base_dir}\"\n\
         verify_source = {verify_source}\n",
        storage("photos", garage.default_bucket()),
        storage("results", RESULTS_BUCKET),
    );
    let filter = r#"{"routes":[{"prefix":"/img/","storage":"photos","allow_unsafe":true}]}"#;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stack = Stack::builder(filter, &sidecar)
        .envoy_workers(cores)
        .start()
        .await;
    let base = stack.url("");
    let paths: Vec<String> = (0..args.images.len() * 2 * args.concurrency)
        .map(|n| path(&args.images, n))
        .collect();
    let warm = paths.clone();
    let warm_base = base.clone();
    tokio::task::spawn_blocking(move || load(&warm_base, &warm, warm.len(), 2))
        .await
        .expect("warm-up");
    let wanted = paths.len();
    eventually("every rendition is in result storage", || async {
        garage.list(RESULTS_BUCKET, &base_dir).await.len() >= wanted
    })
    .await;
    let (requests, concurrency) = (args.requests, args.concurrency);
    tokio::task::spawn_blocking(move || load(&base, &paths, requests, concurrency))
        .await
        .expect("load")
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = parse_args()?;
    let garage = Garage::start().await;
    garage.create_bucket(RESULTS_BUCKET).await;
    for image in &args.images {
        let bytes = std::fs::read(args.dir.join(image)).map_err(|e| format!("{image}: {e}"))?;
        garage.put(garage.default_bucket(), image, bytes).await;
    }
    println!(
        "| result-storage hits | req/s | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|"
    );
    for (verify_source, relay) in [(true, false), (false, false), (true, true), (false, true)] {
        let s = measure(&garage, &args, verify_source, relay).await;
        let reads = if verify_source {
            "`verify_source = true` (result GET + source HEAD)"
        } else {
            "`verify_source = false` (result GET only)"
        };
        let to = if relay {
            "Garage, ACKed at once"
        } else {
            "Garage"
        };
        let label = format!("{reads}, {to}");
        println!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.1} |",
            s.rps, s.p50, s.p99, s.max
        );
    }
    let s = storage_alone(
        &garage,
        "verify-false-relay-true",
        args.requests,
        args.concurrency,
    )
    .await;
    println!(
        "| the same result GETs without pixmesh (S3 SDK), Garage, ACKed at once | {:.1} | {:.1} | {:.1} | {:.1} |",
        s.rps, s.p50, s.p99, s.max
    );
    Ok(())
}
