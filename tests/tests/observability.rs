//! What an operator sees of a running pixmesh (issue 16), end to end against Garage and a real
//! Envoy: a scripted workload (a miss, a hit, a 304, a 403, a 404, a storage failure) leaves
//! exactly as many requests, lookups, reads, renders and writes in the sidecar's `/metrics`;
//! each request leaves one JSON log line with Envoy's request id and no secret anywhere in the
//! logs; readiness (`/readyz`, `grpc.health.v1`) turns NOT_SERVING while the render queue is
//! held full and while draining, and back.
//!
//! Envoy's side: the filter's counters in its `/stats/prometheus`, the access log line of an
//! image request with the client's path, `/healthz` following the sidecar's health.
//!
//! The sidecar runs in this process (its logs captured by this binary's own subscriber), with
//! its operator port on an ephemeral port; Envoy is started against it.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pixmesh_core::sign::{HashAlg, ThumborSigner};
use pixmesh_proto::v1;
use pixmesh_proto::v1::image_service_client::ImageServiceClient;
use pixmesh_sidecar::config::Config;
use pixmesh_sidecar::envoy_config::{self, Bootstrap, Endpoint, InlineSecrets};
use pixmesh_sidecar::telemetry::health::{ProbeError, probe};
use pixmesh_sidecar::telemetry::logging::{self, LogFormat};
use pixmesh_tests::http::Response;
use pixmesh_tests::{Envoy, Garage, eventually, ports, tools};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// The URL-signing key of the `/img/` route.
const SIGNING_KEY: &str = "observability-signing-key-3f9c";
const RESULTS_BUCKET: &str = "results";

/// Every log line of this process, as the sidecar writes them (JSON).
fn captured() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    let logs = LOGS.get_or_init(|| Mutex::new(Vec::new()));
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        struct Capture;
        impl Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                captured().lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        logging::init_to(LogFormat::Json, || Capture);
    });
    logs
}

