//! Tracing (issue 16), end to end: a real Envoy and filter in front of a sidecar whose
//! `[tracing]` points at a real OTLP/gRPC receiver (`tests/otlp_receiver.py`:
//! opentelemetry-proto's TraceService served by grpcio). A request with a W3C `traceparent`
//! leaves a server span in that trace, child of the client's span, with the render's steps as
//! its children (the result-storage lookup and the write after the response included, against
//! Garage); a request without one starts a trace of its own; a `traceparent` whose sampled flag
//! is off, with `sample_ratio = 0`, leaves nothing. In both the transcoder and the call mode.
//! And the `pixmesh-sidecar` binary sends nothing without `[tracing]`, even with the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` naming the receiver, which a bare `[tracing]` exports to.
//!
//! The sidecar's spans are exported in batches: stopping it exports the rest, after which the
//! receiver has every span (it writes them before it answers the export).

use std::process::{Command, Stdio};

use pixmesh_tests::chart::sidecar_binary;
use pixmesh_tests::otlp::{OtlpReceiver, ReceivedSpan};
use pixmesh_tests::{Garage, Stack, ports, tools};

const RESULTS_BUCKET: &str = "traced-results";

fn filter_config() -> String {
    serde_json::json!({ "routes": [
        { "prefix": "/img/", "storage": "photos", "secret": "tracing-secret",
          "allow_unsafe": true },
    ]})
    .to_string()
}

/// A stack (in call mode when `call`) whose sidecar traces to `receiver` with `sample_ratio`,
/// reading `medium.jpg` from Garage and keeping renditions there.
async fn stack(garage: &Garage, receiver: &OtlpReceiver, call: bool, sample_ratio: f64) -> Stack {
    let sidecar = format!(
        "[storages.photos]\n{}\n[storages.results]\n{}\n\
         [result_storage]\nstorage = \"results\"\n\
         [tracing]\notlp_endpoint = \"{}\"\nservice_name = \"pixmesh-traced\"\n\
         sample_ratio = {sample_ratio:?}\n",
        garage.storage_toml(garage.default_bucket()),
        garage.storage_toml(RESULTS_BUCKET),
        receiver.endpoint(),
    );
    let builder = Stack::builder(&filter_config(), &sidecar);
    match call {
        true => builder.call_mode().start().await,
        false => builder.start().await,
    }
}

async fn garage() -> Garage {
    let garage = Garage::start().await;
    garage.create_bucket(RESULTS_BUCKET).await;
    garage
        .put(
            garage.default_bucket(),
            "medium.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    garage
}

/// Stops the stack's sidecar, which exports the spans it still holds.
async fn stop(mut stack: Stack) {
    stack
        .sidecar
        .take()
        .expect("an in-process sidecar")
        .stop()
        .await;
}

/// The spans of `trace`.
fn trace<'a>(spans: &'a [ReceivedSpan], trace: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace).collect()
}

/// The one server span of `spans`, and the names of its children, sorted.
fn server_and_children<'a>(spans: &[&'a ReceivedSpan]) -> (&'a ReceivedSpan, Vec<&'a str>) {
    let servers: Vec<&&ReceivedSpan> = spans.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(servers.len(), 1, "one server span: {spans:#?}");
    let server = *servers[0];
    let mut children: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id == server.span_id)
        .map(|s| s.name.as_str())
        .collect();
    children.sort_unstable();
    assert_eq!(
        children.len() + 1,
        spans.len(),
        "every other span is the server span's child: {spans:#?}"
    );
    for span in spans {
        assert_eq!(span.service.as_deref(), Some("pixmesh-traced"), "{span:?}");
        assert!(span.start_ns <= span.end_ns, "{span:?}");
    }
    (server, children)
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

