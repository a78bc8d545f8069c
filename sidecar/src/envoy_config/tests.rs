use super::*;

const ENV_CONFIG: &str = r#"{"routes":[
    {"prefix":"/img/","storage":"photos","secret":{"env":"THUMBOR_KEY"}},
    {"prefix":"/ip/","grammar":"imgproxy","storage":"photos",
     "keys":[{"key":{"env":"IP_KEY"},"salt":{"env":"IP_SALT"}}]}]}"#;

fn params(filter_config: &str) -> Bootstrap {
    Bootstrap {
        filter_config: filter_config.to_owned(),
        filter_wasm: "/opt/pixmesh/pixmesh_filter.wasm".into(),
        listen: "0.0.0.0:8080".parse().unwrap(),
        admin_port: 9901,
        stats_port: 9902,
        health_path: "/healthz".into(),
        sidecar: Endpoint::loopback(50051),
        route_timeout: "30s".into(),
        inline_secrets: InlineSecrets::Refuse,
    }
}

fn fragment_params(filter_config: &str) -> Fragment {
    Fragment {
        filter_config: filter_config.to_owned(),
        filter_wasm: "/opt/pixmesh/pixmesh_filter.wasm".into(),
        sidecar: "pixmesh.images.svc.cluster.local:50051".parse().unwrap(),
        cluster: None,
        route_timeout: "30s".into(),
        inline_secrets: InlineSecrets::Refuse,
    }
}

fn call_config(cluster: &str) -> String {
    let mut json: serde_json::Value = serde_json::from_str(ENV_CONFIG).unwrap();
    json["call"] = serde_json::json!({ "cluster": cluster });
    if cluster.contains('|') {
        // Istio's cluster names are no :authority: the call names the Service's.
        json["call"]["authority"] = "pixmesh.images.svc.cluster.local:50051".into();
    }
    json.to_string()
}

fn yaml(text: &str) -> yaml_serde::Value {
    yaml_serde::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn filter_names(filters: &yaml_serde::Value) -> Vec<&str> {
    filters
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| f.get("name").unwrap().as_str().unwrap())
        .collect()
}

#[test]
fn every_template_placeholder_is_known_and_values_are_not_rescanned() {
    // `{{` inside the filter configuration stays as written.
    let config = r#"{"routes":[{"prefix":"/img/","storage":"s","allow_unsafe":true,
        "canonical_base_url":"https://x.example/{{ADMIN_PORT}}"}]}"#;
    let out = bootstrap(&params(config)).unwrap();
    assert!(out.contains("{{ADMIN_PORT}}"), "the value is kept verbatim");
    let doc = yaml(&out);
    let listener = &doc["static_resources"]["listeners"][0];
    assert_eq!(listener["address"]["socket_address"]["address"], "0.0.0.0");
    assert_eq!(listener["address"]["socket_address"]["port_value"], 8080);
    assert_eq!(
        doc["admin"]["address"]["socket_address"]["port_value"],
        9901
    );
}

#[test]
fn transcoder_mode_has_the_transcoder_with_its_descriptor_inline() {
    let doc = yaml(&bootstrap(&params(ENV_CONFIG)).unwrap());
    let hcm =
        &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let filters = &hcm["http_filters"];
    assert_eq!(
        filter_names(filters),
        [
            "envoy.filters.http.health_check",
            "envoy.filters.http.wasm",
            "envoy.filters.http.grpc_json_transcoder",
            "envoy.filters.http.router"
        ]
    );
    use base64::Engine as _;
    let descriptor = filters[2]["typed_config"]["proto_descriptor_bin"]
        .as_str()
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(descriptor)
            .unwrap(),
        pixmesh_proto::DESCRIPTOR_SET
    );
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        .as_sequence()
        .unwrap();
    assert_eq!(routes[0]["route"]["cluster"], DEFAULT_CLUSTER);
    assert_eq!(routes[0]["match"]["prefix"], "/pixmesh.v1.ImageService/");
    let cluster = &doc["static_resources"]["clusters"][0];
    assert_eq!(cluster["name"], DEFAULT_CLUSTER);
    assert_eq!(cluster["type"], "STATIC");
}

#[test]
fn the_vm_reads_the_render_key_and_every_env_secret() {
    let doc = yaml(&bootstrap(&params(ENV_CONFIG)).unwrap());
    let wasm = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][1]["typed_config"]["config"];
    let keys: Vec<&str> = wasm["vm_config"]["environment_variables"]["host_env_keys"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["IP_KEY", "IP_SALT", "PIXMESH_RENDER_KEY", "THUMBOR_KEY"]
    );
    let config: serde_json::Value =
        serde_json::from_str(wasm["configuration"]["value"].as_str().unwrap()).unwrap();
    let expected: serde_json::Value = serde_json::from_str(ENV_CONFIG).unwrap();
    assert_eq!(config, expected);
}

#[test]
fn call_mode_has_neither_transcoder_nor_grpc_route_and_names_its_cluster() {
    let doc = yaml(&bootstrap(&params(&call_config("images_backend"))).unwrap());
    let hcm =
        &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(
        filter_names(&hcm["http_filters"]),
        [
            "envoy.filters.http.health_check",
            "envoy.filters.http.wasm",
            "envoy.filters.http.router"
        ]
    );
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        .as_sequence()
        .unwrap();
    assert_eq!(routes.len(), 1, "only the 404 for everything else");
    assert!(routes[0].get("direct_response").is_some());
    assert_eq!(
        doc["static_resources"]["clusters"][0]["name"],
        "images_backend"
    );
}

