//! `scripts/run`: pixmesh on this machine.
//!
//! ```text
//! pixmesh-demo [DIR]                      serve a directory of images (default: samples/)
//! pixmesh-demo --sidecar FILE [--filter FILE]
//!                                         serve with your sidecar TOML (e.g. a real S3 bucket)
//! ```
//!
//! Envoy runs the real wasm filter and transcoder; the sidecar runs in this process. Without
//! `--filter`, one route `/img/` serves the first configured storage with unsigned URLs allowed.
//! Listens on 127.0.0.1:$PIXMESH_PORT (default 8080); Ctrl-C stops it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pixmesh_core::router::Router;
use pixmesh_sidecar::config::Config;
use pixmesh_tests::demo::{ROUTE, directory_sidecar, example_paths, image_names, open_route};
use pixmesh_tests::{Stack, tools};
const USAGE: &str = "usage: pixmesh-demo [DIR] | --sidecar FILE [--filter FILE]";

/// What to serve.
enum Source {
    /// A local directory, listed for example URLs.
    Directory(PathBuf),
    /// The user's own configuration files.
    Configs {
        sidecar: PathBuf,
        filter: Option<PathBuf>,
    },
}

/// The sidecar binary's allocator, so the demo (and `bench/load`, which measures it) renders
/// as `pixmesh-sidecar serve` does.
#[global_allocator]
static ALLOCATOR: pixmesh_sidecar::serving::block_cache::BlockCache =
    pixmesh_sidecar::serving::block_cache::BlockCache;

#[tokio::main]
async fn main() -> ExitCode {
    pixmesh_sidecar::serving::budget::tune_allocator();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pixmesh-demo: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), String> {
    let source = parse_args(std::env::args().skip(1))?;
    let port: u16 = match std::env::var("PIXMESH_PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PIXMESH_PORT={p:?} is not a port number"))?,
        Err(_) => 8080,
    };
    let base = format!("http://127.0.0.1:{port}{ROUTE}");
    let (sidecar, filter, examples) = match &source {
        Source::Directory(dir) => {
            let dir = dir
                .canonicalize()
                .map_err(|e| format!("image directory {}: {e}", dir.display()))?;
            let sidecar = directory_sidecar(&dir);
            let filter = open_route("samples", &format!("{base}unsafe"));
            println!("pixmesh is serving {} at {base}", dir.display());
            (sidecar, filter, image_names(&dir)?)
        }
        Source::Configs { sidecar, filter } => {
            let text = read(sidecar)?;
            let config =
                Config::from_toml(&text).map_err(|e| format!("{}: {e}", sidecar.display()))?;
            let filter = match filter {
                Some(path) => read(path)?,
                None => {
                    let storage = config.storages.keys().next().expect("validated: non-empty");
                    open_route(storage, &format!("{base}unsafe"))
                }
            };
            println!(
                "pixmesh is serving with {} at http://127.0.0.1:{port}/",
                sidecar.display()
            );
            (text, filter, vec!["IMAGE-KEY.jpg".to_owned()])
        }
    };
    Router::from_json(filter.as_bytes()).map_err(|e| format!("filter config: {e}"))?;

    // One Envoy worker per core, as Envoy runs in production (bench/load measures this stack).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stack = Stack::builder(&filter, &sidecar)
        .listen_port(port)
        .envoy_workers(cores)
        .start()
        .await;
    let origin = format!("http://127.0.0.1:{port}");
    for name in examples.iter().take(3) {
        for path in example_paths(name) {
            println!("  {origin}{path}");
        }
    }
    println!("Press Ctrl-C to stop.");
    let _ = tokio::signal::ctrl_c().await;
    drop(stack);
    Ok(())
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Source, String> {
    let mut sidecar = None;
    let mut filter = None;
    let mut dir = None;
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{flag} needs a file\n{USAGE}"))
        };
        match arg.as_str() {
            "--sidecar" => sidecar = Some(value("--sidecar")?),
            "--filter" => filter = Some(value("--filter")?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            _ if arg.starts_with('-') || dir.is_some() => {
                return Err(format!("unexpected argument {arg:?}\n{USAGE}"));
            }
            _ => dir = Some(PathBuf::from(arg)),
        }
    }
    match (dir, sidecar, filter) {
        (dir, None, None) => {
            Ok(Source::Directory(dir.unwrap_or_else(|| {
                tools::workspace_root().join("samples")
            })))
        }
        (None, Some(sidecar), filter) => Ok(Source::Configs { sidecar, filter }),
        _ => Err(USAGE.to_owned()),
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}
