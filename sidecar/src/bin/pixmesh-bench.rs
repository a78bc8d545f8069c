//! `pixmesh-bench`: runs the render pipeline on image files and prints, per image, the CPU time
//! of one render (the median of `--repeat` runs after a warm-up) as one JSON object a line.
//! `bench/compare.py` runs it beside libvips on the same images and operations. With `--out`,
//! each output is written there as `SOURCE_NAME.FORMAT` (e.g. `medium.jpg.webp`).
//!
//! ```text
//! pixmesh-bench --size 800x800 --fit fit-in --format jpeg --quality 80 --repeat 5 \
//!               [--allocator sidecar|glibc] [--out DIR] IMAGE...
//! ```
//!
//! `--allocator sidecar` (the default) applies the sidecar's allocator settings
//! ([`pixmesh_sidecar::serving::budget::tune_allocator`]), so the times are what `serve` spends;
//! `glibc` leaves glibc's defaults, which keep freed buffers for the next render.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use pixmesh_core::transform::{Fit, Format, OutputFormat, Transform};
use pixmesh_sidecar::pipeline::{self, Limits};

struct Args {
    transform: Transform,
    repeat: usize,
    out: Option<PathBuf>,
    images: Vec<PathBuf>,
    /// Apply the sidecar's allocator settings, as `serve` does.
    tune_allocator: bool,
}

/// As in `pixmesh-sidecar`: large freed blocks kept for reuse (with `--allocator sidecar`).
#[global_allocator]
static ALLOCATOR: pixmesh_sidecar::serving::block_cache::BlockCache =
    pixmesh_sidecar::serving::block_cache::BlockCache;

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)).and_then(|args| run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pixmesh-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.tune_allocator {
        pixmesh_sidecar::serving::budget::tune_allocator();
        // What `serve` keeps with the default configuration.
        let limits = pixmesh_sidecar::config::Limits::default();
        let shares = pixmesh_sidecar::serving::budget::Shares::of(
            limits.memory_budget_bytes,
            pixmesh_sidecar::config::DEFAULT_WATERMARK_CACHE_BYTES,
            limits.max_source_bytes,
        );
        pixmesh_sidecar::serving::block_cache::set_capacity(
            usize::try_from(shares.blocks).unwrap_or(usize::MAX),
        );
    }
    let limits = Limits::default();
    for path in &args.images {
        let source = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let render = || {
            pipeline::render(&source, &args.transform, &limits)
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        let rendered = render()?; // warm-up; also the output written below
        let mut times = Vec::with_capacity(args.repeat);
        for _ in 0..args.repeat {
            let start = cpu_time();
            render()?;
            times.push(cpu_time() - start);
        }
        times.sort();
        let median = times[times.len() / 2];
        if let Some(dir) = &args.out {
            // The whole source name, so medium.jpg and medium.webp do not overwrite each other.
            let name = format!("{}.{}", file_name(path), rendered.format.name());
            std::fs::write(dir.join(&name), &rendered.bytes)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        println!(
            "{{\"image\":{:?},\"cpu_ms\":{:.2},\"bytes\":{},\"width\":{},\"height\":{}}}",
            file_name(path),
            median.as_secs_f64() * 1000.0,
            rendered.bytes.len(),
            rendered.width,
            rendered.height
        );
    }
    Ok(())
}

/// CPU time of this process (user + system), all threads.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    const USAGE: &str = "usage: pixmesh-bench --size WxH [--fit fit-in|fill|stretch] \
                         [--format jpeg|png|webp|gif] [--quality Q] [--repeat N] \
                         [--allocator sidecar|glibc] [--out DIR] IMAGE...";
    let mut args = Args {
        transform: Transform::default(),
        repeat: 5,
        out: None,
        images: Vec::new(),
        tune_allocator: true,
    };
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--size" => {
                let v = value()?;
                let (w, h) = v
                    .split_once('x')
                    .ok_or(format!("--size {v}: expected WxH"))?;
                args.transform.width = w.parse().map_err(|_| format!("--size {v}"))?;
                args.transform.height = h.parse().map_err(|_| format!("--size {v}"))?;
            }
            "--fit" => {
                args.transform.fit = match value()?.as_str() {
                    "fit-in" => Fit::FitIn,
                    "fill" => Fit::Fill,
                    "stretch" => Fit::Stretch,
                    other => return Err(format!("--fit {other}\n{USAGE}")),
                }
            }
            "--format" => {
                let v = value()?;
                args.transform.format = OutputFormat::Fixed(
                    Format::from_name(&v).ok_or(format!("--format {v}\n{USAGE}"))?,
                );
            }
            "--quality" => {
                let v = value()?;
                args.transform.quality = Some(v.parse().map_err(|_| format!("--quality {v}"))?);
            }
            "--repeat" => {
                let v = value()?;
                args.repeat = v.parse().map_err(|_| format!("--repeat {v}"))?;
            }
            "--out" => args.out = Some(PathBuf::from(value()?)),
            "--allocator" => {
                args.tune_allocator = match value()?.as_str() {
                    "sidecar" => true,
                    "glibc" => false,
                    other => return Err(format!("--allocator {other}\n{USAGE}")),
                }
            }
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}\n{USAGE}")),
            _ => args.images.push(PathBuf::from(arg)),
        }
    }
    if args.images.is_empty() || args.repeat == 0 {
        return Err(USAGE.to_owned());
    }
    Ok(args)
}
