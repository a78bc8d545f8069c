//! The Helm chart (`charts/pixmesh`): `helm lint`; `helm template` over a matrix of values
//! (both topologies, IRSA on and off, HPA / PDB / ServiceMonitor / PodMonitor on and off,
//! existing Secrets), every rendered object validated strictly (`scripts/validate-k8s`:
//! Kubernetes' schemas for built-in kinds, the CRDs in testdata/crds for the others) and the
//! configurations in it accepted by the sidecar and the filter; and the standalone pod run for
//! real: its init containers' commands (the `pixmesh-sidecar envoy bootstrap` generator, with
//! the built binary), then Envoy and the sidecar with the rendered arguments, environment and
//! probes, serving an image from Garage.
//!
//! Needs helm (`PIXMESH_HELM`), the venv's Python (`PIXMESH_PYTHON`), Envoy, Garage, the filter
//! (`cargo build -p pixmesh-filter --target wasm32-wasip1 --release`) and the sidecar binary
//! (`cargo build -p pixmesh-sidecar`, which `cargo test --workspace` builds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pixmesh_core::config::FilterConfig;
use pixmesh_core::sign::{HashAlg, ThumborSigner};
use pixmesh_sidecar::config::Config;
use pixmesh_tests::envoy::Envoy;
use pixmesh_tests::garage::Garage;
use pixmesh_tests::{http, ports, tools, vouch};
use serde_json::{Value, json};

const SETUP_HINT: &str =
    "run scripts/setup (and `. \"${PIXMESH_CACHE:-$HOME/.cache/pixmesh}/env\"`)";
/// The URL-signing key the e2e test's Secret holds.
const URL_KEY: &str = "helm-test-url-signing-key";

