//! The Helm chart (`charts/pixmesh`): `helm lint`; `helm template` over a matrix of values
//! (both topologies, IRSA on and off, HPA / PDB / ServiceMonitor / PodMonitor on and off,
//! existing Secrets), every rendered object validated strictly (`scripts/validate-k8s`:
//! Kubernetes' schemas for built-in kinds, the CRDs in testdata/crds for the others) and the
//! configurations in it accepted by the sidecar and the filter; values the chart refuses; the
//! Dockerfile and the README's install in step with it. `helm_pods.rs` runs the pods.
//!
//! Needs helm (`PIXMESH_HELM`) and the venv's Python (`PIXMESH_PYTHON`).

use std::process::Command;

use pixmesh_core::config::FilterConfig;
use pixmesh_sidecar::config::Config;
use pixmesh_tests::chart::{
    chart, container, defaults, flag, helm, objects, of_kind, one, run, strings, template,
    try_template, validate, value,
};
use pixmesh_tests::tools;
use serde_json::{Value, json};

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
    // In the standalone pod, Envoy's stats listener (the filter's counters) is scraped too.
    let envoy_stats = |endpoints: &Value| {
        endpoints.as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e["port"] == "envoy-stats" && e["path"] == "/stats/prometheus")
        })
    };
    assert_eq!(
        service_ports.contains(&"envoy-stats"),
        standalone && (sm || pm),
        "{name}"
    );
    for m in of_kind(objects, "ServiceMonitor") {
        assert_eq!(envoy_stats(&m["spec"]["endpoints"]), standalone, "{name}");
    }
    for m in of_kind(objects, "PodMonitor") {
        assert_eq!(
            envoy_stats(&m["spec"]["podMetricsEndpoints"]),
            standalone,
            "{name}"
        );
    }

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

    // The sidecar's memory at worst (its budget, which every image it holds is inside, and its
    // own ~50 MB, with headroom) fits its memory limit.
    let limit = sidecar["resources"]["limits"]["memory"].as_str().unwrap();
    let limit: u64 = match limit.split_at(limit.len() - 2) {
        (n, "Gi") => n.parse::<u64>().unwrap() << 30,
        (n, "Mi") => n.parse::<u64>().unwrap() << 20,
        _ => panic!("{name}: memory limit {limit}"),
    };
    assert!(
        config.limits.memory_budget_bytes + (256 << 20) <= limit,
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
