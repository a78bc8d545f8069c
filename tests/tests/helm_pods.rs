//! The chart's pods run for real: the standalone pod's init containers (the filter copied, then
//! `pixmesh-sidecar envoy bootstrap` with the built binary), Envoy and the sidecar with the
//! rendered arguments, environment, probes and preStop hook, serving an image from Garage; and
//! the mesh topology's sidecar container behind an Envoy configured the way Istio and Envoy
//! Gateway configure it from the chart's resources (`tests/src/control_plane.rs`), in call mode.
//!
//! Needs helm, the venv's Python, Envoy, Garage, the filter
//! (`cargo build -p pixmesh-filter --target wasm32-wasip1 --release`) and the sidecar binary
//! (`cargo build -p pixmesh-sidecar`, which `cargo test --workspace` builds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pixmesh_core::sign::{HashAlg, ThumborSigner};
use pixmesh_tests::chart::{container, flag, objects, one, run, sidecar_binary, strings, template};
use pixmesh_tests::envoy::Envoy;
use pixmesh_tests::garage::Garage;
use pixmesh_tests::{http, ports, tools, vouch};
use serde_json::{Value, json};

/// The URL-signing key the e2e tests' Secret holds.
const URL_KEY: &str = "helm-test-url-signing-key";

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

/// The value of the Secret key the chart gives Envoy's environment as `name`.
fn secret_value(name: &str) -> String {
    match name {
        "PIXMESH_RENDER_KEY" => vouch::render_key().to_owned(),
        "PIXMESH_URL_SIGNING_KEY" => URL_KEY.to_owned(),
        other => panic!("a key the test has no Secret for: {other}"),
    }
}

/// A signed thumbor URL through the gateway `proxy` answers a 120-pixel JPEG.
async fn serves_a_signed_rendition(proxy: &Envoy) {
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
            (name.to_owned(), secret_value(name))
        })
        .collect();
    let proxy = Envoy::start_with_env(&sim.bootstrap, &["--concurrency", "1"], &env).await;
    serves_a_signed_rendition(&proxy).await;
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
            let value = secret_value(&name);
            (name, value)
        })
        .collect();
    let proxy = Envoy::start_with_env(&sim.bootstrap, &["--concurrency", "1"], &env).await;
    serves_a_signed_rendition(&proxy).await;
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
    let [
        envoy_port,
        admin_port,
        stats_port,
        sidecar_port,
        metrics_port,
    ] = ports::free_ports::<5>();
    let values = json!({
        "workers": 1,
        "envoy": { "port": envoy_port, "adminPort": admin_port, "statsPort": stats_port,
                   "drainSeconds": 1 },
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

    // Envoy's stats listener, on the port the chart names for the monitors: the filter's
    // counters of the two requests above.
    let url = format!("http://127.0.0.1:{stats_port}/stats/prometheus");
    let scrape = tokio::task::spawn_blocking(move || http::get(&url, &[]))
        .await
        .unwrap();
    assert_eq!(scrape.status, 200, "{}", scrape.text());
    for counter in ["pixmesh_filter_rendered", "pixmesh_filter_refused_403"] {
        // `NAME{} 1`: Envoy writes an empty label set for wasm metrics.
        let one = |l: &str| {
            l.strip_prefix(counter)
                .map(|rest| rest.trim_start_matches("{}").trim() == "1")
                == Some(true)
        };
        assert!(
            scrape.text().lines().any(one),
            "{counter} 1 in the scrape: {}",
            scrape.text()
        );
    }
    let service = one(&objects, "Service");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "envoy-stats"),
        "without a monitor, no stats port on the Service"
    );

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
