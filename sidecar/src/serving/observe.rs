//! What the render flow shows operators ([`crate::telemetry`]): each request answered is
//! counted, timed, logged in one line and traced as a server span ([`Renderer::answer`]); source reads are counted by
//! storage and outcome ([`Renderer::observed_read`]); the [`Snapshot`] read at each scrape
//! (the [`Stats`](super::state::Stats), the queue, the workers, the memory budget).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use opentelemetry::KeyValue;
use pixmesh_core::config::Grammar;
use pixmesh_core::router::GRAMMAR_HEADER;
use pixmesh_core::vouch::Voucher;
use pixmesh_proto::v1;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::storage::{Object, StorageError};
use crate::telemetry::health::Readiness;
use crate::telemetry::logging::{self, RequestLine};
use crate::telemetry::metrics::{Rpc, Sampler, Snapshot};

use super::grpc::over_call_limit;
use super::state::{Renderer, Rendition};
use super::status::http_status;

/// The request header (gRPC metadata) Envoy's request id comes in.
pub const REQUEST_ID: &str = "x-request-id";

/// A storage error's name in metrics.
pub fn storage_outcome(e: &StorageError) -> &'static str {
    match e {
        StorageError::NotFound => "not_found",
        StorageError::AccessDenied => "access_denied",
        StorageError::TooLarge { .. } => "too_large",
        StorageError::VersionsUnsupported => "versions_unsupported",
        StorageError::Unavailable(_) => "unavailable",
        StorageError::Timeout => "timeout",
        StorageError::WrongRegion(_) => "wrong_region",
        StorageError::NoSuchBucket => "no_such_bucket",
        StorageError::Unroutable(_) => "unroutable",
        StorageError::Other(_) => "other",
    }
}

/// What a request's server span says of it besides its RPC (never a secret: the key is the
/// object's name).
fn span_attributes(
    storage: &str,
    key: &str,
    grammar: Option<&'static str>,
    request_id: Option<&str>,
    status: u16,
    bytes: u64,
    notes: &logging::Notes,
) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("pixmesh.storage", storage.to_owned()),
        KeyValue::new("pixmesh.key", key.to_owned()),
        KeyValue::new("http.response.status_code", i64::from(status)),
        KeyValue::new("pixmesh.response.bytes", bytes as i64),
    ];
    let optional = [
        ("pixmesh.grammar", grammar.map(str::to_owned)),
        ("pixmesh.request_id", request_id.map(str::to_owned)),
        ("pixmesh.result_storage", notes.result.map(str::to_owned)),
        ("pixmesh.source", notes.source.map(str::to_owned)),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            attributes.push(KeyValue::new(name, value));
        }
    }
    attributes
}

impl Renderer {
    /// Runs `read`, a source read from `storage`, counting it by outcome with its bytes and
    /// duration.
    pub(super) async fn observed_read<H>(
        &self,
        storage: &str,
        read: impl Future<Output = Result<(Object, H), StorageError>>,
    ) -> Result<(Object, H), StorageError> {
        self.stats
            .source_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        logging::note_source("read");
        let started = Instant::now();
        let out = read.await;
        let (outcome, bytes) = match &out {
            Ok((object, _)) => ("ok", object.bytes.len() as u64),
            Err(e) => (storage_outcome(e), 0),
        };
        self.stats
            .metrics
            .source_read(storage, outcome, started.elapsed(), bytes);
        out
    }

    /// Result storage had the rendition (`hit`) or not.
    pub(super) fn looked_up(&self, hit: bool) {
        self.stats.metrics.result_lookup(hit);
        logging::note_result(hit);
    }

    /// Answers `req` (arrived by `rpc`, with metadata `md`) with [`Renderer::handle`],
    /// counting, timing and logging it.
    pub(super) async fn answer(
        &self,
        rpc: Rpc,
        req: v1::RenderRequest,
        md: &MetadataMap,
        voucher: &Voucher,
    ) -> Result<Rendition, Status> {
        self.answer_within(rpc, req, md, voucher, None).await
    }