/// The captured log lines, parsed.
fn log_lines() -> Vec<serde_json::Value> {
    let text = String::from_utf8(captured().lock().unwrap().clone()).expect("UTF-8 logs");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A sidecar serving in this process, its operator port on an ephemeral one.
struct Sidecar {
    grpc: SocketAddr,
    operator: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sidecar {
    async fn start(toml: &str) -> Sidecar {
        captured();
        let mut config = Config::from_toml(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        config
            .render_key
            .get_or_insert_with(|| pixmesh_tests::vouch::render_key().into());
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let operator = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, operator_addr) =
            (grpc.local_addr().unwrap(), operator.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            pixmesh_sidecar::serving::serve_with(&config, grpc, Some(operator), shutdown)
                .await
                .expect("sidecar serves");
        });
        let sidecar = Sidecar {
            grpc: grpc_addr,
            operator: operator_addr,
            stop: Some(stop),
            task,
        };
        eventually("the sidecar is ready", || async {
            sidecar.get("/readyz").await.status == 200
        })
        .await;
        sidecar
    }

    /// GET on the operator port.
    async fn get(&self, path: &str) -> Response {
        let url = format!("http://{}{path}", self.operator);
        tokio::task::spawn_blocking(move || pixmesh_tests::http::get(&url, &[]))
            .await
            .unwrap()
    }

    /// The scrape, as `series → value`.
    async fn scrape(&self) -> Scrape {
        let r = self.get("/metrics").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        Scrape(r.text())
    }

    /// `grpc.health.v1` of the server as a whole.
    async fn health(&self) -> Result<(), ProbeError> {
        probe(&format!("http://{}", self.grpc), Duration::from_secs(5)).await
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Prometheus text scrape.
struct Scrape(String);

impl Scrape {
    /// The value of `series` (name and labels exactly as exported), 0 when absent.
    fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.parse().expect("a number"))
    }
}

fn s3(garage: &Garage, bucket: &str, endpoint: &str) -> String {
    format!(
        "type = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\nregion = \"{}\"\n\
         access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        garage.region(),
        garage.access_key(),
        garage.secret_key()
    )
}

fn signed(path: &str) -> String {
    let sig = ThumborSigner::new(SIGNING_KEY, HashAlg::Sha1, None).sign(path);
    format!("/img/{sig}/{path}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_workload_is_counted_logged_and_leaks_no_secret() {
    let garage = Garage::start().await;
    garage.create_bucket(RESULTS_BUCKET).await;
    garage
        .put(
            garage.default_bucket(),
            "medium.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    let closed = format!("http://127.0.0.1:{}", ports::free_port());
    let toml = format!(
        "[limits]\nstorage_timeout_ms = 5000\n\
         [storages.photos]\n{}\n[storages.results]\n{}\n[storages.down]\n{}\n\
         [result_storage]\nstorage = \"results\"\nbase_dir = \"renditions\"\n",
        s3(&garage, garage.default_bucket(), &garage.endpoint()),
        s3(&garage, RESULTS_BUCKET, &garage.endpoint()),
        s3(&garage, garage.default_bucket(), &closed),
    );
    let sidecar = Sidecar::start(&toml).await;
    let filter = serde_json::json!({ "routes": [
        { "prefix": "/img/", "storage": "photos", "secret": SIGNING_KEY },
        { "prefix": "/open/", "storage": "photos", "allow_unsafe": true },
        { "prefix": "/down/", "storage": "down", "allow_unsafe": true },
    ]});
    let envoy = envoy(&filter.to_string(), sidecar.grpc.port()).await;
    let stack = Through(&envoy);

    // The workload, one request at a time.
    let image = signed("fit-in/100x100/medium.jpg");
    let miss = stack.get(&image, &[]).await;
    assert_eq!(miss.status, 200, "{}", miss.text());
    eventually("the rendition is in result storage", || async {
        sidecar
            .scrape()
            .await
            .value("pixmesh_result_storage_writes_total")
            == 1.0
    })
    .await;
    let hit = stack.get(&image, &[]).await;
    assert_eq!(hit.status, 200, "{}", hit.text());
    let etag = hit.header("etag").expect("an ETag").to_owned();
    let not_modified = stack.get(&image, &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, 304);
    let forged = stack
        .get(
            "/img/AAAAAAAAAAAAAAAAAAAAAAAAAAA=/fit-in/100x100/medium.jpg",
            &[],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.text());
    let missing = stack
        .get("/open/unsafe/fit-in/100x100/missing.jpg", &[])
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    let down = stack
        .get("/down/unsafe/fit-in/100x100/medium.jpg", &[])
        .await;
    assert_eq!(down.status, 503, "{}", down.text());

    // The sidecar counted exactly that; the 403 never reached it.
    let m = sidecar.scrape().await;
    let requests = |storage: &str, status: u16| {
        m.value(&format!(
            "pixmesh_requests_total{{rpc=\"Render\",storage=\"{storage}\",status=\"{status}\"}}"
        ))
    };
    assert_eq!(requests("photos", 200), 2.0, "{}", m.0);
    assert_eq!(requests("photos", 304), 1.0);
    assert_eq!(requests("photos", 404), 1.0);
    assert_eq!(requests("down", 503), 1.0);
    assert_eq!(requests("photos", 403), 0.0);
    assert_eq!(
        m.value("pixmesh_request_duration_seconds_count{rpc=\"Render\"}"),
        5.0
    );
    assert_eq!(
        m.value("pixmesh_response_bytes_total{rpc=\"Render\"}"),
        (miss.body.len() + hit.body.len()) as f64
    );
    let lookups = |outcome: &str| {
        m.value(&format!(
            "pixmesh_result_storage_lookups_total{{outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!((lookups("hit"), lookups("miss")), (2.0, 3.0));
    let reads = |storage: &str, outcome: &str| {
        m.value(&format!(
            "pixmesh_source_reads_total{{storage=\"{storage}\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(reads("photos", "ok"), 1.0);
    assert_eq!(reads("photos", "not_found"), 1.0);
    assert_eq!(reads("down", "unavailable"), 1.0);
    assert_eq!(
        m.value("pixmesh_source_read_bytes_total{storage=\"photos\"}"),
        tools::test_image("medium.jpg").len() as f64
    );
    assert_eq!(m.value("pixmesh_renders_total"), 1.0);
    assert_eq!(m.value("pixmesh_result_storage_writes_total"), 1.0);
    assert_eq!(m.value("pixmesh_result_storage_write_failures_total"), 0.0);
    let steps = |step: &str| {
        m.value(&format!(
            "pixmesh_step_duration_seconds_count{{step=\"{step}\"}}"
        ))
    };
    assert_eq!(steps("result_lookup"), 5.0);
    assert_eq!(steps("source_read"), 3.0);
    assert_eq!(steps("render"), 1.0);
    for phase in ["decode", "resize", "effects", "encode"] {
        let series = format!("pixmesh_render_phase_duration_seconds_count{{phase=\"{phase}\"}}");
        assert_eq!(m.value(&series), 1.0, "{series}");
    }
    assert_eq!(steps("result_write"), 1.0);
    // An admission per lookup and per source read.
    assert_eq!(steps("queue_wait"), 8.0);
    assert_eq!(m.value("pixmesh_renders_in_progress"), 0.0);
    assert_eq!(m.value("pixmesh_queue_depth"), 0.0);
    assert_eq!(m.value("pixmesh_ready"), 1.0);

    // One JSON line per request that reached the sidecar, with Envoy's request id.
    let lines = log_lines();
    let requests: Vec<&serde_json::Value> = lines
        .iter()
        // The other tests' sidecars log here too, for storages of their own.
        .filter(|l| {
            l["target"] == "pixmesh::request"
                && (l["storage"] == "photos" || l["storage"] == "down")
        })
        .collect();
    let summary: Vec<(String, u64, String, String)> = requests
        .iter()
        .map(|l| {
            (
                l["storage"].as_str().unwrap().to_owned(),
                l["status"].as_u64().unwrap(),
                l["result_storage"].as_str().unwrap().to_owned(),
                l["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let row = |s: &str, status: u64, result: &str, source: &str| {
        (s.to_owned(), status, result.to_owned(), source.to_owned())
    };
    assert_eq!(
        summary,
        [
            row("photos", 200, "miss", "read"),
            row("photos", 200, "hit", "-"),
            row("photos", 304, "hit", "-"),
            row("photos", 404, "miss", "read"),
            row("down", 503, "miss", "read"),
        ]
    );
    for line in &requests {
        let id = line["request_id"].as_str().unwrap();
        assert_eq!(id.len(), 36, "Envoy's x-request-id (a UUID): {line}");
        assert!(line["key"].as_str().unwrap().ends_with(".jpg"), "{line}");
        assert_eq!(line["grammar"], "thumbor", "{line}");
    }
    assert_eq!(requests[0]["bytes"].as_u64(), Some(miss.body.len() as u64));

    // Envoy: the filter's counters (all but the forged URL went to the sidecar).
    let stats = envoy_stats(&envoy).await;
    let filter = |name: &str| stats.value(&format!("pixmesh_filter_{name}{{}}"));
    assert_eq!(filter("rendered"), 5.0, "{}", stats.0);
    assert_eq!(filter("refused_403"), 1.0);
    assert_eq!(filter("signature_refused_thumbor"), 1.0);
    assert_eq!(filter("passed"), 0.0);
    assert_eq!(filter("call_errors"), 0.0);
    // The access log line of the first image request: the client's path, not the render
    // call's, the filter's decision, and the request id the sidecar logged.
    let expected = format!(
        "\"GET {image}\" 200 - pixmesh=rendered {} ",
        miss.body.len()
    );
    let first_id = requests[0]["request_id"].as_str().unwrap().to_owned();
    eventually("Envoy's access log is written", || async {
        envoy.log().lines().any(|l| l.contains(&expected))
    })
    .await;
    let envoy_log = envoy.log();
    let line = envoy_log.lines().find(|l| l.contains(&expected)).unwrap();
    assert!(line.contains(&format!("request_id={first_id} ")), "{line}");
    assert!(
        line.contains("upstream=\"POST /pixmesh.v1.ImageService/Render\""),
        "{line}"
    );
    assert!(
        envoy_log.lines().any(|l| l.contains(
            "\"GET /img/AAAAAAAAAAAAAAAAAAAAAAAAAAA=/fit-in/100x100/medium.jpg\" 403 - pixmesh=refused"
        )),
        "{envoy_log}"
    );
    // The Grafana dashboard asks only for what these scrapes export.
    dashboard_names_are_exported(&[&m, &stats]);

    // /healthz answers for the sidecar's health.
    assert_eq!(stack.get("/healthz", &[]).await.status, 200);

    // No configured secret in any log of the run.
    let logs = format!(
        "{}\n{}",
        String::from_utf8_lossy(&captured().lock().unwrap()),
        envoy.log()
    );

    for secret in [
        SIGNING_KEY,
        pixmesh_tests::vouch::render_key(),
        garage.secret_key(),
    ] {
        assert!(
            !logs.contains(secret),
            "a secret ({}…) is in the logs",
            &secret[..4]
        );
    }
}

/// Envoy with pixmesh's configuration for `filter` (keyed with this process's render key) in
/// front of the sidecar on `port`, writing its access log at once (every 100 ms instead of
/// 10 s), its admin interface on a known port (which its stats listener forwards to).
async fn envoy(filter: &str, port: u16) -> Envoy {
    let mut filter: serde_json::Value = serde_json::from_str(filter).unwrap();
    filter["render_key"] = pixmesh_tests::vouch::render_key().into();
    let config = envoy_config::bootstrap(&Bootstrap {
        filter_config: filter.to_string(),
        filter_wasm: tools::filter_wasm().display().to_string(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_port: ports::free_port(),
        stats_port: 0,
        health_path: "/healthz".into(),
        sidecar: Endpoint::loopback(port),
        route_timeout: "30s".into(),
        inline_secrets: InlineSecrets::Allow,
    })
    .expect("envoy config");
    Envoy::start_with_args(
        &config,
        &["--concurrency", "1", "--file-flush-interval-msec", "100"],
    )
    .await
}

/// Requests through an Envoy.
struct Through<'a>(&'a Envoy);

impl Through<'_> {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let url = format!("{}{path}", self.0.base_url());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            pixmesh_tests::http::get(&url, &h)
        })
        .await
        .unwrap()
    }
}

/// Envoy's `/stats/prometheus` through its stats listener, which answers nothing else.
async fn envoy_stats(envoy: &Envoy) -> Scrape {
    let port = envoy.listener_port("stats").expect("a stats listener");
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        tokio::task::spawn_blocking(move || pixmesh_tests::http::get(&url, &[]))
    };
    for admin_only in [
        "/",
        "/stats",
        "/config_dump",
        "/quitquitquit",
        "/healthcheck/fail",
    ] {
        assert_eq!(get(admin_only).await.unwrap().status, 404, "{admin_only}");
    }
    let r = get("/stats/prometheus").await.unwrap();
    assert_eq!(r.status, 200);
    Scrape(r.text())
}

/// Every metric name in `k8s/grafana/pixmesh.json`'s queries (a name followed by `.*` in a
/// regex is a prefix) has a series in one of `scrapes`.
fn dashboard_names_are_exported(scrapes: &[&Scrape]) {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../k8s/grafana/pixmesh.json")).expect("JSON");
    fn exprs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(e)) = map.get("expr") {
                    out.push(e);
                }
                map.values().for_each(|v| exprs(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() > 10, "the dashboard's queries: {queries:?}");
    let series: Vec<&str> = scrapes
        .iter()
        .flat_map(|s| s.0.lines())
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default())
        .collect();
    let mut checked = 0;
    for query in queries {
        let mut rest = query;
        while let Some(at) = rest.find("pixmesh_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let found = if rest.starts_with(".*") {
                series.iter().any(|s| s.starts_with(&name))
            } else {
                series.contains(&name.as_str())
            };
            assert!(found, "{name} (in {query:?}) is in no scrape");
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked} names checked");
}

/// A fake S3 endpoint that holds every request until `open` turns true, then answers 404.
async fn stalled_s3(open: watch::Receiver<bool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut open = open.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = open.wait_for(|open| *open).await;
                let body = "<Error><Code>NoSuchKey</Code></Error>";
                let reply = format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    endpoint
}

/// A render request for `key` of the stalled storage, sent straight to the sidecar.
fn stalled_request(
    sidecar: &Sidecar,
    key: &str,
) -> tokio::task::JoinHandle<Result<tonic::Status, tonic::transport::Error>> {
    let (addr, key) = (sidecar.grpc, key.to_owned());
    tokio::spawn(async move {
        let mut client = ImageServiceClient::connect(format!("http://{addr}")).await?;
        let request = v1::RenderRequest {
            storage: "stalled".into(),
            key,
            width: 10,
            fit: v1::Fit::FitIn.into(),
            ..Default::default()
        };
        Ok(client
            .render_unary(pixmesh_tests::vouch::vouched(request))
            .await
            .expect_err("the stalled storage has nothing"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_not_serving_while_the_queue_is_full_and_while_draining() {
    let (open, gate) = watch::channel(false);
    let endpoint = stalled_s3(gate).await;
    // One worker, two admissions (the budget holds two sources), one request may queue.
    let toml = format!(
        "[limits]\nworkers = 1\nmax_queue = 1\nstorage_timeout_ms = 60000\n\
         max_source_bytes = 1048576\n\
         [storages.stalled]\ntype = \"s3\"\nbucket = \"b\"\nendpoint = \"{endpoint}\"\n\
         region = \"us-east-1\"\naccess_key_id = \"AKIDTEST\"\nsecret_access_key = \"s\"\n"
    );
    let mut sidecar = Sidecar::start(&toml).await;
    sidecar.health().await.expect("serving when idle");
    let filter = r#"{"routes":[{"prefix":"/s/","storage":"stalled","allow_unsafe":true}]}"#;
    let envoy = envoy(filter, sidecar.grpc.port()).await;
    let healthz = || async { Through(&envoy).get("/healthz", &[]).await.status };
    eventually("Envoy's /healthz says healthy", || async {
        healthz().await == 200
    })
    .await;

    // Two requests hold the admissions (their reads stall), a third waits in the queue.
    let held: Vec<_> = (0..3)
        .map(|i| stalled_request(&sidecar, &format!("{i}.jpg")))
        .collect();
    eventually("the queue is full", || async {
        sidecar.scrape().await.value("pixmesh_queue_depth") == 1.0
    })
    .await;
    eventually("readiness says saturated", || async {
        let r = sidecar.get("/readyz").await;
        r.status == 503 && r.text() == "saturated\n"
    })
    .await;
    eventually("grpc.health.v1 says NOT_SERVING", || async {
        matches!(sidecar.health().await, Err(ProbeError::NotServing(s)) if s == "NOT_SERVING")
    })
    .await;
    eventually("Envoy's /healthz says unhealthy", || async {
        healthz().await == 503
    })
    .await;
    assert_eq!(sidecar.get("/livez").await.status, 200, "alive all along");
    assert_eq!(sidecar.scrape().await.value("pixmesh_ready"), 0.0);

    // The stall ends: every request is answered (404), and the sidecar is ready again.
    open.send(true).unwrap();
    for request in held {
        let status = request.await.unwrap().expect("connected");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    }
    eventually("ready again", || async {
        sidecar.get("/readyz").await.status == 200
    })
    .await;
    eventually("SERVING again", || async { sidecar.health().await.is_ok() }).await;
    eventually("Envoy's /healthz says healthy again", || async {
        healthz().await == 200
    })
    .await;

    // Draining: once told to stop, not ready while a request is still being answered.
    open.send(false).unwrap();
    let last = stalled_request(&sidecar, "last.jpg");
    eventually(
        "the last request is admitted and reads its source",
        || async {
            let m = sidecar.scrape().await;
            m.value("pixmesh_step_duration_seconds_count{step=\"queue_wait\"}") == 4.0
        },
    )
    .await;
    let _ = sidecar.stop.take().expect("running").send(());
    eventually("readiness says draining", || async {
        let r = sidecar.get("/readyz").await;
        r.status == 503 && r.text() == "draining\n"
    })
    .await;
    open.send(true).unwrap();
    let status = last.await.unwrap().expect("connected");
    assert_eq!(
        status.code(),
        tonic::Code::NotFound,
        "finished while draining"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_mode_forwards_the_request_id_and_counts_failed_calls() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.jpg"), tools::test_image("medium.jpg")).unwrap();
    let toml = format!(
        "[storages.local]\ntype = \"local\"\nroot = {:?}\n",
        dir.path().display().to_string()
    );
    let sidecar = Sidecar::start(&toml).await;
    let filter = serde_json::json!({
        "routes": [{ "prefix": "/c/", "storage": "local", "allow_unsafe": true }],
        "call": { "cluster": envoy_config::DEFAULT_CLUSTER },
    });
    let envoy = envoy(&filter.to_string(), sidecar.grpc.port()).await;
    let r = Through(&envoy)
        .get("/c/unsafe/fit-in/50x50/a.jpg", &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let line = log_lines()
        .into_iter()
        .find(|l| l["target"] == "pixmesh::request" && l["storage"] == "local")
        .expect("the sidecar's line");
    assert_eq!(line["rpc"], "RenderCall");
    assert_eq!(line["grammar"], "thumbor");
    let id = line["request_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "Envoy's x-request-id: {line}");
    eventually("the access log carries the same id", || async {
        envoy.log().lines().any(|l| {
            l.contains("\"GET /c/unsafe/fit-in/50x50/a.jpg\" 200 - pixmesh=rendered")
                && l.contains(&format!("request_id={id} "))
        })
    })
    .await;
    assert_eq!(
        sidecar
            .scrape()
            .await
            .value("pixmesh_requests_total{rpc=\"RenderCall\",storage=\"local\",status=\"200\"}"),
        1.0
    );

    // The sidecar gone, a call fails: counted by the filter.
    drop(sidecar);
    eventually("a failed call is counted", || async {
        let r = Through(&envoy)
            .get("/c/unsafe/fit-in/50x50/a.jpg", &[])
            .await;
        r.status >= 500
            && envoy_stats(&envoy)
                .await
                .value("pixmesh_filter_call_errors{}")
                >= 1.0
    })
    .await;
}