#[test]
fn fragment_in_transcoder_mode() {
    let out = fragment(&fragment_params(ENV_CONFIG)).unwrap();
    assert!(out.starts_with("# pixmesh for an existing Envoy"));
    let doc = yaml(&out);
    let keys: Vec<&str> = doc
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(keys, ["http_filters", "routes", "clusters"]);
    assert_eq!(
        filter_names(&doc["http_filters"]),
        [
            "envoy.filters.http.wasm",
            "envoy.filters.http.grpc_json_transcoder"
        ]
    );
    let routes = doc["routes"].as_sequence().unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0]["match"]["prefix"], "/pixmesh.v1.ImageService/");
    let cluster = &doc["clusters"][0];
    assert_eq!(cluster["name"], DEFAULT_CLUSTER);
    assert_eq!(cluster["type"], "STRICT_DNS");
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    assert_eq!(address["address"], "pixmesh.images.svc.cluster.local");
    assert_eq!(address["port_value"], 50051);
}

#[test]
fn fragment_in_call_mode_is_the_filter_and_the_cluster() {
    let doc = yaml(&fragment(&fragment_params(&call_config("outbound|50051||pixmesh"))).unwrap());
    assert_eq!(
        filter_names(&doc["http_filters"]),
        ["envoy.filters.http.wasm"]
    );
    assert!(doc["routes"].as_sequence().unwrap().is_empty());
    assert_eq!(doc["clusters"][0]["name"], "outbound|50051||pixmesh");
    let mut p = fragment_params(&call_config("outbound|50051||pixmesh"));
    p.cluster = Some("other".into());
    assert!(matches!(
        fragment(&p),
        Err(EnvoyConfigError::ClusterMismatch { .. })
    ));
}

#[test]
fn inline_secrets_are_refused_unless_allowed_and_never_named_by_value() {
    let config = r#"{"render_key":"0123456789abcdef0123456789abcdef",
        "routes":[{"prefix":"/img/","storage":"s","secret":"thumbor-secret-value"},
        {"prefix":"/ip/","grammar":"imgproxy","storage":"s",
         "keys":[{"key":"736563726574","salt":{"env":"SALT"}}]}]}"#;
    let err = bootstrap(&params(config)).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("render_key, routes[0].secret, routes[1].keys[0].key"),
        "{message}"
    );
    assert!(!message.contains("thumbor-secret-value") && !message.contains("736563726574"));
    assert!(fragment(&fragment_params(config)).is_err());
    let mut p = params(config);
    p.inline_secrets = InlineSecrets::Allow;
    assert!(bootstrap(&p).unwrap().contains("thumbor-secret-value"));
}

#[test]
fn the_filter_config_is_validated_first() {
    for bad in [
        "not json",
        r#"{"routes":[]}"#,
        r#"{"routes":[{"prefix":"img","storage":"s","allow_unsafe":true}]}"#,
        r#"{"routes":[{"prefix":"/img/","storage":"s"}]}"#,
        r#"{"routes":[{"prefix":"/img/","storage":"s","allow_unsafe":true}],"call":{"cluster":""}}"#,
        // One variable for two routes that read different objects: one key, refused.
        r#"{"routes":[{"prefix":"/a/","storage":"s","secret":{"env":"K"}},
                      {"prefix":"/b/","storage":"t","secret":{"env":"K"}}]}"#,
    ] {
        assert!(
            matches!(
                bootstrap(&params(bad)),
                Err(EnvoyConfigError::FilterConfig(_))
            ),
            "{bad}"
        );
    }
    // Two variables: two keys.
    let two = r#"{"routes":[{"prefix":"/a/","storage":"s","secret":{"env":"K1"}},
                  {"prefix":"/b/","storage":"t","secret":{"env":"K2"}}]}"#;
    bootstrap(&params(two)).unwrap();
}

#[test]
fn parameters_that_cannot_be_written_are_refused() {
    let mut p = params(ENV_CONFIG);
    p.route_timeout = "30s\nadmin: {}".into();
    assert!(matches!(bootstrap(&p), Err(EnvoyConfigError::Param { .. })));
    let mut p = fragment_params(ENV_CONFIG);
    p.cluster = Some("a b".into());
    assert!(matches!(fragment(&p), Err(EnvoyConfigError::Param { .. })));
    for bad in [
        "", "host", "host:0", "host:x", "a b:1", "[::1:1", "x..y:1", "-:",
    ] {
        assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
    }
    let v6: Endpoint = "[::1]:50051".parse().unwrap();
    assert_eq!(v6.host, "::1");
    assert_eq!(v6.to_string(), "[::1]:50051");
    let mut p = params(ENV_CONFIG);
    p.sidecar = v6;
    let doc = yaml(&bootstrap(&p).unwrap());
    let cluster = &doc["static_resources"]["clusters"][0];
    assert_eq!(cluster["type"], "STATIC");
}

#[test]
fn the_health_path_is_envoys_own_and_checked() {
    let doc = yaml(
        &bootstrap(&Bootstrap {
            health_path: "/lb/health-1".into(),
            ..params(ENV_CONFIG)
        })
        .unwrap(),
    );
    let hcm =
        &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let check = &hcm["http_filters"][0]["typed_config"];
    assert_eq!(check["headers"][0]["string_match"]["exact"], "/lb/health-1");
    assert_eq!(check["pass_through_mode"], false);
    for bad in ["", "healthz", "/a b", "/a\"}", "/x\n- y"] {
        let refused = bootstrap(&Bootstrap {
            health_path: bad.into(),
            ..params(ENV_CONFIG)
        });
        assert!(
            matches!(
                refused,
                Err(EnvoyConfigError::Param {
                    what: "health path",
                    ..
                })
            ),
            "{bad:?}: {refused:?}"
        );
    }
}