    /// [`Renderer::answer`], refusing a rendition over `max` bytes (call mode) with 413, which
    /// is what is counted and logged then.
    pub(super) async fn answer_within(
        &self,
        rpc: Rpc,
        req: v1::RenderRequest,
        md: &MetadataMap,
        voucher: &Voucher,
        max: Option<usize>,
    ) -> Result<Rendition, Status> {
        let started = Instant::now();
        // Label values stay bounded: a storage the sidecar does not have is "unknown".
        let storage = if self.storages.contains_key(&req.storage) {
            req.storage.clone()
        } else {
            "unknown".to_owned()
        };
        let key = req.key.clone();
        // Boxed: the render flow's future is deep enough for the compiler's layout limit.
        let request_id = md.get(REQUEST_ID).and_then(|v| v.to_str().ok());
        let span = self.stats.metrics.traces.request(rpc.name(), md);
        let (out, notes) = span
            .scope(logging::scope(
                request_id,
                Box::pin(self.handle(req, md, voucher)),
            ))
            .await;
        let out = match (out, max) {
            (Ok(Rendition::Image { body, .. }), Some(max)) if body.bytes.len() > max => {
                Err(over_call_limit(body.bytes.len(), max))
            }
            (out, _) => out,
        };
        let elapsed = started.elapsed();
        let (status, bytes) = match &out {
            Ok(Rendition::NotModified { .. }) => (304, 0),
            Ok(Rendition::Image { body, .. }) => (200, body.bytes.len() as u64),
            Err(status) => (http_status(status), 0),
        };
        self.stats
            .metrics
            .request(rpc, &storage, status, elapsed, bytes);
        // Only a name the filter sends: the header selects nothing and is not vouched for.
        let grammar = md
            .get(GRAMMAR_HEADER)
            .and_then(|v| Grammar::from_name(v.to_str().ok()?))
            .map(Grammar::name);
        span.end(
            span_attributes(&storage, &key, grammar, request_id, status, bytes, &notes),
            status >= 500,
        );
        RequestLine {
            request_id,
            grammar,
            rpc: rpc.name(),
            storage: &storage,
            key: &key,
            status,
            elapsed,
            bytes,
            notes: &notes,
        }
        .log();
        out
    }

    /// What a scrape reads now; `budget_kib` is the memory budget in all.
    pub fn snapshot(&self, budget_kib: u64, ready: bool) -> Snapshot {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        let (workers, busy) = self.workers.workers();
        let f = &self.in_flight;
        Snapshot {
            renders: s.renders.load(Relaxed),
            watermark_decodes: s.watermark_decodes.load(Relaxed),
            source_copy_hits: s.source_copy_hits.load(Relaxed),
            source_copy_write_failures: s.source_copy_write_failures.load(Relaxed),
            result_write_failures: s.result_write_failures.load(Relaxed),
            writes_skipped: s.writes_skipped.load(Relaxed),
            flight_joins: vec![
                ("result_lookup", f.results.joins()),
                ("source", f.sources.joins()),
                ("render", f.renders.joins()),
                ("watermark", f.watermarks.joins()),
            ],
            queue_depth: self.workers.queued() as u64,
            queue_capacity: self.workers.max_queue() as u64,
            workers: workers as u64,
            workers_busy: busy as u64,
            memory_budget_bytes: budget_kib * 1024,
            memory_reserved_bytes: budget_kib.saturating_sub(self.budget.available_kib()) * 1024,
            ready,
        }
    }
}

