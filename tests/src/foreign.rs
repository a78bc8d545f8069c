//! An Envoy configuration pixmesh did not write, for the tests that add pixmesh to it
//! (`envoy_fragment.rs`, `normalisation.rs`): a site with a direct response, a teapot and a
//! proxied application, [`merge`] to add a fragment the way README's "An existing Envoy" says,
//! the application ([`start_app`]), and a client that sends any method, header and body.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yaml_serde::Value;

use crate::Envoy;
use crate::http::Response;

/// A configuration pixmesh did not write: Envoy's default listener settings, a health check
/// answered by Envoy, a teapot, and everything else proxied to the application on `app_port`;
/// `listener_settings`: more `HttpConnectionManager` fields, one a line (`normalize_path: true`).
pub fn config(app_port: u16, listener_settings: &str) -> String {
    format!(
        r#"
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: 0 }}
static_resources:
  listeners:
  - name: site
    address:
      socket_address: {{ address: 127.0.0.1, port_value: 0 }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: site
{settings}          route_config:
            name: site
            virtual_hosts:
            - name: site
              domains: ["*"]
              routes:
              - match: {{ path: "/healthz" }}
                direct_response:
                  status: 200
                  body: {{ inline_string: "healthy\n" }}
                response_headers_to_add:
                - header: {{ key: x-site, value: health }}
              - match: {{ prefix: "/teapot" }}
                direct_response:
                  status: 418
                  body: {{ inline_string: "short and stout\n" }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: app }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {app_port} }}
"#,
        settings = listener_settings
            .lines()
            .map(|l| format!("          {}\n", l.trim()))
            .collect::<String>()
    )
}

/// Merges `fragment` into `config` as README's recipe says: `http_filters` before the router
/// (here: first), `routes` first in the virtual host, `clusters` appended.
pub fn merge(config: &str, fragment: &str) -> String {
    let mut doc: Value = yaml_serde::from_str(config).unwrap();
    let fragment: Value = yaml_serde::from_str(fragment).unwrap();
    let seq = |v: &Value, key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_sequence)
            .unwrap_or_else(|| panic!("the fragment has no {key} list"))
            .clone()
    };
    let hcm =
        doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            .as_mapping_mut()
            .unwrap();
    let filters = hcm
        .get_mut("http_filters")
        .and_then(Value::as_sequence_mut)
        .unwrap();
    let router = filters
        .iter()
        .position(|f| f["name"] == "envoy.filters.http.router")
        .unwrap();
    for (i, f) in seq(&fragment, "http_filters").into_iter().enumerate() {
        filters.insert(router + i, f);
    }
    let routes = hcm
        .get_mut("route_config")
        .and_then(|r| r.get_mut("virtual_hosts"))
        .and_then(|v| v.get_mut(0))
        .and_then(|v| v.get_mut("routes"))
        .and_then(Value::as_sequence_mut)
        .unwrap();
    for (i, r) in seq(&fragment, "routes").into_iter().enumerate() {
        routes.insert(i, r);
    }
    doc["static_resources"]["clusters"]
        .as_sequence_mut()
        .unwrap()
        .extend(seq(&fragment, "clusters"));
    yaml_serde::to_string(&doc).unwrap()
}

/// A small HTTP/1.1 application: answers every request with what it received (method, path,
/// request headers but Envoy's random request id and the host, whose port differs per Envoy,
/// body), and counts the requests.
pub async fn start_app() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
                let request_line = lines.next().unwrap_or_default().to_owned();
                let mut headers: Vec<String> = lines
                    .map(|l| l.to_ascii_lowercase())
                    .filter(|l| !l.starts_with("x-request-id:") && !l.starts_with("host:"))
                    .collect();
                headers.sort();
                let length: usize = headers
                    .iter()
                    .find_map(|h| h.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let body = format!(
                    "{request_line}\n{}\n\n{}",
                    headers.join("\n"),
                    String::from_utf8_lossy(&buf[head_end..head_end + length])
                );
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-app: echo\r\n\
                     cache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (port, count)
}

/// A request to Envoy: method, path, headers, body.
pub struct Req {
    /// `GET`, `HEAD`, `POST`, …
    pub method: &'static str,
    /// Path and query, sent as they are.
    pub path: String,
    /// Request headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// `GET path`.
pub fn get(path: &str) -> Req {
    Req {
        method: "GET",
        path: path.to_owned(),
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// Sends `req` to `envoy` without blocking the runtime.
pub async fn send(envoy: &Envoy, req: &Req) -> Response {
    let url = format!("{}{}", envoy.base_url(), req.path);
    let method = req.method;
    let headers = req.headers.clone();
    let body = req.body.clone();
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_idle_connections(0)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .new_agent();
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        for (name, value) in &headers {
            request = request.header(*name, value.as_str());
        }
        let mut response = agent
            .run(request.body(body).unwrap())
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        Response {
            status: response.status().as_u16(),
            headers: response
                .headers()
                .iter()
                .map(|(n, v)| {
                    let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (n.as_str().to_owned(), value)
                })
                .collect(),
            body: response.body_mut().read_to_vec().unwrap(),
        }
    })
    .await
    .unwrap()
}

/// Header names, each with its values.
pub type Headers = Vec<(String, Vec<String>)>;

/// What must not differ: status, these headers' values, the body. (Not `content-length`: call
/// mode sends one, the transcoder streams.)
pub fn essentials(r: &Response) -> (u16, Headers, Vec<u8>) {
    const COMPARED: &[&str] = &[
        "content-type",
        "etag",
        "last-modified",
        "cache-control",
        "link",
        "vary",
        "x-content-type-options",
        "x-site",
        "x-app",
    ];
    let headers = COMPARED
        .iter()
        .map(|&h| {
            let values = r.header_all(h).into_iter().map(str::to_owned).collect();
            (h.to_owned(), values)
        })
        .collect();
    (r.status, headers, r.body.clone())
}

/// `GET path` with the path sent byte for byte as given (raw `|`, `{`, which URL libraries
/// refuse), over a connection of its own.
pub async fn get_raw(envoy: &Envoy, path: &str) -> Response {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", envoy.port()))
        .await
        .expect("connect to Envoy");
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.expect("read the response");
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or_else(|| panic!("no response head: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let mut rest = &raw[head_end..];
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size");
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .expect("hex chunk size");
            rest = &rest[line_end + 2..];
            if size == 0 {
                break body;
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    } else {
        rest.to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}
