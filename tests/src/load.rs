//! A closed-loop HTTP load for the benchmark binaries (`pixmesh-hits`, `pixmesh-modes`): a
//! number of GETs over keep-alive connections, each request's latency and body size.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One request: how long it took and how many body bytes it brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sample {
    /// From the request sent to the whole body read.
    pub took: Duration,
    /// Body bytes.
    pub bytes: usize,
}

/// `total` GETs of JPEG renditions from `base`, cycling through `paths`, over `concurrency`
/// keep-alive connections, each with `timeout`: the samples sorted by latency, and the wall
/// time of all. Panics on a failed request or a body that is not a JPEG.
pub fn get_jpegs(
    base: &str,
    paths: &[String],
    total: usize,
    concurrency: usize,
    timeout: Duration,
) -> (Vec<Sample>, Duration) {
    let next = AtomicUsize::new(0);
    let samples = Mutex::new(Vec::with_capacity(total));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                let agent = ureq::Agent::config_builder()
                    .timeout_global(Some(timeout))
                    .build()
                    .new_agent();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let url = format!("{base}{}", paths[i % paths.len()]);
                    let begin = Instant::now();
                    let mut response = agent
                        .get(&url)
                        .call()
                        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
                    let body = response
                        .body_mut()
                        .with_config()
                        .limit(u64::MAX)
                        .read_to_vec()
                        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
                    let took = begin.elapsed();
                    assert!(body.starts_with(&[0xff, 0xd8]), "{url}: not a JPEG");
                    let sample = Sample {
                        took,
                        bytes: body.len(),
                    };
                    samples.lock().unwrap().push(sample);
                }
            });
        }
    });
    let wall = start.elapsed();
    let mut samples = samples.into_inner().unwrap();
    samples.sort();
    (samples, wall)
}

/// The latency at quantile `q` (0 to 1) of `samples` sorted by latency, in milliseconds.
pub fn quantile_ms(samples: &[Sample], q: f64) -> f64 {
    let i = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
    samples
        .get(i)
        .map_or(0.0, |s| s.took.as_secs_f64() * 1000.0)
}