/// What `/metrics` samples of `renderer` and `readiness`. Call it before any request: the
/// memory budget is taken as what is available then.
pub fn sampler(renderer: Arc<Renderer>, readiness: Arc<Readiness>) -> Sampler {
    let budget_kib = renderer.budget.available_kib();
    Arc::new(move || renderer.snapshot(budget_kib, readiness.state().is_ready()))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use tonic::metadata::MetadataValue;

    use super::*;
    use crate::serving::wire::to_core;
    use crate::testing::fake_s3::{FakeS3, Reply};

    /// Metadata carrying `voucher`'s proof for `request`, as the filter sends it.
    fn vouched(voucher: &Voucher, request: &v1::RenderRequest) -> MetadataMap {
        let proof = voucher.vouch(&to_core(request.clone()).unwrap(), SystemTime::now());
        let mut md = MetadataMap::new();
        md.insert(
            pixmesh_core::vouch::HEADER,
            MetadataValue::try_from(proof.as_str()).unwrap(),
        );
        md
    }

    /// A renderer over a fake S3 that answers every request 404, and a vouched request for an
    /// object of it with its metadata.
    async fn missing_object() -> (FakeS3, Renderer, Voucher, v1::RenderRequest, MetadataMap) {
        let s3 =
            FakeS3::start(|_| Reply::new("404 Not Found", "<Error><Code>NoSuchKey</Code></Error>"))
                .await;
        let config = crate::config::Config::from_toml(&format!(
            "[storages.photos]\ntype = \"s3\"\nbucket = \"b\"\nendpoint = \"{}\"\n\
             region = \"us-east-1\"\naccess_key_id = \"AKIDTEST\"\nsecret_access_key = \"s\"\n",
            s3.endpoint
        ))
        .unwrap();
        let renderer = crate::serving::renderer(&config).await.unwrap();
        let voucher = Voucher::new(&[7u8; 32]).unwrap();
        let request = v1::RenderRequest {
            storage: "photos".into(),
            key: "a.jpg".into(),
            width: 10,
            ..Default::default()
        };
        let md = vouched(&voucher, &request);
        (s3, renderer, voucher, request, md)
    }

    #[tokio::test]
    async fn storage_requests_carry_the_request_id_and_are_counted_by_outcome() {
        let (s3, renderer, voucher, request, mut md) = missing_object().await;
        md.insert(REQUEST_ID, MetadataValue::from_static("req-42"));
        let out = renderer.answer(Rpc::Render, request, &md, &voucher).await;
        assert_eq!(out.err().map(|s| http_status(&s)), Some(404));
        let seen = s3.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].request_id.as_deref(), Some("req-42"));
        let text = crate::telemetry::metrics::encode(
            &renderer
                .stats
                .metrics
                .registry(Arc::new(crate::telemetry::metrics::Snapshot::default)),
        );
        assert!(
            text.contains(
                "pixmesh_source_reads_total{storage=\"photos\",outcome=\"not_found\"} 1\n"
            ),
            "{text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_traced_requests_storage_requests_carry_its_traceparent() {
        let (s3, renderer, voucher, request, mut md) = missing_object().await;
        let client = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        md.insert("traceparent", MetadataValue::from_static(client));
        let traces = &renderer.stats.metrics.traces;
        for traced in [false, true] {
            if traced {
                // Exported nowhere (a closed port): what S3 is sent does not depend on it.
                let settings = crate::telemetry::traces::Settings {
                    endpoint: Some("http://127.0.0.1:9".into()),
                    service_name: "test".into(),
                    sample_ratio: 1.0,
                };
                traces.start(&settings).unwrap();
            }
            let out = renderer
                .answer(Rpc::Render, request.clone(), &md, &voucher)
                .await;
            assert_eq!(out.err().map(|s| http_status(&s)), Some(404));
        }
        traces.shutdown().await;
        let seen: Vec<Option<String>> = s3.seen().into_iter().map(|s| s.traceparent).collect();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0], None, "tracing off: nothing is added");
        let sent = seen[1].as_deref().unwrap_or_default();
        let parts: Vec<&str> = sent.split('-').collect();
        assert_eq!(parts.len(), 4, "{sent}");
        assert_eq!(
            parts[1], "0af7651916cd43dd8448eb211c80319c",
            "the client's trace"
        );
        assert_ne!(
            parts[2], "b7ad6b7169203331",
            "the sidecar's span, not the client's"
        );
        assert_eq!(parts[3], "01");
    }

    #[tokio::test]
    async fn a_rendition_over_the_call_limit_is_counted_as_the_413_it_answers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("f.webp"),
            include_bytes!("../../../samples/flower.webp"),
        )
        .unwrap();
        let config = crate::config::Config::from_toml(&format!(
            "[storages.local]\ntype = \"local\"\nroot = {:?}\n",
            dir.path().display().to_string()
        ))
        .unwrap();
        let renderer = crate::serving::renderer(&config).await.unwrap();
        let voucher = Voucher::new(&[7u8; 32]).unwrap();
        let request = v1::RenderRequest {
            storage: "local".into(),
            key: "f.webp".into(),
            width: 50,
            ..Default::default()
        };
        let md = vouched(&voucher, &request);
        for max in [None, Some(1 << 20), Some(10)] {
            let out = renderer
                .answer_within(Rpc::RenderCall, request.clone(), &md, &voucher, max)
                .await;
            assert_eq!(out.is_ok(), max != Some(10), "{max:?}");
        }
        let text = crate::telemetry::metrics::encode(
            &renderer
                .stats
                .metrics
                .registry(Arc::new(crate::telemetry::metrics::Snapshot::default)),
        );
        for line in [
            "pixmesh_requests_total{rpc=\"RenderCall\",storage=\"local\",status=\"200\"} 2\n",
            "pixmesh_requests_total{rpc=\"RenderCall\",storage=\"local\",status=\"413\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