fn helm() -> PathBuf {
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
fn sidecar_binary() -> PathBuf {
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

fn chart() -> PathBuf {
    tools::workspace_root().join("charts/pixmesh")
}

/// Runs `cmd`; its stdout, or a panic with its stderr.
fn run(cmd: &mut Command) -> String {
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
fn try_template(values: &Value) -> Result<String, String> {
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

fn template(values: &Value) -> String {
    try_template(values).unwrap_or_else(|e| panic!("helm template failed: {e}\nvalues: {values}"))
}

/// The YAML documents of `yaml` as JSON (empty documents left out), read by PyYAML.
fn objects(yaml: &str) -> Vec<Value> {
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
fn validate(files: &[PathBuf]) -> String {
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

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    match of_kind(objects, kind).as_slice() {
        [one] => one,
        other => panic!("expected one {kind}, got {}", other.len()),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    pod[list].as_array()?.iter().find(|c| c["name"] == name)
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}

/// Secret values for the filter's `{"env": NAME}` references in checks that only parse: 32
/// bytes, hex (imgproxy keys and salts are hex).
fn some_env(_name: &str) -> Option<String> {
    Some("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into())
}

/// One set of values and what it should render.
struct Case {
    name: &'static str,
    values: Value,
}

fn cases() -> Vec<Case> {
    let irsa = json!({ "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/pixmesh" });
    vec![
        Case {
            name: "standalone-defaults",
            values: json!({}),
        },
        Case {
            name: "standalone-irsa-hpa-monitors-ingress-route",
            values: json!({
                "serviceAccount": { "annotations": irsa },
                "autoscaling": { "enabled": true },
                "metrics": { "serviceMonitor": { "enabled": true }, "podMonitor": { "enabled": true } },
                "ingress": { "enabled": true, "className": "nginx" },
                "httpRoute": { "enabled": true, "parentRefs": [{ "name": "eg" }], "hostnames": ["images.example.com"] },
                "workers": 4,
            }),
        },
        Case {
            name: "standalone-s3-secret-no-pdb-no-sa-cgroup-workers",
            values: json!({
                "secrets": {
                    "s3": "pixmesh-s3",
                    "renderKey": { "name": "rk", "key": "render" },
                    "filterEnv": [
                        { "name": "PIXMESH_URL_SIGNING_KEY", "secretName": "url-keys", "key": "thumbor" },
                        { "name": "PIXMESH_IMGPROXY_KEY", "secretName": "url-keys", "key": "imgproxy-key" },
                        { "name": "PIXMESH_IMGPROXY_SALT", "secretName": "url-keys", "key": "imgproxy-salt" },
                    ],
                },
                "filterConfig": { "routes": [
                    { "prefix": "/img/", "storage": "images", "secret": { "env": "PIXMESH_URL_SIGNING_KEY" } },
                    { "prefix": "/ip/", "grammar": "imgproxy", "storage": "images",
                      "keys": [{ "key": { "env": "PIXMESH_IMGPROXY_KEY" }, "salt": { "env": "PIXMESH_IMGPROXY_SALT" } }] },
                ]},
                "podDisruptionBudget": { "enabled": false },
                "serviceAccount": { "create": false },
                "workers": 0,
                "image": { "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" },
            }),
        },
        Case {
            name: "mesh-istio-irsa-hpa-servicemonitor",
            values: json!({
                "topology": "mesh",
                "mesh": { "istio": { "enabled": true, "namespace": "istio-ingress" } },
                "serviceAccount": { "annotations": irsa },
                "autoscaling": { "enabled": true },
                "metrics": { "serviceMonitor": { "enabled": true } },
            }),
        },
        Case {
            name: "mesh-envoy-gateway-s3-secret-podmonitor-no-pdb",
            values: json!({
                "topology": "mesh",
                "mesh": {
                    "envoyGateway": { "enabled": true, "hostnames": ["images.example.com"] },
                    "wasm": { "url": "https://wasm.example.com/pixmesh_filter.wasm",
                              "sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" },
                },
                "secrets": { "s3": "pixmesh-s3" },
                "metrics": { "podMonitor": { "enabled": true } },
                "podDisruptionBudget": { "enabled": false },
            }),
        },
    ]
}

/// `values` over the chart's defaults at `path` (dotted), as helm merges them.
fn value<'a>(values: &'a Value, defaults: &'a Value, path: &str) -> &'a Value {
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
fn defaults() -> Value {
    let yaml = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
    objects(&yaml).remove(0)
}

/// What every rendering must hold, whatever the values.
fn check(case: &Case, objects: &[Value], defaults: &Value) {
    let name = case.name;
    let v = |path| value(&case.values, defaults, path);
    let standalone = v("topology") == "standalone";
    let fullname = "pixmesh";

    assert!(
        of_kind(objects, "Secret").is_empty(),
        "{name}: the chart creates no Secret"
    );
    let deployment = one(objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];

    // Restricted pod: non-root, no privilege escalation, read-only root, no capabilities.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{name}"
    );
    let all: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| pod[*l].as_array().into_iter().flatten())
        .collect();
    for c in &all {
        let sc = &c["securityContext"];
        assert_eq!(
            sc["allowPrivilegeEscalation"], false,
            "{name}: {}",
            c["name"]
        );
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}: {}", c["name"]);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{name}: {} has a memory limit",
            c["name"]
        );
    }
    for c in pod["containers"].as_array().unwrap() {
        assert!(
            c["livenessProbe"].is_object() && c["readinessProbe"].is_object(),
            "{name}: {} has both probes",
            c["name"]
        );
    }
    // The sidecar's probes are its health endpoints, on the port its configuration serves.
    let sidecar = container(pod, "containers", "sidecar").unwrap();
    assert_eq!(
        sidecar["readinessProbe"]["httpGet"]["path"], "/readyz",
        "{name}"
    );
    assert_eq!(
        sidecar["livenessProbe"]["httpGet"]["path"], "/livez",
        "{name}"
    );
    let names: Vec<&str> = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        if standalone {
            vec!["envoy", "sidecar"]
        } else {
            vec!["sidecar"]
        },
        "{name}"
    );
    assert_eq!(
        pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
        "{name}: spread over this release's pods"
    );

    // The service account, with its annotations (IRSA, Workload Identity).
    let sa_create = v("serviceAccount.create").as_bool().unwrap();
    let accounts = of_kind(objects, "ServiceAccount");
    if sa_create {
        assert_eq!(accounts.len(), 1, "{name}");
        assert_eq!(pod["serviceAccountName"], fullname, "{name}");
        let annotations = &accounts[0]["metadata"]["annotations"];
        match case.values.pointer("/serviceAccount/annotations") {
            Some(a) => assert_eq!(annotations, a, "{name}"),
            None => assert!(annotations.is_null(), "{name}"),
        }
    } else {
        assert!(accounts.is_empty(), "{name}");
        assert_eq!(pod["serviceAccountName"], "default", "{name}");
    }

    // HPA, PDB, monitors: present exactly when enabled.
    let hpa = v("autoscaling.enabled").as_bool().unwrap();
    assert_eq!(
        of_kind(objects, "HorizontalPodAutoscaler").len(),
        hpa as usize,
        "{name}"
    );
    assert_eq!(deployment["spec"]["replicas"].is_null(), hpa, "{name}");
    let pdb = v("podDisruptionBudget.enabled").as_bool().unwrap();
    assert_eq!(
        of_kind(objects, "PodDisruptionBudget").len(),
        pdb as usize,
        "{name}"
    );
    let sm = v("metrics.serviceMonitor.enabled").as_bool().unwrap();
    let pm = v("metrics.podMonitor.enabled").as_bool().unwrap();
    assert_eq!(
        of_kind(objects, "ServiceMonitor").len(),
        sm as usize,
        "{name}"
    );
    assert_eq!(of_kind(objects, "PodMonitor").len(), pm as usize, "{name}");
    let service = one(objects, "Service");
    let service_ports: Vec<&str> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(service_ports.contains(&"metrics"), sm || pm, "{name}");

    // Secrets by reference only: the render key for the sidecar, S3 keys as envFrom.
    let render_key = v("secrets.renderKey.name").as_str().unwrap();
    let env_secret = |c: &Value, var: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == var)
            .map(|e| e["valueFrom"]["secretKeyRef"]["name"].clone())
    };
    assert_eq!(
        env_secret(sidecar, "PIXMESH_RENDER_KEY"),
        Some(json!(render_key)),
        "{name}"
    );
    let s3 = v("secrets.s3").as_str().unwrap();
    if s3.is_empty() {
        assert!(sidecar["envFrom"].is_null(), "{name}");
    } else {
        assert_eq!(sidecar["envFrom"][0]["secretRef"]["name"], s3, "{name}");
    }

    // The sidecar's configuration is one the sidecar accepts, with the chart's workers.
    let configmap = one(objects, "ConfigMap");
    let toml = configmap["data"]["sidecar.toml"].as_str().unwrap();
    let config = Config::from_toml(toml).unwrap_or_else(|e| panic!("{name}: {e}\n{toml}"));
    let workers = v("workers").as_u64().unwrap() as usize;
    assert_eq!(
        config.limits.workers,
        (workers > 0).then_some(workers),
        "{name}"
    );
    assert_eq!(config.listen.ip().is_loopback(), standalone, "{name}");
    assert_eq!(
        config.metrics_listen.map(|a| a.port()),
        v("metrics.port").as_u64().map(|p| p as u16),
        "{name}: the probes' and monitors' port is served"
    );
    assert!(
        sidecar["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "metrics" && p["containerPort"] == *v("metrics.port")),
        "{name}"
    );
    assert_eq!(
        config.storages.keys().collect::<Vec<_>>(),
        v("sidecarConfig.storages")
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        "{name}"
    );

    // The sidecar's memory at worst (renders' reservations, as many sources read ahead, its own
    // ~50 MB) fits its memory limit.
    let limit = sidecar["resources"]["limits"]["memory"].as_str().unwrap();
    let limit: u64 = match limit.split_at(limit.len() - 2) {
        (n, "Gi") => n.parse::<u64>().unwrap() << 30,
        (n, "Mi") => n.parse::<u64>().unwrap() << 20,
        _ => panic!("{name}: memory limit {limit}"),
    };
    assert!(
        2 * config.limits.memory_budget_bytes + (64 << 20) <= limit,
        "{name}: budget {} MiB under a {} MiB limit",
        config.limits.memory_budget_bytes >> 20,
        limit >> 20
    );

    // Draining and renders in flight fit in the grace period.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let drain = v("envoy.drainSeconds").as_u64().unwrap();
    assert!(grace >= drain + 30, "{name}: {grace} s of grace");

    if standalone {
        let envoy = container(pod, "containers", "envoy").unwrap();
        let args = strings(&envoy["args"]);
        let concurrency = if workers > 0 { workers } else { 2 };
        assert_eq!(
            flag(&args, "--concurrency"),
            Some(concurrency.to_string().as_str()),
            "{name}: Envoy's workers follow the same figure"
        );
        assert_eq!(
            env_secret(envoy, "PIXMESH_RENDER_KEY"),
            Some(json!(render_key)),
            "{name}"
        );
        let filter = configmap["data"]["filter.json"].as_str().unwrap();
        FilterConfig::from_json_with_env(filter.as_bytes(), &some_env)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{filter}"));
        // Every {"env": NAME} of the filter configuration is in Envoy's environment.
        for entry in v("secrets.filterEnv").as_array().unwrap() {
            let var = entry["name"].as_str().unwrap();
            assert_eq!(
                env_secret(envoy, var),
                Some(entry["secretName"].clone()),
                "{name}: {var}"
            );
        }
        let generator = container(pod, "initContainers", "envoy-config").unwrap();
        let gen_args = strings(&generator["args"]);
        assert_eq!(&gen_args[..2], ["envoy", "bootstrap"], "{name}");
        assert_eq!(flag(&gen_args, "--out"), flag(&args, "-c"), "{name}");
    } else {
        let filter = if v("mesh.istio.enabled") == true {
            let plugin = one(objects, "WasmPlugin");
            assert_eq!(plugin["metadata"]["namespace"], "istio-ingress", "{name}");
            let env: Vec<&Value> = plugin["spec"]["vmConfig"]["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| &e["name"])
                .collect();
            assert!(env.contains(&&json!("PIXMESH_RENDER_KEY")), "{name}");
            plugin["spec"]["pluginConfig"].clone()
        } else {
            let policy = one(objects, "EnvoyExtensionPolicy");
            let route = one(objects, "HTTPRoute");
            assert_eq!(
                policy["spec"]["targetRefs"][0]["name"], route["metadata"]["name"],
                "{name}"
            );
            assert_eq!(
                route["spec"]["rules"][0]["backendRefs"][0]["name"], service["metadata"]["name"],
                "{name}: rule 0 makes the sidecar's cluster"
            );
            policy["spec"]["wasm"][0]["config"].clone()
        };
        let parsed =
            FilterConfig::from_json_with_env(filter.to_string().as_bytes(), &some_env).unwrap();
        let call = parsed.call.expect("call mode in a mesh");
        assert_eq!(
            call.authority.as_deref(),
            Some("pixmesh.images.svc.cluster.local:50051"),
            "{name}"
        );
        let cluster = call.cluster;
        assert_eq!(
            service["spec"]["ports"][0]["appProtocol"],
            if v("mesh.istio.enabled") == true {
                "grpc"
            } else {
                "kubernetes.io/h2c"
            },
            "{name}: the mesh's cluster for the sidecar is HTTP/2"
        );
        let expected = if v("mesh.istio.enabled") == true {
            "outbound|50051||pixmesh.images.svc.cluster.local"
        } else {
            "httproute/images/pixmesh/rule/0"
        };
        assert_eq!(cluster, expected, "{name}");
    }
}

#[test]
fn helm_lint_accepts_the_chart_and_its_examples() {
    let mut files = vec![None];
    for entry in std::fs::read_dir(chart().join("examples")).unwrap() {
        files.push(Some(entry.unwrap().path()));
    }
    for file in files {
        let mut cmd = Command::new(helm());
        cmd.args(["lint", "--strict"]).arg(chart());
        if let Some(file) = &file {
            cmd.arg("-f").arg(file);
        }
        let out = run(&mut cmd);
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn every_object_of_the_values_matrix_validates_and_holds_its_values() {
    let defaults = defaults();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for case in cases() {
        let yaml = template(&case.values);
        check(&case, &objects(&yaml), &defaults);
        let file = dir.path().join(format!("{}.yaml", case.name));
        std::fs::write(&file, yaml).unwrap();
        files.push(file);
    }
    let report = validate(&files);
    assert!(report.contains("valid"), "{report}");
}

#[test]
fn the_examples_render_and_validate() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(chart().join("examples")).unwrap() {
        let example = entry.unwrap().path();
        let yaml = run(Command::new(helm())
            .args(["template", "pixmesh"])
            .arg(chart())
            .args(["-n", "pixmesh", "-f"])
            .arg(&example));
        let objects = objects(&yaml);
        let toml = one(&objects, "ConfigMap")["data"]["sidecar.toml"]
            .as_str()
            .unwrap()
            .to_owned();
        Config::from_toml(&toml).unwrap_or_else(|e| panic!("{}: {e}", example.display()));
        let file = dir.path().join(example.file_name().unwrap());
        std::fs::write(&file, yaml).unwrap();
        files.push(file);
    }
    assert!(files.len() >= 2, "the examples are there");
    validate(&files);
}

#[test]
fn values_the_chart_cannot_serve_are_refused() {
    for (values, expected) in [
        // values.schema.json: unknown keys, wrong kinds, wrong ranges.
        (json!({ "topology": "sidecar" }), "at '/topology'"),
        (json!({ "topologgy": "mesh" }), "'topologgy' not allowed"),
        (json!({ "workers": -1 }), "at '/workers'"),
        (
            json!({ "secrets": { "s3": { "name": "x" } } }),
            "at '/secrets/s3'",
        ),
        (
            json!({ "image": { "digest": "latest" } }),
            "at '/image/digest'",
        ),
        (
            json!({ "topology": "mesh" }),
            "enable mesh.istio or mesh.envoyGateway",
        ),
        (
            json!({ "sidecarConfig": { "result_storage": { "storage": null } } }),
            "null values have no TOML form",
        ),
        (
            json!({ "httpRoute": { "enabled": true } }),
            "httpRoute.parentRefs",
        ),
    ] {
        let err = try_template(&values).expect_err(&values.to_string());
        assert!(err.contains(expected), "{values}: {err}");
    }
}

/// A process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A container's path in the pod as a path under `root` here.
fn host_path(root: &Path, arg: &str) -> String {
    ["/etc/pixmesh", "/etc/envoy", "/opt/pixmesh"]
        .iter()
        .fold(arg.to_owned(), |arg, dir| {
            arg.replace(dir, &format!("{}{dir}", root.display()))
        })
}

/// The container's command line (command + args) mapped to this machine.
fn command_line(root: &Path, container: &Value) -> Command {
    let mut line = strings(&container["command"]);
    if line.is_empty() {
        // The image's entrypoint (Dockerfile).
        line.push("pixmesh-sidecar".into());
    }
    line.extend(strings(&container["args"]));
    let program = match line[0].as_str() {
        "pixmesh-sidecar" => sidecar_binary(),
        other => PathBuf::from(other),
    };
    let mut cmd = Command::new(program);
    cmd.args(line[1..].iter().map(|a| host_path(root, a)));
    cmd
}

/// The container's environment, each Secret reference resolved from `secrets`
/// (secret name, key) → value, and `envFrom` Secrets from `secret_env`.
fn environment(
    container: &Value,
    secrets: &BTreeMap<(&str, &str), String>,
    secret_env: &BTreeMap<&str, Vec<(String, String)>>,
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let name = from["secretRef"]["name"].as_str().unwrap();
        env.extend(secret_env[name].iter().cloned());
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_owned();
        let value = match (&e["value"], &e["valueFrom"]["secretKeyRef"]) {
            (Value::String(v), _) => v.clone(),
            (_, r) if r.is_object() => {
                let key = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
                secrets
                    .get(&key)
                    .unwrap_or_else(|| panic!("no Secret {key:?} for {name}"))
                    .clone()
            }
            other => panic!("env {name}: {other:?}"),
        };
        env.push((name, value));
    }
    env
}

/// Runs the pod's sidecar container with its arguments and environment (its files under
/// `root`), and waits until its own probes pass, asked as the kubelet asks them.
async fn run_sidecar_container(
    root: &Path,
    pod: &Value,
    secrets: &Secrets,
    secret_env: &SecretEnv,
) -> Process {
    let sidecar = container(pod, "containers", "sidecar").unwrap();
    let mut cmd = command_line(root, sidecar);
    cmd.env_clear()
        .envs(environment(sidecar, secrets, secret_env))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("sidecar.log")).unwrap());
    let process = Process(cmd.spawn().expect("start pixmesh-sidecar"));
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &sidecar[probe]["httpGet"];
        let port = sidecar["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == get["port"])
            .unwrap_or_else(|| panic!("{probe}: no port {}", get["port"]))["containerPort"]
            .clone();
        let url = format!("http://127.0.0.1:{port}{}", get["path"].as_str().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let url = url.clone();
            let answer = tokio::task::spawn_blocking(move || http::try_get(&url, &[]))
                .await
                .unwrap();
            if answer.is_ok_and(|r| r.status == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the sidecar's {probe} never passed:\n{}",
                std::fs::read_to_string(root.join("sidecar.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    process
}

/// The pod's files under `root`: the ConfigMap's under /etc/pixmesh, the image's filter under
/// /opt/pixmesh, an empty /etc/envoy (the emptyDir).
fn pod_files(root: &Path, configmap: &Value) {
    for dir in ["etc/pixmesh", "etc/envoy", "opt/pixmesh"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for (file, text) in configmap.as_object().unwrap() {
        std::fs::write(root.join("etc/pixmesh").join(file), text.as_str().unwrap()).unwrap();
    }
    std::fs::copy(
        tools::filter_wasm(),
        root.join("opt/pixmesh/pixmesh_filter.wasm"),
    )
    .unwrap();
}

/// Secret values by (Secret, key).
type Secrets = BTreeMap<(&'static str, &'static str), String>;
/// The variables of Secrets given whole (`envFrom`), by Secret.
type SecretEnv = BTreeMap<&'static str, Vec<(String, String)>>;

/// The Secrets the e2e tests' values name, with their values.
fn test_secrets(garage: &Garage) -> (Secrets, SecretEnv) {
    let secrets = BTreeMap::from([
        (
            ("pixmesh-render-key", "key"),
            vouch::render_key().to_owned(),
        ),
        (("pixmesh-url-signing-key", "key"), URL_KEY.to_owned()),
    ]);
    let secret_env = BTreeMap::from([(
        "pixmesh-s3",
        vec![
            (
                "AWS_ACCESS_KEY_ID".to_owned(),
                garage.access_key().to_owned(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                garage.secret_key().to_owned(),
            ),
        ],
    )]);
    (secrets, secret_env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_chart_serves_an_image_through_istio_envoy_in_call_mode() {
    use pixmesh_tests::control_plane;
    let garage = Garage::start().await;
    let bucket = garage.default_bucket().to_owned();
    garage
        .put(
            &bucket,
            "photos/medium.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    let [sidecar_port, metrics_port] = ports::free_ports::<2>();
    let values = json!({
        "topology": "mesh",
        "mesh": { "istio": { "enabled": true, "namespace": "istio-ingress" } },
        "sidecar": { "port": sidecar_port },
        "metrics": { "port": metrics_port },
        "secrets": { "s3": "pixmesh-s3" },
        "sidecarConfig": { "storages": { "images": {
            "type": "s3", "bucket": bucket, "endpoint": garage.endpoint(), "region": garage.region(),
        }}},
    });
    let objects = objects(&template(&values));
    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    pod_files(root, &one(&objects, "ConfigMap")["data"]);
    let (secrets, secret_env) = test_secrets(&garage);
    let _sidecar = run_sidecar_container(root, pod, &secrets, &secret_env).await;

    // The ingress gateway's Envoy as Istio configures it from the chart's WasmPlugin and
    // Service (the Gateway from k8s/istio), the Service's port reaching the sidecar.
    let plugin = one(&objects, "WasmPlugin");
    // helm install puts the Service in the release's namespace.
    let mut service = one(&objects, "Service").clone();
    service["metadata"]["namespace"] = json!("images");
    let gateway =
        control_plane::objects(&control_plane::k8s_dir("istio").join("ingress-gateway.yaml"));
    let gateway = control_plane::object(&gateway, "Gateway", "pixmesh");
    let endpoints = BTreeMap::from([(
        ("images".to_owned(), "pixmesh".to_owned(), sidecar_port),
        sidecar_port,
    )]);
    let app = control_plane::Upstream::start(vec![]).await;
    let sim = control_plane::istio(
        plugin,
        gateway,
        &[&service],
        &endpoints,
        app.port(),
        &tools::filter_wasm(),
    );
    // The gateway's istio-proxy has the keys the plugin's vmConfig names, from the Secrets.
    let env: Vec<(String, String)> = plugin["spec"]["vmConfig"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap();
            let value = match name {
                "PIXMESH_RENDER_KEY" => vouch::render_key().to_owned(),
                "PIXMESH_URL_SIGNING_KEY" => URL_KEY.to_owned(),
                other => panic!("a key the test has no Secret for: {other}"),
            };
            (name.to_owned(), value)
        })
        .collect();
    let proxy = Envoy::start_with_env(&sim.bootstrap, &["--concurrency", "1"], &env).await;
    let signed = "fit-in/120x120/photos/medium.jpg";
    let sig = ThumborSigner::new(URL_KEY, HashAlg::Sha1, None).sign(signed);
    let url = format!("{}/img/{sig}/{signed}", proxy.base_url());
    let response =
        tokio::task::spawn_blocking(move || http::get(&url, &[("host", "images.example.com")]))
            .await
            .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("image/jpeg"));
    let image = image::load_from_memory(&response.body).unwrap();
    assert_eq!(image.width().max(image.height()), 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_chart_serves_an_image_through_envoy_gateway_in_call_mode() {
    use pixmesh_tests::control_plane::{self, EgGateway};
    let garage = Garage::start().await;
    let bucket = garage.default_bucket().to_owned();
    garage
        .put(
            &bucket,
            "photos/medium.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    let wasm = std::fs::read(tools::filter_wasm()).unwrap();
    let digest = control_plane::sha256_hex(&wasm);
    let [sidecar_port, metrics_port] = ports::free_ports::<2>();
    let values = json!({
        "topology": "mesh",
        "mesh": {
            "envoyGateway": { "enabled": true, "hostnames": ["images.example.com"] },
            "wasm": { "url": "https://wasm.example.com/pixmesh_filter.wasm", "sha256": digest },
        },
        "sidecar": { "port": sidecar_port },
        "metrics": { "port": metrics_port },
        "secrets": { "s3": "pixmesh-s3" },
        "sidecarConfig": { "storages": { "images": {
            "type": "s3", "bucket": bucket, "endpoint": garage.endpoint(), "region": garage.region(),
        }}},
    });
    let objects = objects(&template(&values));
    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    pod_files(root, &one(&objects, "ConfigMap")["data"]);
    let (secrets, secret_env) = test_secrets(&garage);
    let _sidecar = run_sidecar_container(root, pod, &secrets, &secret_env).await;

    // Envoy Gateway's proxy as it configures it from the chart's policy, HTTPRoute and Service
    // (in the release's namespace, as helm install puts them); the module from its cache.
    let in_release = |kind: &str| {
        let mut object = one(&objects, kind).clone();
        object["metadata"]["namespace"] = json!("images");
        object
    };
    let (policy, route, service) = (
        in_release("EnvoyExtensionPolicy"),
        in_release("HTTPRoute"),
        in_release("Service"),
    );
    let code =
        control_plane::Upstream::start(vec![(format!("/{digest}.wasm"), wasm.clone())]).await;
    let endpoints = BTreeMap::from([(
        ("images".to_owned(), "pixmesh".to_owned(), sidecar_port),
        sidecar_port,
    )]);
    let sim = control_plane::envoy_gateway(
        &EgGateway {
            namespace: "default",
            name: "eg",
            listener: "http",
        },
        &policy,
        &[&route],
        &[&service],
        &endpoints,
        code.port(),
        &wasm,
    );
    let env: Vec<(String, String)> = strings(&policy["spec"]["wasm"][0]["env"]["hostKeys"])
        .into_iter()
        .map(|name| {
            let value = match name.as_str() {
                "PIXMESH_RENDER_KEY" => vouch::render_key().to_owned(),
                "PIXMESH_URL_SIGNING_KEY" => URL_KEY.to_owned(),
                other => panic!("a key the test has no Secret for: {other}"),
            };
            (name, value)
        })
        .collect();
    let proxy = Envoy::start_with_env(&sim.bootstrap, &["--concurrency", "1"], &env).await;
    let signed = "fit-in/120x120/photos/medium.jpg";
    let sig = ThumborSigner::new(URL_KEY, HashAlg::Sha1, None).sign(signed);
    let url = format!("{}/img/{sig}/{signed}", proxy.base_url());
    let response =
        tokio::task::spawn_blocking(move || http::get(&url, &[("host", "images.example.com")]))
            .await
            .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("image/jpeg"));
    let image = image::load_from_memory(&response.body).unwrap();
    assert_eq!(image.width().max(image.height()), 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_chart_serves_an_image_through_its_envoy_and_sidecar() {
    let garage = Garage::start().await;
    let bucket = garage.default_bucket().to_owned();
    garage
        .put(
            &bucket,
            "photos/medium.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    let [envoy_port, admin_port, sidecar_port, metrics_port] = ports::free_ports::<4>();
    let values = json!({
        "workers": 1,
        "envoy": { "port": envoy_port, "adminPort": admin_port, "drainSeconds": 1 },
        "sidecar": { "port": sidecar_port },
        "metrics": { "port": metrics_port },
        "secrets": { "s3": "pixmesh-s3" },
        "sidecarConfig": { "storages": { "images": {
            "type": "s3", "bucket": bucket, "endpoint": garage.endpoint(), "region": garage.region(),
        }}},
    });
    let objects = objects(&template(&values));
    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];

    // The pod's files: the ConfigMap's, the image's filter, an empty emptyDir.
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    pod_files(root, &one(&objects, "ConfigMap")["data"]);

    // The init containers, in order, for real: the filter copied, Envoy's config generated.
    for init in pod["initContainers"].as_array().unwrap() {
        run(&mut command_line(root, init));
    }
    let envoy_yaml = std::fs::read_to_string(root.join("etc/envoy/envoy.yaml"))
        .expect("the init containers wrote Envoy's configuration");

    let (secrets, secret_env) = test_secrets(&garage);
    let _sidecar = run_sidecar_container(root, pod, &secrets, &secret_env).await;

    // Envoy with the container's arguments (less the config file and log level, which the
    // harness sets) and environment.
    let envoy = container(pod, "containers", "envoy").unwrap();
    let args = strings(&envoy["args"]);
    assert_eq!(flag(&args, "-c"), Some("/etc/envoy/envoy.yaml"));
    assert_eq!(flag(&args, "--concurrency"), Some("1"));
    let mut extra = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-c" | "--log-level" => {
                it.next();
            }
            _ => extra.push(arg.as_str()),
        }
    }
    let env = environment(envoy, &secrets, &secret_env);
    let probe = |name: &str| {
        let line = strings(&envoy[name]["exec"]["command"]);
        assert!(!line.is_empty(), "Envoy's {name} runs a command");
        move || {
            Command::new(&line[0])
                .args(&line[1..])
                .output()
                .unwrap()
                .status
                .success()
        }
    };
    for name in ["readinessProbe", "livenessProbe"] {
        let check = probe(name);
        assert!(
            !tokio::task::spawn_blocking(check).await.unwrap(),
            "Envoy's {name} fails while no Envoy runs"
        );
    }
    let proxy = Envoy::start_with_env(&envoy_yaml, &extra, &env).await;
    for name in ["readinessProbe", "livenessProbe"] {
        let check = probe(name);
        assert!(
            tokio::task::spawn_blocking(check).await.unwrap(),
            "Envoy's {name} passes once it serves"
        );
    }
    assert_eq!(proxy.port(), envoy_port, "the chart's port");

    let signed = "fit-in/120x120/photos/medium.jpg";
    let sig = ThumborSigner::new(URL_KEY, HashAlg::Sha1, None).sign(signed);
    let url = format!("http://127.0.0.1:{envoy_port}/img/{sig}/{signed}");
    let response = tokio::task::spawn_blocking(move || http::get(&url, &[]))
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("image/jpeg"));
    let image = image::load_from_memory(&response.body).unwrap();
    assert!(
        image.width() <= 120 && image.height() <= 120 && image.width().max(image.height()) == 120,
        "{}x{}",
        image.width(),
        image.height()
    );
    // An unsigned URL is refused: the URL-signing key reached the filter from its Secret.
    let url = format!("http://127.0.0.1:{envoy_port}/img/unsafe/{signed}");
    let response = tokio::task::spawn_blocking(move || http::get(&url, &[]))
        .await
        .unwrap();
    assert_eq!(response.status, 403, "{}", response.text());

    // Envoy's preStop hook, for real: it asks the admin port to drain, and the listener stops
    // (a new connection is refused) once the drain time is over.
    let admin = proxy.admin_url();
    let stopped = move || {
        let url = format!("{admin}/stats?filter=^listener_manager.listener_stopped$");
        let text = http::get(&url, &[]).text();
        text.trim()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let check = stopped.clone();
    assert_eq!(tokio::task::spawn_blocking(check).await.unwrap(), 0);
    let hook = strings(&envoy["lifecycle"]["preStop"]["exec"]["command"]);
    run(Command::new(&hook[0]).args(&hook[1..]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::task::spawn_blocking(stopped.clone()).await.unwrap() == 0 {
        assert!(
            Instant::now() < deadline,
            "the listener never stopped after the hook"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!("http://127.0.0.1:{envoy_port}/img/unsafe/{signed}");
    let after = tokio::task::spawn_blocking(move || http::try_get(&url, &[]))
        .await
        .unwrap();
    assert!(
        after.is_err(),
        "a drained Envoy takes no new connection: {after:?}"
    );
}

/// The value of `key = "…"` on the first line of `text` that starts with `key`.
fn toml_string<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key))
        .find_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"'))
}

#[test]
fn the_image_holds_what_the_chart_runs() {
    let root = tools::workspace_root();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let dockerfile = read("Dockerfile");
    let cargo = read("Cargo.toml");
    let chart_yaml = read("charts/pixmesh/Chart.yaml");
    let defaults = defaults();

    // One version: the workspace's, the chart's appVersion (the default image tag), the image's.
    let version = toml_string(&cargo, "version").unwrap();
    assert!(chart_yaml.contains(&format!("appVersion: \"{version}\"")));
    assert!(dockerfile.contains(&format!("ARG VERSION={version}")));
    // The toolchain is at least the workspace's rust-version.
    let need = toml_string(&cargo, "rust-version").unwrap();
    let from = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .and_then(|t| t.split('-').next())
        .unwrap();
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        parse(from) >= parse(need)[..2].to_vec(),
        "rust:{from} < {need}"
    );

    // The chart's Envoy is the one the tests run (scripts/setup's).
    let setup = read("scripts/setup");
    let envoy_version = setup
        .lines()
        .find_map(|l| l.strip_prefix("ENVOY_VERSION="))
        .unwrap();
    assert_eq!(
        defaults["envoy"]["image"]["tag"],
        format!("v{envoy_version}"),
        "the chart's Envoy image is the tested Envoy"
    );

    // What the chart's pod takes from the image: the entrypoint and the filter's path.
    assert!(dockerfile.contains("ENTRYPOINT [\"pixmesh-sidecar\"]"));
    assert!(dockerfile.contains("COPY --from=build /out/pixmesh_filter.wasm /opt/pixmesh/"));
    let objects = objects(&template(&json!({})));
    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    let copy = strings(&container(pod, "initContainers", "filter").unwrap()["command"]);
    assert_eq!(copy[1], "/opt/pixmesh/pixmesh_filter.wasm");
    assert!(dockerfile.contains(&format!("EXPOSE {}", defaults["sidecar"]["port"])));
    assert!(dockerfile.contains("USER 65532:65532"));
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    for label in ["source", "version", "licenses", "revision"] {
        assert!(
            dockerfile.contains(&format!("org.opencontainers.image.{label}=")),
            "{label}"
        );
    }
    assert!(dockerfile.contains(&format!(
        "org.opencontainers.image.licenses=\"{}\"",
        toml_string(&cargo, "license").unwrap()
    )));

    // The dependency layer builds every member from its manifest alone: each member's
    // Cargo.toml is copied, and each binary and bench target has a stand-in.
    let members = cargo
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .unwrap();
    for member in members.trim_matches(['[', ']']).split(',') {
        let member = member.trim().trim_matches('"');
        assert!(
            dockerfile.contains(&format!("COPY {member}/Cargo.toml {member}/"))
                || dockerfile.contains(&format!("COPY {member} {member}")),
            "the dependency layer lacks {member}"
        );
    }
    let sidecar = read("sidecar/Cargo.toml");
    let mut targets: Vec<String> = sidecar
        .lines()
        .filter_map(|l| l.strip_prefix("path = "))
        .map(|p| format!("sidecar/{}", p.trim_matches('"')))
        .collect();
    let mut in_bench = false;
    for line in sidecar.lines() {
        if line.starts_with('[') {
            in_bench = line == "[[bench]]";
        } else if in_bench && let Some(name) = toml_string(line, "name") {
            targets.push(format!("sidecar/benches/{name}.rs"));
        }
    }
    assert!(targets.len() >= 3, "{targets:?}");
    for target in targets {
        assert!(
            dockerfile.contains(&target),
            "the dependency layer has no stand-in for {target}"
        );
    }
}

#[test]
fn the_readme_deploys_with_helm_install_and_an_example_that_names_a_bucket_and_a_secret() {
    let readme = std::fs::read_to_string(tools::workspace_root().join("README.md")).unwrap();
    let deploy = &readme[readme.find("\n## Deploy\n").expect("a Deploy section")..];
    let first_block = deploy.split("```").nth(1).expect("a command block");
    let install = first_block
        .lines()
        .find(|l| l.starts_with("helm install "))
        .expect("Deploy starts with helm install");
    let file = install
        .split_whitespace()
        .skip_while(|w| *w != "-f")
        .nth(1)
        .expect("helm install -f VALUES");
    let values =
        objects(&std::fs::read_to_string(tools::workspace_root().join(file)).unwrap()).remove(0);
    assert!(
        !values["secrets"]["s3"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{file} names an existing Secret for S3"
    );
    let storages = values["sidecarConfig"]["storages"].as_object().unwrap();
    assert!(
        storages.values().any(|s| s["bucket"].is_string()),
        "{file} names a bucket"
    );
    // Every Secret the values name is created by a command of the block.
    let mut names = vec![values["secrets"]["s3"].as_str().unwrap().to_owned()];
    names.push(
        value(&values, &defaults(), "secrets.renderKey.name")
            .as_str()
            .unwrap()
            .to_owned(),
    );
    for entry in value(&values, &defaults(), "secrets.filterEnv")
        .as_array()
        .unwrap()
    {
        names.push(entry["secretName"].as_str().unwrap().to_owned());
    }
    for name in names {
        assert!(
            first_block.contains(&format!("create secret generic {name} ")),
            "the README creates the Secret {name}"
        );
    }
}
