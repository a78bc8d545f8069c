//! Call mode against transcoder mode: throughput and latency of the same renditions through
//! Envoy, one Envoy per mode, both in front of one sidecar in this process.
//!
//! ```text
//! pixmesh-modes [--requests N] [--concurrency C] [--rounds R]
//! ```
//!
//! The sources are `testdata/images` (a local storage, no result storage: every request
//! renders). Two sets of renditions of `medium.jpg` (2560x1600): small (fit-in 160–320 px,
//! JPEG q80, a few KB, where the per-request cost of each path shows) and large (fit-in 1800–1960
//! px, about 300 KB, which call mode copies through the wasm VM's memory). Each set is rendered
//! once through both Envoys first, and the bodies must be byte-identical. Then N requests over C
//! keep-alive connections, alternating the modes for R rounds so drift hits both alike. Prints a
//! markdown table. A benchmark, not a test: nothing here asserts a time.

use std::time::Duration;

use pixmesh_tests::load::{get_jpegs, quantile_ms};
use pixmesh_tests::{Sidecar, Stack, tools};

struct Args {
    requests: usize,
    concurrency: usize,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        requests: 600,
        concurrency: 4,
        rounds: 2,
    };
    while let Some(arg) = args.next() {
        let value: usize = args
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{arg} needs a number"))?;
        match arg.as_str() {
            "--requests" => parsed.requests = value,
            "--concurrency" => parsed.concurrency = value,
            "--rounds" => parsed.rounds = value,
            _ => {
                return Err(
                    "usage: pixmesh-modes [--requests N] [--concurrency C] [--rounds R]".into(),
                );
            }
        }
    }
    if parsed.concurrency == 0 || parsed.requests == 0 || parsed.rounds == 0 {
        return Err("every number must be positive".into());
    }
    Ok(parsed)
}

/// `count` renditions of medium.jpg, fit-in boxes from `side` px up.
fn renditions(side: usize, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            let s = side + n * 8;
            format!("/img/unsafe/fit-in/{s}x{s}/filters:format(jpeg):quality(80)/medium.jpg")
        })
        .collect()
}

/// `(req/s, p50 ms, p99 ms, mean body bytes)`.
type Summary = (f64, f64, f64, usize);

/// `total` GETs over `concurrency` keep-alive connections, cycling through `paths`.
fn load(base: &str, paths: &[String], total: usize, concurrency: usize) -> Summary {
    let (samples, wall) = get_jpegs(base, paths, total, concurrency, Duration::from_secs(60));
    let bytes = samples.iter().map(|s| s.bytes).sum::<usize>() / samples.len().max(1);
    (
        samples.len() as f64 / wall.as_secs_f64(),
        quantile_ms(&samples, 0.50),
        quantile_ms(&samples, 0.99),
        bytes,
    )
}

/// GETs `path` from `base`: the body.
fn body(base: &str, path: &str) -> Vec<u8> {
    let response = pixmesh_tests::http::get(&format!("{base}{path}"), &[]);
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response.body
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = parse_args()?;
    let sidecar = Sidecar::start(&pixmesh_tests::demo::directory_sidecar(
        &tools::testdata_images(),
    ))
    .await;
    let filter = r#"{"routes":[{"prefix":"/img/","storage":"samples","allow_unsafe":true}]}"#;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let port = sidecar.addr().port();
    let transcoder = Stack::builder(filter, "")
        .external_sidecar(port)
        .envoy_workers(cores)
        .start()
        .await;
    let call = Stack::builder(filter, "")
        .external_sidecar(port)
        .envoy_workers(cores)
        .call_mode()
        .start()
        .await;
    let bases = [("transcoder", transcoder.url("")), ("call", call.url(""))];
    let sets = [
        ("small", renditions(160, 2 * args.concurrency)),
        ("large", renditions(1800, 2 * args.concurrency)),
    ];
    println!(
        "{cores} cores, {} requests per run, {} connections, {} rounds per mode\n",
        args.requests, args.concurrency, args.rounds
    );
    println!("| renditions | mode | round | req/s | p50 ms | p99 ms | body bytes |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (set, paths) in &sets {
        let (check_paths, check_bases) = (paths.clone(), bases.clone());
        tokio::task::spawn_blocking(move || {
            for path in &check_paths {
                let a = body(&check_bases[0].1, path);
                let b = body(&check_bases[1].1, path);
                assert!(a == b, "{path}: the modes' bodies differ");
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        for round in 1..=args.rounds {
            for (mode, base) in &bases {
                let (base, paths) = (base.clone(), paths.clone());
                let (requests, concurrency) = (args.requests, args.concurrency);
                let (rps, p50, p99, bytes) =
                    tokio::task::spawn_blocking(move || load(&base, &paths, requests, concurrency))
                        .await
                        .map_err(|e| e.to_string())?;
                println!("| {set} | {mode} | {round} | {rps:.1} | {p50:.1} | {p99:.1} | {bytes} |");
            }
        }
    }
    Ok(())
}
