//! The Helm chart (`charts/pixmesh`) for the tests: helm (`PIXMESH_HELM`), rendering with
//! values, the rendered objects as JSON (read by the venv's PyYAML), `scripts/validate-k8s`,
//! and the built `pixmesh-sidecar` the pods' commands run.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::tools;

/// How to get the tools.
pub const SETUP_HINT: &str =
    "run scripts/setup (and `. \"${PIXMESH_CACHE:-$HOME/.cache/pixmesh}/env\"`)";

/// helm: `$PIXMESH_HELM`, else scripts/setup's install.
pub fn helm() -> PathBuf {
    let path = std::env::var_os("PIXMESH_HELM")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| tools::cache_dir().join("helm-v4.1.4/helm"));
    assert!(
        path.is_file(),
        "helm not found at {}: {SETUP_HINT}",
        path.display()
    );
    path
}

/// The sidecar binary: `$PIXMESH_SIDECAR_BIN`, else the debug build in the target directory.
pub fn sidecar_binary() -> PathBuf {
    let path = std::env::var_os("PIXMESH_SIDECAR_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| tools::workspace_root().join("target"))
                .join("debug/pixmesh-sidecar")
        });
    assert!(
        path.is_file(),
        "pixmesh-sidecar not found at {}: build it with `cargo build -p pixmesh-sidecar`",
        path.display()
    );
    path
}

/// The chart's directory.
pub fn chart() -> PathBuf {
    tools::workspace_root().join("charts/pixmesh")
}

/// Runs `cmd`; its stdout, or a panic with its stderr.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `helm template` of the chart with `values` (JSON is YAML) as release `pixmesh` in namespace
/// `images`, or helm's error.
pub fn try_template(values: &Value) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values.to_string()).unwrap();
    let out = Command::new(helm())
        .args(["template", "pixmesh"])
        .arg(chart())
        .args(["--namespace", "images", "-f"])
        .arg(&file)
        .output()
        .expect("run helm");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `helm template` of the chart with `values`; panics with helm's error.
pub fn template(values: &Value) -> String {
    try_template(values).unwrap_or_else(|e| panic!("helm template failed: {e}\nvalues: {values}"))
}

/// The YAML documents of `yaml` as JSON (empty documents left out), read by PyYAML.
pub fn objects(yaml: &str) -> Vec<Value> {
    let mut child = Command::new(tools::python())
        .args([
            "-c",
            "import json, sys, yaml\n\
             print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `scripts/validate-k8s` over `files`: its report, or a panic with it.
pub fn validate(files: &[PathBuf]) -> String {
    let out = Command::new(tools::python())
        .arg(tools::workspace_root().join("scripts/validate-k8s"))
        .args(files)
        .output()
        .expect("run scripts/validate-k8s");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "validate-k8s refused:\n{report}");
    report
}

/// The objects of `kind`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The only object of `kind`; panics unless there is exactly one.
pub fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    match of_kind(objects, kind).as_slice() {
        [one] => one,
        other => panic!("expected one {kind}, got {}", other.len()),
    }
}

/// A JSON array of strings as strings (none when not an array).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The container `name` of the pod spec's `list` (`containers`, `initContainers`).
pub fn container<'a>(pod: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    pod[list].as_array()?.iter().find(|c| c["name"] == name)
}

/// The value after `flag` in `args`.
pub fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}

/// `values` over the chart's defaults at `path` (dotted), as helm merges them.
pub fn value<'a>(values: &'a Value, defaults: &'a Value, path: &str) -> &'a Value {
    let get = |root: &'a Value| {
        path.split('.')
            .try_fold(root, |v, key| v.get(key))
            .filter(|v| !v.is_null())
    };
    get(values)
        .or_else(|| get(defaults))
        .unwrap_or_else(|| panic!("no value at {path}"))
}

/// The chart's values.yaml as JSON.
pub fn defaults() -> Value {
    let yaml = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
    objects(&yaml).remove(0)
}
