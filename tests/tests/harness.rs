//! Smoke tests of the harness itself: a real Garage and a real Envoy.

use pixmesh_tests::{Envoy, Garage, envoy, http};

#[tokio::test]
async fn garage_buckets_keys_and_objects() {
    let garage = Garage::start().await;
    let client = garage.s3_client();

    // The default bucket is usable right away.
    garage
        .put(garage.default_bucket(), "a/b.jpg", b"default".to_vec())
        .await;
    assert_eq!(
        garage
            .get(garage.default_bucket(), "a/b.jpg")
            .await
            .as_deref(),
        Some(&b"default"[..])
    );

    // A second bucket, written and read through the SDK client directly.
    garage.create_bucket("results").await;
    client
        .put_object()
        .bucket("results")
        .key("x/y z.webp")
        .body(b"hello garage".to_vec().into())
        .send()
        .await
        .expect("put_object");
    let object = client
        .get_object()
        .bucket("results")
        .key("x/y z.webp")
        .send()
        .await
        .expect("get_object");
    let body = object.body.collect().await.expect("read body").into_bytes();
    assert_eq!(&body[..], b"hello garage");
    assert_eq!(garage.get("results", "missing").await, None);
    assert_eq!(garage.list("results", "x/").await, vec!["x/y z.webp"]);

    // A read-only key can read but not write.
    let (access, secret) = garage.create_key("reader").await;
    garage.allow("results", &access, true, false).await;
    let reader = garage.s3_client_for(&access, &secret);
    let read = reader
        .get_object()
        .bucket("results")
        .key("x/y z.webp")
        .send()
        .await
        .expect("read-only key can read");
    assert_eq!(
        &read.body.collect().await.unwrap().into_bytes()[..],
        b"hello garage"
    );
    let write = reader
        .put_object()
        .bucket("results")
        .key("denied")
        .body(b"no".to_vec().into())
        .send()
        .await;
    assert!(write.is_err(), "read-only key must not write");
}

const DIRECT_RESPONSE: &str = r#"
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 0 }
static_resources:
  listeners:
  - name: http
    address:
      socket_address: { address: 127.0.0.1, port_value: 0 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response:
                  status: 418
                  body: { inline_string: "short and stout" }
                response_headers_to_add:
                - header: { key: x-pixmesh, value: harness }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#;

#[test]
fn envoy_validate_reports_bad_config() {
    envoy::validate(DIRECT_RESPONSE).expect("valid config");
    let err = envoy::validate("static_resources: { listeners: [ { name: 1 } ] }\nbogus: true\n")
        .expect_err("invalid config");
    assert!(err.contains("bogus"), "unexpected output: {err}");
}

#[tokio::test]
async fn envoy_serves_direct_response() {
    let envoy = Envoy::start(DIRECT_RESPONSE).await;
    assert_eq!(envoy.listener_port("http"), Some(envoy.port()));
    let url = format!("{}/anything", envoy.base_url());
    let response = tokio::task::spawn_blocking(move || http::get(&url, &[("x-test", "1")]))
        .await
        .unwrap();
    assert_eq!(response.status, 418);
    assert_eq!(response.text(), "short and stout");
    assert_eq!(response.header("X-Pixmesh"), Some("harness"));

    let head = http::head(&format!("{}/", envoy.base_url()), &[]);
    assert_eq!(head.status, 418);
    assert!(head.body.is_empty());

    let ready = http::get(&format!("{}/ready", envoy.admin_url()), &[]);
    assert_eq!(ready.status, 200);
    assert!(
        envoy.log().contains("starting main dispatch loop"),
        "{}",
        envoy.log()
    );
}