async fn continues_the_clients_trace(call: bool) {
    let (garage, receiver) = (garage().await, OtlpReceiver::start());
    let stack = stack(&garage, &receiver, call, 1.0).await;
    let rpc = if call { "RenderCall" } else { "Render" };
    let url = "/img/unsafe/fit-in/120x90/filters:grayscale()/medium.jpg";

    // A miss: read, rendered, written to result storage after the response.
    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let miss = stack
        .get(
            url,
            &[
                ("traceparent", traceparent.as_str()),
                ("tracestate", "vendor=opaque"),
            ],
        )
        .await;
    assert_eq!(miss.status, 200, "{}", miss.text());
    pixmesh_tests::eventually("the rendition is in result storage", || async {
        !garage.list(RESULTS_BUCKET, "").await.is_empty()
    })
    .await;
    // A hit, without a traceparent.
    let hit = stack.get(url, &[]).await;
    assert_eq!(hit.status, 200, "{}", hit.text());
    stop(stack).await;

    let spans = receiver.spans();
    let traced = trace(&spans, TRACE);
    let (server, children) = server_and_children(&traced);
    assert_eq!(server.name, rpc);
    assert_eq!(server.parent_span_id, CLIENT_SPAN, "{server:?}");
    assert_eq!(
        children,
        [
            "decode",
            "effects",
            "encode",
            // Admissions: to look result storage up, then to read the source.
            "queue_wait",
            "queue_wait",
            "render",
            "resize",
            "result_lookup",
            "result_write",
            "source_read",
        ],
        "{traced:#?}"
    );
    let attr = |name: &str| server.attributes.get(name).cloned();
    assert_eq!(attr("rpc.method"), Some(rpc.into()));
    assert_eq!(attr("pixmesh.storage"), Some("photos".into()));
    assert_eq!(attr("pixmesh.key"), Some("medium.jpg".into()));
    assert_eq!(attr("pixmesh.grammar"), Some("thumbor".into()));
    assert_eq!(attr("pixmesh.result_storage"), Some("miss".into()));
    assert_eq!(attr("pixmesh.source"), Some("read".into()));
    // OTLP/JSON-in-Python: int attributes are ints.
    assert_eq!(attr("http.response.status_code"), Some(200.into()));
    assert_eq!(
        attr("pixmesh.response.bytes"),
        Some((miss.body.len() as u64).into())
    );

    // The hit: a trace of its own, rooted in the sidecar.
    let others: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id != TRACE).collect();
    let (root, children) = server_and_children(&others);
    assert_eq!(root.name, rpc);
    assert_eq!(root.parent_span_id, "", "a new trace: {root:?}");
    assert_eq!(root.trace_id.len(), 32);
    assert_eq!(children, ["queue_wait", "result_lookup"], "{others:#?}");
    assert_eq!(
        root.attributes.get("pixmesh.result_storage"),
        Some(&"hit".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcoder_mode_spans_continue_the_clients_trace() {
    continues_the_clients_trace(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_mode_spans_continue_the_clients_trace() {
    continues_the_clients_trace(true).await;
}

/// With `sample_ratio = 0`, new traces are not kept and a client's decision is followed: its
/// unsampled request leaves nothing, its sampled one is traced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_ratio_and_the_clients_flag() {
    let (garage, receiver) = (garage().await, OtlpReceiver::start());
    let stack = stack(&garage, &receiver, false, 0.0).await;
    let url = "/img/unsafe/100x100/medium.jpg";
    let unsampled = "5bf92f3577b34da6a3ce929d0e0e4736";
    let sampled = "6bf92f3577b34da6a3ce929d0e0e4736";
    for (headers, status) in [
        (vec![], 200),
        (
            vec![(
                "traceparent".to_owned(),
                format!("00-{unsampled}-{CLIENT_SPAN}-00"),
            )],
            200,
        ),
        (
            vec![(
                "traceparent".to_owned(),
                format!("00-{sampled}-{CLIENT_SPAN}-01"),
            )],
            200,
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = stack.get(url, &headers).await;
        assert_eq!(r.status, status, "{}", r.text());
    }
    stop(stack).await;
    let spans = receiver.spans();
    assert!(
        spans.iter().all(|s| s.trace_id == sampled),
        "only the sampled trace: {spans:#?}"
    );
    let (server, children) = server_and_children(&trace(&spans, sampled));
    assert_eq!(server.parent_span_id, CLIENT_SPAN);
    assert!(children.contains(&"result_lookup"), "{children:?}");
}

/// The `pixmesh-sidecar` binary with `OTEL_EXPORTER_OTLP_ENDPOINT` naming the receiver: without
/// `[tracing]` nothing is sent; with a bare `[tracing]`, the spans go there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_unless_configured_even_with_the_standard_endpoint_variable() {
    let receiver = OtlpReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        tools::testdata_images().join("medium.jpg"),
        dir.path().join("medium.jpg"),
    )
    .unwrap();
    let off = "7bf92f3577b34da6a3ce929d0e0e4736";
    let on = "8bf92f3577b34da6a3ce929d0e0e4736";
    let bare = "[tracing]\nservice_name = \"pixmesh-traced\"\n";
    for (table, trace_id) in [("", off), (bare, on)] {
        let port = ports::free_port();
        let config = dir.path().join(format!("{trace_id}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\n\
                 [storages.photos]\ntype = \"local\"\nroot = {:?}\n{table}",
                dir.path().display().to_string()
            ),
        )
        .unwrap();
        let log = dir.path().join(format!("{trace_id}.log"));
        let mut sidecar = Command::new(sidecar_binary())
            .args(["serve", "--config"])
            .arg(&config)
            .env("PIXMESH_RENDER_KEY", pixmesh_tests::vouch::render_key())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start pixmesh-sidecar");
        let stack = Stack::builder(&filter_config(), "")
            .external_sidecar(port)
            .start()
            .await;
        let traceparent = format!("00-{trace_id}-{CLIENT_SPAN}-01");
        let headers = [("traceparent", traceparent.as_str())];
        let answered = {
            let mut status = 0;
            for _ in 0..200 {
                status = stack
                    .get("/img/unsafe/80x60/medium.jpg", &headers)
                    .await
                    .status;
                if status == 200 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            status
        };
        // SIGTERM: the sidecar drains and exports what it holds before it exits.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(sidecar.id() as i32, libc::SIGTERM) };
        let exit = tokio::task::spawn_blocking(move || sidecar.wait())
            .await
            .unwrap()
            .unwrap();
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(answered, 200, "the sidecar never rendered:\n{log}");
        assert!(exit.success(), "{exit}:\n{log}");
    }
    let spans = receiver.spans();
    assert!(trace(&spans, off).is_empty(), "tracing off: {spans:#?}");
    let traced = trace(&spans, on);
    let (server, children) = server_and_children(&traced);
    assert_eq!(server.parent_span_id, CLIENT_SPAN);
    assert!(children.contains(&"source_read"), "{children:?}");
    assert_eq!(spans.len(), traced.len(), "{spans:#?}");
}
